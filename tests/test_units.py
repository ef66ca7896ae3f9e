"""The residual units of He et al. 2016 (arXiv 1603.05027, Fig. 4), the shortcuts
of its Table 1 (Fig. 2) and the CIFAR ResNets of He et al. 2015 (arXiv
1512.03385, Sec. 4.2), read back from the built graphs and compared with the
papers' words and numbers, written here from the papers (never read from
models.UNITS or models.SHORTCUTS); and each unit and shortcut computing the
same function as bench/torch_models.py's independent PyTorch version (skipped
without PyTorch, as in CI).

Quoted sources:

- He et al. 2016 Sec. 4: "The original Residual Unit in [1] has a shape in
  Fig. 4(a) - BN is used after each weight layer, and ReLU is adopted after BN
  except that the last ReLU in a Residual Unit is after element-wise addition";
  Fig. 4: (b) "BN after addition", (c) "ReLU before addition", (d) "ReLU-only
  pre-activation", (e) "full pre-activation" where "BN and ReLU are both
  adopted before weight layers"; "All these units consist of the same
  components - only the orders are different."
- Its appendix: "For the first Residual Unit (that follows a stand-alone
  convolutional layer, conv1), we adopt the first activation right after conv1
  and before splitting into two paths; for the last Residual Unit (followed by
  average pooling and a fully-connected classifier), we adopt an extra
  activation right after its element-wise addition" (pre-activation units);
  "For the bottleneck ResNets, when reducing the feature map size we use
  projection shortcuts [1] for increasing dimensions, and when pre-activation
  is used, these projection shortcuts are also with pre-activation"; "The
  implementation details ... are the same as those in [1]".
- Fig. 2's caption: "BN layers, which are adopted right after the weight
  layers for all units here"; Sec. 3.1: g(x) = sigmoid(W_g x + b_g), "realized
  by a 1x1 convolutional layer"; exclusive gating scales F by g(x) and the
  shortcut by 1 - g(x), shortcut-only gating the shortcut alone; "1x1
  convolutional shortcut connections that replace the identity"; "dropout
  [11] (at a ratio of 0.5) which we adopt on the output of the identity
  shortcut ... Dropout statistically imposes a scale of lambda with an
  expectation of 0.5 on the shortcut".
- He et al. 2015 Sec. 4.2: "6n+2 stacked weighted layers", filters {16, 32,
  64}, "we use identity shortcuts in all cases (i.e., option A)", option A
  (Sec. 3.3): "The shortcut still performs identity mapping, with extra zero
  entries padded for increasing dimensions"; fb.resnet.torch models/resnet.lua
  subsamples with SpatialAveragePooling(1, 1, stride, stride) and appends the
  zero channels after the input's.
"""
import math

import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
from lasagne.layers import (DenseLayer, DropoutLayer, ElemwiseSumLayer, GlobalPoolLayer,
                            InputLayer, NonlinearityLayer, get_all_layers, get_all_params,
                            get_output)
from lasagne.objectives import categorical_crossentropy

import models
from conftest import pairs
from engine import layers

UNITS = ["original", "bn-after-add", "relu-before-add", "relu-preact", "full-preact"]

# Fig. 4, residual branch F from the unit's input to the addition, and f after
# it, for a unit with two 3x3 weight layers (basic) or 1x1, 3x3, 1x1
# (bottleneck): "W" a weight layer.
FIG4_BASIC = {
    "original": ("W BN ReLU W BN", "ReLU"),
    "bn-after-add": ("W BN ReLU W", "BN ReLU"),
    "relu-before-add": ("W BN ReLU W BN ReLU", ""),
    "relu-preact": ("ReLU W BN ReLU W BN", ""),
    "full-preact": ("BN ReLU W BN ReLU W", ""),
}
FIG4_BOTTLENECK = {
    "original": ("W BN ReLU W BN ReLU W BN", "ReLU"),
    "bn-after-add": ("W BN ReLU W BN ReLU W", "BN ReLU"),
    "relu-before-add": ("W BN ReLU W BN ReLU W BN ReLU", ""),
    "relu-preact": ("ReLU W BN ReLU W BN ReLU W BN", ""),
    "full-preact": ("BN ReLU W BN ReLU W BN ReLU W", ""),
}
# The activation a pre-activation unit takes once more after the last
# addition (appendix), i.e. what lies between the last sum and the pooling.
HEAD = {"original": "", "bn-after-add": "", "relu-before-add": "", "relu-preact": "ReLU",
        "full-preact": "BN ReLU"}


def tokens(layer):
    """What a layer computes, in Fig. 4's words."""
    if isinstance(layer, layers.CrossCorrelation2DLayer):
        return ["W%dx%d/%d" % (layer.filter_size, layer.filter_size, layer.stride)]
    if isinstance(layer, layers.BatchNormLayer):
        return ["BN", "ReLU"] if layer.relu else ["BN"]
    if isinstance(layer, NonlinearityLayer):
        assert layer.nonlinearity.__name__ == "rectify", layer.name
        return ["ReLU"]
    raise AssertionError("unexpected layer %s (%s)" % (layer.name, type(layer).__name__))


def by_name(output):
    return {layer.name: layer for layer in get_all_layers(output)}


def consumers(output):
    found = {}
    for layer in get_all_layers(output):
        for parent in getattr(layer, "input_layers", None) or [getattr(layer, "input_layer",
                                                                       None)]:
            if parent is not None:
                found.setdefault(parent, []).append(layer)
    return found


def chain_back(layer, stop):
    """Tokens from ``stop`` (excluded) to ``layer`` (included), one input each."""
    found = []
    while layer is not stop:
        found = tokens(layer) + found
        layer = layer.input_layer
    return found


def read_unit(output, prefix):
    """(unit input layer, branch tokens, shortcut description, tokens after the
    addition, unit output layer) of the unit named ``prefix``, read from the
    graph: the addition is the one layer that merges the unit's two paths."""
    found = by_name(output)
    total = found[prefix + ".sum"]
    assert isinstance(total, ElemwiseSumLayer) or type(total).__name__ == "GatedSumLayer"
    branch_end, shortcut_end = total.input_layers[:2]
    # the unit's input: where the branch leaves the previous unit
    layer = branch_end
    while layer.name.startswith(prefix + "."):
        layer = layer.input_layer
    unit_input = layer
    branch = chain_back(branch_end, unit_input)
    after, layer, children = [], total, consumers(output)
    while True:
        nexts = [c for c in children.get(layer, []) if c.name.startswith(prefix + ".")]
        if not nexts:
            break
        layer, = nexts
        after += tokens(layer)
    return unit_input, branch, shortcut_end, after, layer


def describe_shortcut(shortcut_end, unit_input):
    """'identity', 'zero-pad', or 'projection [BN] from input|pre-activated'."""
    if shortcut_end is unit_input:
        return "identity"
    if type(shortcut_end).__name__ == "ZeroPadShortcutLayer":
        assert shortcut_end.input_layer is unit_input
        return "zero-pad"
    words, layer = [], shortcut_end
    if isinstance(layer, layers.BatchNormLayer):
        assert not layer.relu
        words.append("BN")
        layer = layer.input_layer
    assert isinstance(layer, layers.CrossCorrelation2DLayer) and layer.filter_size == 1
    reads = "input" if layer.input_layer is unit_input else "pre-activated"
    return " ".join(["projection"] + words + ["from", reads])


def fig4_tokens(text, variant, stride):
    """Fig. 4's sequence with the weight layers' kernels and strides: basic
    3x3, 3x3 with the stride on the first; bottleneck 1x1, 3x3, 1x1 with the
    stride on the first 1x1 (resnet-pre-act.lua: Convolution(nInputPlane,
    nBottleneckPlane, 1, 1, stride, stride))."""
    kernels = [3, 3] if variant == "normal" else [1, 3, 1]
    out = []
    for word in text.split():
        if word == "W":
            size = kernels[len([t for t in out if t.startswith("W")])]
            first = not any(t.startswith("W") for t in out)
            out.append("W%dx%d/%d" % (size, size, stride if first else 1))
        else:
            out.append(word)
    return out


@pytest.mark.parametrize("variant", ["normal", "bottleneck"])
@pytest.mark.parametrize("unit", UNITS)
def test_every_unit_orders_bn_relu_weights_and_addition_as_fig4(unit, variant):
    """Every unit but the first of the network (whose pre-activation is the
    stem's), in every stage, downsampling or not."""
    figure = (FIG4_BASIC if variant == "normal" else FIG4_BOTTLENECK)[unit]
    output = models.build_model(variant, 2, unit=unit)
    for stage in (1, 2, 3):
        for index in (1, 2):
            prefix = "stage%d.unit%d" % (stage, index)
            stride = 2 if stage > 1 and index == 1 else 1
            _, branch, _, after, _ = read_unit(output, prefix)
            expected = fig4_tokens(figure[0], variant, stride)
            if stage == 1 and index == 1 and unit in ("relu-preact", "full-preact"):
                # appendix: the first unit's pre-activation is right after conv1
                expected = expected[len(figure[0].split("W")[0].split()):]
            assert branch == expected, prefix
            assert after == figure[1].split(), prefix


@pytest.mark.parametrize("variant", ["normal", "bottleneck"])
@pytest.mark.parametrize("unit", UNITS)
def test_stem_and_head_activations_are_the_appendixs(unit, variant):
    """conv1 is followed by BN and ReLU before the first unit splits (He et al.
    2015's conv1 is a weight layer with its BN and ReLU; the appendix puts the
    pre-activation units' first activation right there); after the last
    addition a pre-activation net repeats its pre-activation, the others go
    to the pooling as the last unit leaves them."""
    output = models.build_model(variant, 1, unit=unit)
    found = by_name(output)
    first_input, _, _, _, _ = read_unit(output, "stage1.unit1")
    assert chain_back(first_input, found["input"]) == ["W3x3/1", "BN", "ReLU"]
    pool = [layer for layer in get_all_layers(output) if isinstance(layer, GlobalPoolLayer)]
    _, _, _, _, last_output = read_unit(output, "stage3.unit1")
    assert chain_back(pool[0].input_layer, last_output) == HEAD[unit].split()
    assert isinstance(output, DenseLayer) and output.input_layer is pool[0]


# Shortcuts where a unit changes the shape (the first of stages 2 and 3; for
# bottleneck nets also the first of stage 1, 16 -> 64 channels). Basic nets:
# He et al. 2016 "the same as [1]", He et al. 2015's option A, for (a)-(d); the
# project's PreResNet-110 (full pre-activation) keeps its projection from the
# pre-activated input (resnet-pre-act.lua's unit for increasing dimensions).
# Bottleneck nets: projections, with pre-activation where the unit has it, and
# "BN ... right after the weight layers" where its last weight layer has BN.
GROWING_SHORTCUT = {
    ("normal", "original"): "zero-pad",
    ("normal", "bn-after-add"): "zero-pad",
    ("normal", "relu-before-add"): "zero-pad",
    ("normal", "relu-preact"): "zero-pad",
    ("normal", "full-preact"): "projection from pre-activated",
    ("bottleneck", "original"): "projection BN from input",
    ("bottleneck", "bn-after-add"): "projection from input",
    ("bottleneck", "relu-before-add"): "projection BN from input",
    ("bottleneck", "relu-preact"): "projection BN from pre-activated",
    ("bottleneck", "full-preact"): "projection from pre-activated",
}


@pytest.mark.parametrize("variant,unit", sorted(GROWING_SHORTCUT))
def test_shortcuts_are_identity_but_where_the_shape_grows(variant, unit):
    output = models.build_model(variant, 2, unit=unit)
    for stage in (1, 2, 3):
        for index in (1, 2):
            prefix = "stage%d.unit%d" % (stage, index)
            unit_input, _, shortcut_end, _, _ = read_unit(output, prefix)
            grows = index == 1 and (stage > 1 or variant == "bottleneck")
            expected = GROWING_SHORTCUT[(variant, unit)] if grows else "identity"
            if expected.endswith("pre-activated") and stage == 1 and index == 1:
                expected = expected.replace("pre-activated", "input")  # the stem's
            assert describe_shortcut(shortcut_end, unit_input) == expected, prefix


def test_zero_padded_shortcut_subsamples_and_appends_zero_channels():
    """Option A as fb.resnet.torch builds it: every second row and column from
    the first (SpatialAveragePooling(1, 1, 2, 2)), the input's channels, then
    zeros (Concat of Identity and MulConstant(0))."""
    found = by_name(models.build_model("normal", 1, unit="original"))
    layer = found["stage2.unit1.shortcut"]
    x = np.random.default_rng(0).normal(size=(2, 16, 32, 32)).astype(np.float32)
    images = T.tensor4()
    y = get_output(layer, {layer.input_layer: images}).eval({images: x})
    assert y.shape == (2, 32, 16, 16) == (2,) + layer.output_shape[1:]
    np.testing.assert_array_equal(y[:, :16], x[:, :, ::2, ::2])
    np.testing.assert_array_equal(y[:, 16:], 0)


# Table 1's shortcuts on ResNet-110 (normal 18) with the original unit: what
# meets F at the addition, for a unit that keeps the shape.
def _sum_of(output, prefix="stage2.unit2"):
    return by_name(output)[prefix + ".sum"]


@pytest.mark.parametrize("text,on_shortcut,on_f", [("scaling:0,1", 0, 1),
                                                   ("scaling:0.5,1", 0.5, 1),
                                                   ("scaling:0.5,0.5", 0.5, 0.5)])
def test_constant_scaling_scales_every_shortcut_and_f(text, on_shortcut, on_f):
    """Fig. 2(b): lambda on every shortcut, F by 1 or by 1 - lambda."""
    output = models.build_model("normal", 2, unit="original", shortcut=text)
    for prefix in ("stage1.unit1", "stage2.unit1", "stage3.unit2"):
        total = _sum_of(output, prefix)
        unit_input, branch, shortcut_end, after, _ = read_unit(output, prefix)
        assert isinstance(total, ElemwiseSumLayer)
        assert list(total.coeffs) == [on_f, on_shortcut]
        assert branch[-1] == "BN" and after == ["ReLU"]


@pytest.mark.parametrize("kind,exclusive", [("exclusive-gating", True),
                                            ("shortcut-gating", False)])
def test_gates_are_a_sigmoid_1x1_convolution_of_the_unit_input(kind, exclusive):
    output = models.build_model("normal", 2, unit="original", shortcut="%s:-6" % kind)
    found = by_name(output)
    for prefix in ("stage1.unit2", "stage2.unit1"):
        unit_input, branch, shortcut_end, after, _ = read_unit(output, prefix)
        total = found[prefix + ".sum"]
        gate = total.input_layers[2]
        assert isinstance(gate, layers.CrossCorrelation2DLayer) and gate.filter_size == 1
        assert gate.input_layer is unit_input
        assert gate.nonlinearity.__name__ == "sigmoid"
        np.testing.assert_array_equal(gate.b.get_value(), -6)
        assert gate.num_filters == total.output_shape[1] and gate.stride == \
            (2 if prefix == "stage2.unit1" else 1)
        assert total.exclusive is exclusive and after == ["ReLU"]
        assert describe_shortcut(shortcut_end, unit_input) == \
            ("zero-pad" if prefix == "stage2.unit1" else "identity")


def test_1x1_conv_shortcut_replaces_every_identity_with_conv_and_bn():
    output = models.build_model("normal", 2, unit="original", shortcut="conv1x1")
    for stage in (1, 2, 3):
        for index in (1, 2):
            unit_input, _, shortcut_end, _, _ = read_unit(output, "stage%d.unit%d"
                                                          % (stage, index))
            assert describe_shortcut(shortcut_end, unit_input) == "projection BN from input"


def test_dropout_shortcut_drops_half_of_every_shortcut_as_dropout_of_its_reference():
    """[11]'s dropout: training keeps values unscaled (h * mask), testing uses the
    'mean network' (h / 2): built as Lasagne's h * mask / (1 - p), summed with
    the coefficient 1 - p."""
    output = models.build_model("normal", 2, unit="original", shortcut="dropout:0.5")
    for prefix in ("stage1.unit1", "stage2.unit1", "stage3.unit2"):
        total = _sum_of(output, prefix)
        drop = total.input_layers[1]
        assert isinstance(drop, DropoutLayer) and drop.p == 0.5 and drop.rescale
        assert list(total.coeffs) == [1, 0.5]


def test_shortcut_variants_need_resnet_with_the_original_unit():
    for variant, unit in (("normal", "full-preact"), ("bottleneck", "original"),
                          ("normal", "relu-preact")):
        with pytest.raises(ValueError, match="original unit"):
            models.build_model(variant, 1, unit=unit, shortcut="conv1x1")
    with pytest.raises(ValueError, match="unit"):
        models.build_model("wide", 1, 2, unit="original")


# =============================================================================
# Names: a ResNet is not a PreResNet, and every unit and shortcut is its own.


def test_every_unit_and_shortcut_has_its_own_name_and_weights_path(tmp_path):
    import utils
    names = set()
    for unit in UNITS:
        for variant, n in (("normal", 3), ("bottleneck", 18)):
            names.add(models.network_info(variant, n, 1, "paper", "cifar10", unit=unit)["name"])
    for shortcut in ("scaling:0.5,0.5", "scaling:0.5,1", "exclusive-gating:-6",
                     "exclusive-gating:-7", "shortcut-gating:0", "conv1x1", "dropout:0.5"):
        names.add(models.network_info("normal", 18, 1, "paper", "cifar10", unit="original",
                                      shortcut=shortcut)["name"])
    assert len(names) == 17
    assert models.network_info("normal", 3, 1, "paper", "cifar10", unit="original")["name"] \
        == "resnet20"
    assert models.network_info("normal", 3, 1, "paper", "cifar10")["name"] == "preresnet20"
    paths = {utils.published_weights_path(str(tmp_path), name, "he2015") for name in names}
    assert len(paths) == len(names)


# =============================================================================
# Parameter counts against the papers.

# He et al. 2015 Table 6 (# params, option A, original unit; depth 6n+2).
HE2015_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M",
                 1202: "19.4M"}


def _counts(output):
    params = get_all_params(output, trainable=True)
    total = sum(p.get_value().size for p in params)
    norms = sum(p.get_value().size for p in params if p.name.endswith((".gamma", ".beta")))
    return total, total - norms


def _as_paper(count, text):
    digits = len(text[:-1].split(".")[1])
    return "%.*fM" % (digits, round(count / 1e6, digits))


@pytest.mark.parametrize("layers", [  # ResNet-1202 takes 3 s to build
    pytest.param(layers, marks=[pytest.mark.slow] if layers > 110 else [])
    for layers in sorted(HE2015_PARAMS)])
def test_he2015_cifar_resnets_have_table6s_parameter_counts(layers):
    total, _ = _counts(models.build_model("normal", (layers - 2) // 6, unit="original"))
    assert _as_paper(total, HE2015_PARAMS[layers]) == HE2015_PARAMS[layers]


@pytest.mark.slow  # builds PreResNet-1001 (2 s)
def test_preresnet_parameter_counts_are_he2016_table4s():
    """Table 4: ResNet-164 [ours] 1.7M, ResNet-1001 [ours] 10.2M, ResNet-110 [1]
    1.7M. ResNet-1001 matches with the convolution and classifier weights
    (10,178,490); its 149,216 batch-norm scales and shifts bring all trainable
    parameters to 10,327,706, which would round to 10.3M (He et al. 2015's
    counts, above, include them)."""
    total, weights = _counts(models.build_model("bottleneck", 111))
    assert (total, weights) == (10327706, 10178490)
    assert _as_paper(weights, "10.2M") == "10.2M" and _as_paper(total, "10.2M") == "10.3M"
    total, _ = _counts(models.build_model("bottleneck", 18))
    assert _as_paper(total, "1.7M") == "1.7M"
    total, _ = _counts(models.build_model("normal", 18, unit="original"))
    assert _as_paper(total, "1.7M") == "1.7M"


# =============================================================================
# The same function as an independent implementation (bench/torch_models.py).


def _torch():
    return pytest.importorskip("torch", reason="PyTorch is a bench dependency "
                                               "(bench/requirements.txt)")


class FixedMask:
    """Stands in for a DropoutLayer's random stream: the mask it draws is ours."""

    def __init__(self, mask):
        self.mask = mask

    def binomial(self, shape, p, dtype=None):
        return T.constant(self.mask)


def _randomise(net, rng):
    """Non-trivial values for every parameter (batch-norm statistics too)."""
    for p in net.params:
        value = p.get_value()
        kind = p.name.rsplit(".", 1)[1]
        if kind in ("gamma", "var"):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif kind in ("beta", "mean", "b"):
            value = value + rng.normal(0, 0.2, value.shape)
        p.set_value(value.astype(np.float32))


def _compare(variant, n, unit, shortcut="identity", batch=6):
    """Our network and bench/torch_models.py's, same weights and inputs, in
    PyTorch float64 (the exact function) and float32: ours must be as close to
    the float64 values as float32 arithmetic gets, i.e. as PyTorch's own float32
    result is (a few times its distance, or 1e-5 of the array's largest value)."""
    torch = _torch()
    import sys
    import os
    sys.path.insert(0, os.path.join(models.utils.PROJECT_DIR, "bench"))
    try:
        import torch_models
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(1)
    info = models.network_info(variant, n, 1, "paper", "cifar10", unit=unit, shortcut=shortcut)
    net = models.Network(info, seed=2)
    _randomise(net, rng)
    trainable = get_all_params(net.output, trainable=True)
    references = {}
    for dtype in (np.float64, np.float32):
        reference = torch_models.PaperResNet(variant, n, unit, models.parse_shortcut(shortcut))
        assert sorted(reference.names) == sorted(p.name for p in net.params)
        references[dtype] = reference.double() if dtype == np.float64 else reference

    def load(reference, dtype):   # (PyTorch's training mode moves its running averages)
        with torch.no_grad():
            for p in net.params:
                value = p.get_value().astype(dtype)
                reference.tensor(p.name).copy_(torch.from_numpy(
                    value.T.copy() if p.name == "head.dense.W" else value))

    x = rng.normal(0, 1, (batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    drops = [layer for layer in get_all_layers(net.output) if isinstance(layer, DropoutLayer)]
    masks = {}
    for layer in drops:
        mask = (rng.random((batch,) + layer.output_shape[1:]) < 0.5).astype(np.float32)
        layer._srng = FixedMask(mask)
        masks[layer.name[:-len(".shortcut.dropout")]] = mask
    for dtype, reference in references.items():
        for prefix, block in zip(["stage%d.unit%d" % (s, u) for s in (1, 2, 3)
                                  for u in range(1, n + 1)], reference.units):
            if prefix in masks:
                block.dropout_mask = torch.from_numpy(masks[prefix].astype(dtype))
    labels = T.ivector()
    names = ["probabilities", "loss"] + [p.name for p in trainable]
    for mode, deterministic in (("training", False), ("inference", True)):
        probabilities = get_output(net.output, deterministic=deterministic)
        loss = categorical_crossentropy(probabilities, labels).mean()
        fn = theano.function([net.input_var, labels], [probabilities, loss] +
                             T.grad(loss, trainable), no_default_updates=True)
        ours = fn(x, y)
        theirs = {}
        for dtype, reference in references.items():
            load(reference, dtype)
            reference.train(mode == "training")
            for param in reference.parameters():
                param.grad = None
            logits = reference(torch.from_numpy(x.astype(dtype)))
            their_loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y).long())
            their_loss.backward()
            theirs[dtype] = [torch.softmax(logits, 1).detach().numpy(),
                             their_loss.detach().numpy()]
            for p in trainable:
                grad = reference.tensor(p.name).grad.numpy()
                theirs[dtype].append(grad.T if p.name == "head.dense.W" else grad)
        exact, float32 = theirs[np.float64], theirs[np.float32]
        largest = max(float(np.abs(b).max()) for b in exact[2:])
        for name, a, b, c in pairs(names, ours, exact, float32):
            ours_off = float(np.abs(a - b).max())
            rounding = float(np.abs(c - b).max())
            # (the largest gradient's 1e-7 for gradients that vanish: a shift
            # before a batch norm in training mode has none)
            bound = 4 * rounding + 1e-5 * float(np.abs(b).max()) + 1e-7 * largest
            assert ours_off <= bound, ("%s, %s mode, %s: off by %.3g from the float64 "
                                       "values, PyTorch's float32 by %.3g"
                                       % (info["name"], mode, name, ours_off, rounding))


# slow: about 10 s each with PyTorch installed (the quick loop's largest part);
# skipped without it, as in CI.
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["normal", "bottleneck"])
@pytest.mark.parametrize("unit", UNITS)
def test_every_unit_computes_what_pytorch_computes(unit, variant):
    """Forward pass and every parameter's gradient, in training mode (batch
    statistics) and in inference mode (running averages), n = 2 so that each
    stage has a unit that keeps and one that changes the shape."""
    _compare(variant, 2 if variant == "normal" else 1, unit)


@pytest.mark.slow
@pytest.mark.parametrize("shortcut", ["scaling:0.5,0.5", "exclusive-gating:-2",
                                      "shortcut-gating:0", "conv1x1", "dropout:0.5"])
def test_every_shortcut_computes_what_pytorch_computes(shortcut):
    _compare("normal", 2, "original", shortcut)


# =============================================================================
# test_model.py evaluates these networks as it does the others.


def _weights_of(tmp_path, unit, shortcut="identity"):
    import utils
    from conftest import make_images
    info = models.network_info("normal", 1, 1, "paper", "cifar10", unit=unit, shortcut=shortcut)
    net = models.Network(info)
    stats = utils.normalisation_stats("pixel_mean", make_images(20, 0)[0])
    path = tmp_path / ("%s.npz" % info["name"])
    models.save_weights(str(path), net, stats)
    return path


@pytest.mark.slow  # builds four networks through test_model.py (2 s)
def test_test_model_refuses_weights_of_another_unit_or_shortcut(tmp_path):
    """Units of one block have parameters of the same shapes: the shape check
    cannot tell (b) from (a), the file's record does."""
    from conftest import run_cli
    original = _weights_of(tmp_path, "original")
    result = run_cli("test_model.py", "--weights", original, "--unit", "bn-after-add")
    assert result.returncode == 2, result.stderr
    assert "holds weights of ResNet-8 with unit original, not --unit bn-after-add" in \
        result.stderr
    gated = _weights_of(tmp_path, "original", "exclusive-gating:-6")
    result = run_cli("test_model.py", "--weights", gated, "--shortcut", "exclusive-gating:-7")
    assert result.returncode == 2 and "with shortcut exclusive-gating:-6" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("unit,shortcut", [("original", "identity"),
                                           ("relu-preact", "identity"),
                                           ("original", "exclusive-gating:-6")])
def test_test_model_evaluates_a_weights_file_with_its_unit_and_shortcut(tmp_path, tiny_data,
                                                                        unit, shortcut):
    import json
    from conftest import run_cli
    path = _weights_of(tmp_path, unit, shortcut)
    result = run_cli("test_model.py", "--weights", path, "--data-dir", tiny_data)
    assert result.returncode == 0, result.stderr
    display = models.network_info("normal", 1, 1, "paper", "cifar10", unit=unit,
                                  shortcut=shortcut)["display"]
    assert display in result.stdout and "test error:" in result.stdout
    report = json.loads(open(str(path)[:-4] + "-test.json").read())
    assert (report["network"]["unit"], report["network"]["shortcut"]) == (unit, shortcut)
    assert report["count"] == 100
