"""The fused graphs of engine/fusion.py against the unfused graphs they
replace: outputs, every gradient and the running statistics, bit for bit, on
every residual-unit shape of the four benchmarked networks (PreResNet-110 and
-20, PreResNet-164, WRN-16-4), on the other unit orders a network may use,
at inference, and for any number of threads; and against a float64
reference."""
import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
import lasagne
from lasagne.layers import (ElemwiseSumLayer, InputLayer, NonlinearityLayer, get_all_layers,
                            get_all_params, get_output)
from lasagne.nonlinearities import rectify

from engine import fusion, layers, ops
from engine.layers import BatchNormLayer, CrossCorrelation2DLayer
import models
from conftest import outputs_per_thread_count, pairs

SPEC = models.ARCHITECTURES["paper"]
TOLERANCE = 2e-5   # against float64, relative to the largest reference value


def unit_shapes():
    """(variant, in channels, size, filters, stride, preactivated) of every
    residual unit of normal, bottleneck and wide (k = 4) networks: the first
    unit of a stage and the others (the depth only repeats them)."""
    cases = []
    for variant, width in (("normal", 1), ("bottleneck", 1), ("wide", 4)):
        block = models.VARIANTS[variant]["block"]
        channels, size = models.STEM_FILTERS, 32
        for stage, filters in enumerate(models.VARIANTS[variant]["filters"]):
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                cases.append((variant, channels, size, filters * width, stride,
                              stage == 0 and index == 0))
                size //= stride
                channels = filters * width * (
                    models.BOTTLENECK_EXPANSION if block == "bottleneck" else 1)
    return cases


UNITS = unit_shapes()


def build_unit(variant, channels, size, filters, stride, preactivated, batch, seed=0):
    lasagne.random.set_rng(np.random.RandomState(seed))
    incoming = InputLayer((batch, channels, size, size))
    return models.residual_unit(incoming, filters, stride, models.VARIANTS[variant]["block"],
                                SPEC, preactivated=preactivated, name="unit")


def running_stats(output):
    stats = get_all_params(output, batch_norm_stat=True)
    assert stats, "no running statistics found"
    return stats


def randomise(output, rng):
    """Give gamma, beta and the running statistics values far from their
    initial ones (so that every formula is exercised)."""
    for layer in get_all_layers(output):
        if isinstance(layer, BatchNormLayer):
            shape = layer.mean.get_value().shape
            layer.gamma.set_value(rng.uniform(0.5, 1.5, shape).astype(np.float32))
            layer.beta.set_value(rng.normal(0, 0.3, shape).astype(np.float32))
            layer.mean.set_value(rng.normal(0, 0.2, shape).astype(np.float32))
            layer.spread.set_value(rng.uniform(0.5, 2.0, shape).astype(np.float32))


def compile_step(output, input_var, fused):
    """A function of (x, dy) returning the training-mode output, the gradients
    of sum(output * dy) with respect to x and every parameter (running
    averages updated), then the inference-mode output (computed by a second
    function, after the running averages are put back: in one function with
    the updates, the in-place update may run before the inference reads
    them)."""
    dy = T.tensor4()
    out = get_output(output, input_var)
    params = get_all_params(output, trainable=True)
    grads = T.grad((out * dy).sum(), [input_var] + params)
    inference = get_output(output, input_var, deterministic=True)
    stats = running_stats(output)
    previous = fusion.ENABLED
    fusion.ENABLED = fused
    try:
        train = theano.function([input_var, dy], [out] + grads)
        infer = theano.function([input_var], inference)
    finally:
        fusion.ENABLED = previous

    def step(x, dy_value):
        start = [p.get_value() for p in stats]
        values = train(x, dy_value)
        updated = [p.get_value() for p in stats]
        for p, value in pairs(stats, start):
            p.set_value(value)
        values.append(infer(x))
        for p, value in pairs(stats, updated):
            p.set_value(value)
        return values
    step.functions = (train, infer)
    return step


def run_both(output, x, dy):
    """Outputs and running statistics of the unfused and the fused function
    (running statistics reset before each call); the fused function."""
    input_var = T.tensor4()
    stats = running_stats(output)
    start = [p.get_value() for p in stats]
    results, functions = [], []
    for fused in (False, True):
        f = compile_step(output, input_var, fused)
        for p, value in pairs(stats, start):
            p.set_value(value)
        values = [np.asarray(v) for v in f(x, dy)]
        results.append((values, [p.get_value() for p in stats]))
        functions.append(f)
    for p, value in pairs(stats, start):
        p.set_value(value)
    return results, functions[1]


def fused_nodes(f):
    nodes = [n for function in f.functions for n in function.maker.fgraph.toposort()]
    return {
        "prologue": sum(isinstance(n.op, ops.Conv2D) and n.op.prologue is not None
                        for n in nodes),
        "grad_prologue": sum(isinstance(n.op, ops.Conv2DGrad) and n.op.prologue is not None
                             for n in nodes),
        "bn_grad": sum(isinstance(n.op, ops.Conv2DGrad) and n.op.bn_grad for n in nodes),
        "residual": sum(isinstance(n.op, ops.Conv2D) and n.op.residual for n in nodes),
        "residual_grad": sum(isinstance(n.op, ops.BatchNormGradApply) and n.op.residual
                             for n in nodes),
        "stats": sum(isinstance(n.op, ops.BatchNormStats) for n in nodes),
        "batch_norm": sum(isinstance(n.op, ops.BatchNormTrain) for n in nodes),
    }


def expected_fusions(output):
    """What the rewrites must find in a unit, from its layers: convolutions
    reading a batch norm, batch norms read by one convolution alone, sums."""
    all_layers = get_all_layers(output)
    readers = {layer: [] for layer in all_layers}
    for layer in all_layers:
        for incoming in getattr(layer, "input_layers", [getattr(layer, "input_layer", None)]):
            if incoming is not None:
                readers[incoming].append(layer)
    convs = [l for l in all_layers if isinstance(l, CrossCorrelation2DLayer)]
    norms = [l for l in all_layers if isinstance(l, BatchNormLayer)]
    # a batch norm read by a convolution and at most one more reader
    by_a_conv = [n for n in norms if 1 <= len(readers[n]) <= 2
                 and any(isinstance(r, CrossCorrelation2DLayer) for r in readers[n])]
    return {
        "prologue": sum(isinstance(c.input_layer, BatchNormLayer) for c in convs),
        "bn_grad": len(by_a_conv),
        "residual": sum(isinstance(l, ElemwiseSumLayer) for l in all_layers),
        # the unit's input gradient is its pre-activation's plus the
        # shortcut's when the shortcut is the input itself
        "batch_norm": sum(any(not isinstance(r, CrossCorrelation2DLayer) for r in readers[n])
                          for n in norms),
    }


def assert_same_bits(results):
    (plain, plain_stats), (fused, fused_stats) = results
    for name, a, b in zip(["output"] + ["gradient %d" % i for i in range(len(plain) - 2)]
                          + ["inference output"], plain, fused):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert len(plain) == len(fused)
    for a, b in pairs(plain_stats, fused_stats):
        np.testing.assert_array_equal(a, b, err_msg="running statistics")


# batch 16: one whole group of Winograd's 16-image vectors, so that "auto"
# takes Winograd where it would at batch 128; "direct": the direct kernels
# everywhere (both fused paths of every 3x3 shape)
@pytest.mark.parametrize("algo", ["auto", "direct"])
@pytest.mark.parametrize("variant,channels,size,filters,stride,preactivated", [
    pytest.param(*case, marks=[pytest.mark.slow] if case[0] != "normal" else [])
    for case in UNITS])
def test_fused_unit_gives_the_unfused_bits(monkeypatch, variant, channels, size, filters,
                                           stride, preactivated, algo):
    monkeypatch.setattr(ops, "DEFAULT_ALGO", algo)
    rng = np.random.default_rng(channels + size + filters + stride)
    batch = 16
    output = build_unit(variant, channels, size, filters, stride, preactivated, batch)
    randomise(output, rng)
    x = rng.normal(size=(batch, channels, size, size)).astype(np.float32)
    if preactivated:
        x = np.maximum(x, 0)   # the stem's BN-ReLU output
    dy = rng.normal(size=(batch,) + output.output_shape[1:]).astype(np.float32)
    results, fused = run_both(output, x, dy)
    assert_same_bits(results)
    found, expected = fused_nodes(fused), expected_fusions(output)
    # the forward ops twice: training mode, then inference (ScaleShift)
    assert found["prologue"] == 2 * expected["prologue"]
    assert found["grad_prologue"] == expected["prologue"]
    assert found["bn_grad"] == expected["bn_grad"]
    assert found["residual"] == 2 * expected["residual"] == 2
    assert found["residual_grad"] == (0 if preactivated or stride != 1 or channels != filters
                                      * (4 if variant == "bottleneck" else 1) else 1)
    assert found["batch_norm"] == expected["batch_norm"]
    assert found["stats"] == len(running_stats(output)) // 2 - found["batch_norm"]


def post_activation_unit(incoming):
    """Conv-BN-ReLU units (the original ResNet): the sum then a ReLU."""
    branch = incoming
    for i in range(2):
        branch = CrossCorrelation2DLayer(branch, 8, 3)
        branch = BatchNormLayer(branch, nonlinearity=rectify if i == 0 else None)
    return NonlinearityLayer(ElemwiseSumLayer([branch, incoming]), rectify)


def bn_after_sum_unit(incoming):
    branch = CrossCorrelation2DLayer(incoming, 8, 3)
    branch = BatchNormLayer(branch, nonlinearity=rectify)
    branch = CrossCorrelation2DLayer(branch, 8, 3)
    return BatchNormLayer(ElemwiseSumLayer([branch, incoming]), nonlinearity=rectify)


def relu_before_sum_unit(incoming):
    branch = BatchNormLayer(CrossCorrelation2DLayer(incoming, 8, 3), nonlinearity=rectify)
    branch = BatchNormLayer(CrossCorrelation2DLayer(branch, 8, 3), nonlinearity=rectify)
    return ElemwiseSumLayer([branch, incoming])


def relu_only_preactivation_unit(incoming):
    branch = NonlinearityLayer(incoming, rectify)
    branch = CrossCorrelation2DLayer(branch, 8, 3)
    branch = NonlinearityLayer(BatchNormLayer(branch), rectify)
    branch = CrossCorrelation2DLayer(branch, 8, 1)
    return ElemwiseSumLayer([incoming, branch])


def separate_relu_preactivation_unit(incoming):
    """BN then a separate ReLU layer (Lasagne's batch_norm() helper's way)."""
    branch = NonlinearityLayer(BatchNormLayer(incoming), rectify)
    branch = CrossCorrelation2DLayer(branch, 8, 3, stride=2)
    branch = BatchNormLayer(branch, nonlinearity=rectify)
    branch = CrossCorrelation2DLayer(branch, 8, 3)
    shortcut = CrossCorrelation2DLayer(incoming, 8, 1, stride=2)
    return ElemwiseSumLayer([branch, shortcut])


@pytest.mark.parametrize("build", [post_activation_unit, bn_after_sum_unit,
                                   relu_before_sum_unit, relu_only_preactivation_unit,
                                   separate_relu_preactivation_unit])
def test_other_unit_orders_give_the_unfused_bits(build):
    """The rewrites match patterns, not one unit: two units of each order
    (the second reading the first), fused where a pattern is there."""
    rng = np.random.default_rng(3)
    lasagne.random.set_rng(np.random.RandomState(3))
    output = build(build(InputLayer((6, 8, 12, 12))))
    randomise(output, rng)
    x = rng.normal(size=(6, 8, 12, 12)).astype(np.float32)
    dy = rng.normal(size=(6,) + output.output_shape[1:]).astype(np.float32)
    results, _ = run_both(output, x, dy)
    assert_same_bits(results)


def test_a_residual_sum_of_two_convolutions_and_a_shared_input_stay_correct():
    """The projection unit: the pre-activation feeds two convolutions (its
    gradient is their sum: one of them adds the other's) and the sum adds
    two convolutions' outputs (one of them takes the other)."""
    output = build_unit("normal", 16, 16, 32, 2, False, 16)
    randomise(output, np.random.default_rng(5))
    rng = np.random.default_rng(6)
    x = rng.normal(size=(16, 16, 16, 16)).astype(np.float32)
    dy = rng.normal(size=(16, 32, 8, 8)).astype(np.float32)
    results, fused = run_both(output, x, dy)
    assert_same_bits(results)
    nodes = [n for function in fused.functions for n in function.maker.fgraph.toposort()]
    assert not any(isinstance(n.op, ops.BatchNormTrainGrad) for n in nodes)
    assert sum(isinstance(n.op, ops.Conv2DGrad) and n.op.dx_residual for n in nodes) == 1
    # conv1, the projection and conv2, training mode and inference
    assert sum(isinstance(n.op, ops.Conv2D) and n.op.prologue is not None for n in nodes) == 6


def test_fusion_can_be_switched_off_by_theanos_flags():
    """optimizer_excluding=pr_fusion keeps the separate ops."""
    x = T.tensor4()
    layer = CrossCorrelation2DLayer(BatchNormLayer(InputLayer((2, 3, 4, 4)),
                                                   nonlinearity=rectify), 4, 3)
    out = get_output(layer, x)
    fused = theano.function([x], out)
    plain = theano.function([x], out, mode=theano.compile.get_default_mode().excluding(
        fusion.TAG))
    kinds = [{type(n.op).__name__ for n in f.maker.fgraph.toposort()} for f in (fused, plain)]
    assert "BatchNormStats" in kinds[0] and "BatchNormTrain" not in kinds[0]
    assert "BatchNormTrain" in kinds[1] and "BatchNormStats" not in kinds[1]
    xv = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(fused(xv), plain(xv))


def float64_reference(output, x, dy):
    """What compile_step's function returns, computed in float64 by plain
    Theano: the layers' parameters swapped for float64 copies while the graph
    is built (float64 variables: every layer takes its plain Theano path)."""
    twins = {}
    for layer in get_all_layers(output):
        for p in layer.params:
            twins[p] = theano.shared(p.get_value().astype(np.float64),
                                     broadcastable=p.broadcastable)
    swapped = []
    for layer in get_all_layers(output):
        for name, value in list(vars(layer).items()):
            if any(value is p for p in twins):
                swapped.append((layer, name, value))
                setattr(layer, name, twins[value])
    norms = [l for l in get_all_layers(output)
             if isinstance(l, BatchNormLayer) and l.beta is not None]
    try:
        x64, dy64 = T.dtensor4(), T.dtensor4()
        out, *normed = get_output([output] + norms, x64)
        params = [twins[p] for p in get_all_params(output, trainable=True)]
        loss = (out * dy64).sum()
        # a batch norm's beta gradient is the sum over the batch and the
        # pixels of its output's gradient: its scale is the sum of their
        # absolute values (see test_fused_unit_matches_float64)
        scales = [abs(g).sum(axis=(0, 2, 3)).max() for g in T.grad(loss, normed)]
        train = theano.function([x64, dy64], [out] + T.grad(loss, [x64] + params) + scales)
        infer = theano.function([x64], get_output(output, x64, deterministic=True))
    finally:
        for layer, name, value in swapped:
            setattr(layer, name, value)
    x64 = x.astype(np.float64)
    inference = infer(x64)   # before the training function updates the averages
    values = train(x64, dy.astype(np.float64))
    values, scales = values[:len(values) - len(norms)], values[len(values) - len(norms):]
    beta_scale = {twins[n.beta]: float(s) for n, s in pairs(norms, scales)}
    floors = [0.0, 0.0] + [beta_scale.get(twins[p], 0.0)
                           for p in get_all_params(output, trainable=True)] + [0.0]
    return values + [inference], floors


def quick_unit(case):
    """The quick loop's float64 checks: PreResNet's first unit (preactivated)
    and its first stride-2 unit; the full suite checks every unit shape."""
    variant, channels, size, filters, stride, preactivated = case
    return variant == "normal" and (preactivated or stride == 2) and filters <= 32


@pytest.mark.parametrize("variant,channels,size,filters,stride,preactivated", [
    pytest.param(*case, marks=[] if quick_unit(case) else [pytest.mark.slow])
    for case in UNITS])
def test_fused_unit_matches_float64(variant, channels, size, filters, stride, preactivated):
    """The fused unit (training-mode output, input and parameter gradients,
    inference output) within 2e-5 of the same unit computed in float64 by
    plain Theano, relative to each array's largest value.

    Without the ReLUs: a value within float32 rounding of zero before a ReLU
    can land on the other side of it than in float64, and then the gradient
    of that one element differs by its whole value (seen: 1.8 % of the
    largest input gradient, from one such element, with F(4x4)'s rounding).
    The masks are checked bit for bit against the unfused ops above, and
    those against plain Theano in tests/test_ops.py.

    A batch norm's beta gradient is measured against the sum of the absolute
    values it adds (its condition): without the ReLU, a batch norm followed by
    a 1x1 convolution and another batch norm (the bottleneck's pre-activation)
    has a beta gradient that is zero exactly (the second batch norm removes
    any constant): float64 gives rounding noise, float32 the rounding of a
    sum of 16,384 terms of order 1, 2.6e8 times the largest reference value
    (bottleneck-64-32-16-1-False, fused or not, at commit f9010ca too)."""
    rng = np.random.default_rng(channels * 7 + size + filters + stride)
    batch = 16
    output = build_unit(variant, channels, size, filters, stride, preactivated, batch)
    for layer in get_all_layers(output):
        if isinstance(layer, BatchNormLayer):
            layer.relu = False
    randomise(output, rng)
    x = rng.normal(size=(batch, channels, size, size)).astype(np.float32)
    if preactivated:
        x = np.maximum(x, 0)
    dy = rng.normal(size=(batch,) + output.output_shape[1:]).astype(np.float32)
    stats = running_stats(output)
    start = [p.get_value() for p in stats]
    ours = compile_step(output, T.tensor4(), True)(x, dy)
    for p, value in pairs(stats, start):
        p.set_value(value)
    reference, floors = float64_reference(output, x, dy)
    for index, (a, b, floor) in enumerate(zip(ours, reference, floors)):
        b = np.asarray(b, np.float64)
        error = np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), floor, 1e-30)
        assert error < TOLERANCE, (index, error)
    assert len(ours) == len(reference) == len(floors)


THREAD_SCRIPT = """
import sys
import numpy as np
import engine
import lasagne
import theano
import theano.tensor as T
from lasagne.layers import InputLayer, get_all_params, get_output
import models
rng = np.random.default_rng(0)
outputs = []
for channels, size, filters, stride in ((16, 16, 16, 1), (16, 16, 32, 2)):
    lasagne.random.set_rng(np.random.RandomState(0))
    unit = models.residual_unit(InputLayer((20, channels, size, size)), filters, stride, "basic",
                                models.ARCHITECTURES["paper"], name="unit")
    x, dy = T.tensor4(), T.tensor4()
    out = get_output(unit, x)
    params = get_all_params(unit, trainable=True)
    f = theano.function([x, dy], [out] + T.grad((out * dy).sum(), [x] + params))
    outputs += f(rng.normal(size=(20, channels, size, size)).astype("float32"),
                 rng.normal(size=(20, filters, size // stride, size // stride)).astype("float32"))
np.savez(sys.argv[1], *outputs)
"""


@pytest.mark.slow  # two processes compiling a unit (5 s)
def test_fused_results_do_not_depend_on_the_number_of_threads(tmp_path):
    results = outputs_per_thread_count(THREAD_SCRIPT, tmp_path, ("1", "3"))
    assert len(results[0]) == 8 + 9   # output, input gradient, parameter gradients
    for one, three in pairs(*results):
        np.testing.assert_array_equal(one, three)


@pytest.mark.slow  # whole training steps (5 s each); the units are checked in the quick loop
@pytest.mark.parametrize("network", [
    ("normal", 1, 1), pytest.param(("bottleneck", 1, 1), marks=pytest.mark.slow),
    pytest.param(("wide", 1, 4), marks=pytest.mark.slow)])
def test_training_steps_give_the_unfused_bits(network):
    """Two steps of train_nn.py's paper-recipe training step, fused and
    unfused, from the same weights on the same batches: the losses, errors,
    parameters, momentum buffers and running averages after each step are
    the same bits (the stem's batch norm feeds a convolution and the first
    shortcut; each downsampling unit's feeds two convolutions)."""
    import train_nn
    variant, depth, width = network
    info = models.network_info(variant, depth, width, "paper", "cifar10")
    recipe = train_nn.resolve_recipe("paper", variant)
    rng = np.random.default_rng(7)
    batches = [(rng.normal(size=(16, 3, 32, 32)).astype(np.float32),
                rng.integers(0, 10, 16).astype(np.int32)) for _ in range(2)]
    runs = []
    for fused in (False, True):
        previous, fusion.ENABLED = fusion.ENABLED, fused
        try:
            net = models.Network(info, seed=3)
            step, learning_rate, buffers = train_nn.compile_training_step(net, recipe)
        finally:
            fusion.ENABLED = previous
        learning_rate.set_value(np.float32(0.1))
        state = []
        for x, y in batches:
            state.append([np.asarray(v) for v in step(x, y)]
                         + [p.get_value() for p in net.params] + [b.get_value() for b in buffers])
        runs.append(state)
        if fused:
            nodes = step.maker.fgraph.toposort()
            # the head's batch norm, read by the global pooling, stays whole
            assert sum(isinstance(n.op, ops.BatchNormTrainGrad) for n in nodes) == 1
            assert any(isinstance(n.op, ops.Conv2DGrad) and n.op.dx_residual for n in nodes)
    for plain, fused in pairs(*runs):
        for a, b in pairs(plain, fused):
            np.testing.assert_array_equal(a, b)
