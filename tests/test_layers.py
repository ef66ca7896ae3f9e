"""engine.layers as a Lasagne user uses them, against Lasagne's documented
behaviour (the docstrings and formulas of its development version's
BatchNormLayer and batch_norm, and of its layers' keywords), written here
from those formulas. Every test runs with the C ops on and off; where they
are on and apply, the test checks that they are the ops that ran."""
import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
import lasagne
from lasagne.layers import (DenseLayer, InputLayer, NonlinearityLayer, get_all_layers,
                            get_all_params, get_output)
from lasagne.nonlinearities import identity, rectify, tanh

from engine import layers, ops

# The two configurations of the networks: the old repository's (Lasagne's
# defaults) and the papers' (Torch's).
SEED = {"epsilon": 1e-4, "alpha": 0.1, "running": "inv_std"}
PAPER = {"epsilon": 1e-5, "alpha": 0.1, "running": "var"}


@pytest.fixture(params=[True, False], ids=["c_ops", "plain"], autouse=True)
def c_ops(request, monkeypatch):
    monkeypatch.setattr(layers, "USE_C_OPS", request.param)
    return request.param


def c_ops_in(function):
    return {type(node.op) for node in function.maker.fgraph.toposort()} & {
        ops.BatchNormTrain, ops.BatchNormTrainGrad, ops.ScaleShift, ops.Conv2D,
        ops.BatchNormStats}


def expected_c_ops(c_ops, *names):
    return {getattr(ops, name) for name in names} if c_ops else set()


def kept_shape(x_shape, axes):
    """The shape that broadcasts a parameter over the normalised axes."""
    return [1 if a in axes else size for a, size in enumerate(x_shape)]


def reference(x, axes, beta, gamma, mean, spread, epsilon, alpha, running,
              use_averages, update_averages):
    """Lasagne's formulas in float64: the output, and the averages after the
    update (or unchanged)."""
    x = x.astype(np.float64)
    shape = kept_shape(x.shape, axes)
    batch_mean = x.mean(axes)
    batch_var = x.var(axes)  # biased: the mean squared deviation
    batch_inv_std = 1 / np.sqrt(batch_var + epsilon)
    if use_averages:
        m = mean
        inv_std = spread if running == "inv_std" else 1 / np.sqrt(spread + epsilon)
    else:
        m, inv_std = batch_mean, batch_inv_std
    y = ((x - m.reshape(shape)) * (gamma * inv_std).reshape(shape) + beta.reshape(shape))
    if not update_averages:
        return y, mean, spread
    count = x.size / batch_mean.size
    batch_spread = batch_inv_std if running == "inv_std" else batch_var * count / (count - 1)
    return (y, (1 - alpha) * mean + alpha * batch_mean,
            (1 - alpha) * spread + alpha * batch_spread)


def random_layer(input_layer, rng, config, **kwargs):
    """A BatchNormLayer whose parameters and averages are all away from their
    initial values, so that using or not using each one shows."""
    bn = layers.BatchNormLayer(input_layer, **dict(config, **kwargs))
    for param in bn.get_params():
        shape = param.get_value().shape
        value = (rng.uniform(0.5, 2.0, shape) if param is bn.spread or param is bn.gamma
                 else rng.normal(size=shape))
        param.set_value(value.astype(np.float32))
    return bn


def values(bn):
    return {name: (None if p is None else p.get_value().astype(np.float64))
            for name, p in (("beta", bn.beta), ("gamma", bn.gamma), ("mean", bn.mean),
                            ("spread", bn.spread))}


# -- BatchNormLayer: outputs and updates for every setting of get_output ------


@pytest.mark.parametrize("config", [SEED, PAPER], ids=["seed", "paper"])
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("use_averages", [None, False, True])
@pytest.mark.parametrize("update_averages", [None, False, True])
def test_every_get_output_setting_normalises_and_updates_as_documented(
        c_ops, config, deterministic, use_averages, update_averages):
    """use_averages defaults to deterministic, update_averages to not
    deterministic; each, when given, overrides it. Two calls: the second
    normalises with the averages the first updated, if it updated them."""
    rng = np.random.default_rng(0)
    x_var = T.tensor4("x")
    bn = random_layer(InputLayer((None, 3, 4, 5), x_var), rng, config)
    settings = {}
    if use_averages is not None:
        settings["batch_norm_use_averages"] = use_averages
    if update_averages is not None:
        settings["batch_norm_update_averages"] = update_averages
    f = theano.function([x_var], get_output(bn, deterministic=deterministic, **settings))
    use = deterministic if use_averages is None else use_averages
    update = (not deterministic) if update_averages is None else update_averages
    expected_ops = {ops.ScaleShift} if use else {ops.BatchNormTrain}
    if use and update:  # the batch statistics for the update (engine/fusion.py drops the
        expected_ops.add(ops.BatchNormStats)   # normalised batch nobody reads)
    assert c_ops_in(f) == (expected_ops if c_ops else set())
    for _ in range(2):
        data = (rng.normal(size=(6, 3, 4, 5)) * [[[[2.0]], [[0.5]], [[1.0]]]] + 3).astype(
            np.float32)
        v = values(bn)
        y, mean, spread = reference(data, (0, 2, 3), v["beta"], v["gamma"], v["mean"],
                                    v["spread"], config["epsilon"], config["alpha"],
                                    config["running"], use, update)
        np.testing.assert_allclose(f(data), y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.mean.get_value(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.spread.get_value(), spread, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_averages", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_input_gradient_follows_the_statistics_used(c_ops, use_averages, relu):
    """With batch statistics the gradient flows through the mean and the
    variance; with the averages the layer is a per-channel affine map."""
    rng = np.random.default_rng(1)
    x_var, dy_var = T.tensor4("x"), T.tensor4("dy")
    bn = random_layer(InputLayer((None, 4, 3, 3), x_var), rng, SEED,
                      nonlinearity=rectify if relu else None)
    out = get_output(bn, batch_norm_use_averages=use_averages,
                     batch_norm_update_averages=False)
    f = theano.function([x_var, dy_var], [out, T.grad((out * dy_var).sum(), x_var)])
    data = rng.normal(size=(5, 4, 3, 3)).astype(np.float32) * 3 - 1
    dy = rng.normal(size=data.shape)
    v = values(bn)
    y, _, _ = reference(data, (0, 2, 3), v["beta"], v["gamma"], v["mean"], v["spread"],
                        1e-4, 0.1, "inv_std", use_averages, False)
    g = dy * (y > 0) if relu else dy
    shape = kept_shape(data.shape, (0, 2, 3))
    if use_averages:
        dx = g * (v["gamma"] * v["spread"]).reshape(shape)
    else:
        axes = (0, 2, 3)
        x = data.astype(np.float64)
        inv_std = 1 / np.sqrt(x.var(axes) + 1e-4)
        xhat = (x - x.mean(axes).reshape(shape)) * inv_std.reshape(shape)
        dx = (v["gamma"] * inv_std).reshape(shape) * (
            g - g.mean(axes).reshape(shape) - xhat * (g * xhat).mean(axes).reshape(shape))
    y_out, dx_out = f(data, dy.astype(np.float32))
    np.testing.assert_allclose(y_out, np.maximum(y, 0) if relu else y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx_out, dx, rtol=1e-4, atol=1e-5)


# -- axes ------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axes,normalised,c_path", [
    ((None, 3, 4, 4), "auto", (0, 2, 3), True),   # per channel after a convolution
    ((None, 5), "auto", (0,), True),              # per unit after a dense layer
    ((None, 3, 7), "auto", (0, 2), True),         # per channel of a 1D convolution
    ((None, 3, 4, 4), (0, 2, 3), (0, 2, 3), True),
    ((None, 3, 7), (0, -1), (0, 2), True),        # negative axes count from the end
    ((None, 5), 0, (0,), True),                   # an int is one axis
    ((None, 3, 4, 4), (0,), (0,), False),         # per position: parameters (3, 4, 4)
    ((6, 3, 4, 4), (0, 1), (0, 1), False),        # parameters (4, 4)
    ((6, 3, 4, 4), (2, 3), (2, 3), False),        # per image and channel
])
def test_axes_choose_what_is_normalised_together(c_ops, shape, axes, normalised, c_path):
    rng = np.random.default_rng(2)
    x_var = T.TensorType("float32", (False,) * len(shape))("x")
    bn = random_layer(InputLayer(shape, x_var), rng, SEED, axes=axes)
    assert bn.axes == normalised
    kept = tuple(size for a, size in enumerate(shape) if a not in normalised)
    assert all(p.get_value().shape == kept for p in bn.get_params())
    data_shape = tuple(6 if size is None else size for size in shape)
    data = (rng.normal(size=data_shape) * 2 + 1).astype(np.float32)
    for deterministic in (False, True):
        v = values(bn)
        f = theano.function([x_var], get_output(bn, deterministic=deterministic))
        assert bool(c_ops_in(f)) == (c_ops and c_path)
        y, mean, spread = reference(data, normalised, v["beta"], v["gamma"], v["mean"],
                                    v["spread"], 1e-4, 0.1, "inv_std", deterministic,
                                    not deterministic)
        np.testing.assert_allclose(f(data), y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.mean.get_value(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.spread.get_value(), spread, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes,message", [(4, "not an axis"), ((0, 0), "twice"),
                                          ((0, -4), "twice"), ("all", "not an axis")])
def test_axes_that_are_not_axes_of_the_input_are_refused(axes, message):
    with pytest.raises(ValueError, match=message):
        layers.BatchNormLayer(InputLayer((None, 3, 4, 4)), axes=axes)


def test_an_undefined_size_is_refused_on_a_kept_axis_only():
    with pytest.raises(ValueError, match="needs specified input sizes for all axes not "
                                         "normalized over: axis 1 of the input shape"):
        layers.BatchNormLayer(InputLayer((None, None, 8, 8)))
    with pytest.raises(ValueError, match="axis 2, 3 of the input shape"):
        layers.BatchNormLayer(InputLayer((None, 3, None, None)), axes=(0, 1))
    # undefined sizes on the normalised axes are fine
    assert layers.BatchNormLayer(InputLayer((None, 3, None, None))).mean.get_value().shape == (3,)


# -- beta=None, gamma=None -------------------------------------------------------


@pytest.mark.parametrize("beta,gamma", [(None, "given"), ("given", None), (None, None)])
def test_beta_or_gamma_none_skips_the_shift_or_the_scale(c_ops, beta, gamma):
    rng = np.random.default_rng(3)
    x_var = T.tensor4("x")
    kwargs = {}
    if beta is None:
        kwargs["beta"] = None
    if gamma is None:
        kwargs["gamma"] = None
    bn = random_layer(InputLayer((None, 3, 4, 4), x_var), rng, SEED, **kwargs)
    names = ["beta", "gamma", "mean", "inv_std"]
    assert [p.name for p in bn.get_params()] == [n for n in names if kwargs.get(n, 1) is not None]
    assert (bn.beta is None) == (beta is None) and (bn.gamma is None) == (gamma is None)
    data = (rng.normal(size=(5, 3, 4, 4)) + 2).astype(np.float32)
    for deterministic in (False, True):
        v = values(bn)
        f = theano.function([x_var], get_output(bn, deterministic=deterministic))
        assert c_ops_in(f) == expected_c_ops(
            c_ops, "ScaleShift" if deterministic else "BatchNormTrain")
        y, _, _ = reference(data, (0, 2, 3), np.zeros(3) if beta is None else v["beta"],
                            np.ones(3) if gamma is None else v["gamma"], v["mean"],
                            v["spread"], 1e-4, 0.1, "inv_std", deterministic, False)
        np.testing.assert_allclose(f(data), y, rtol=1e-5, atol=1e-5)
    # no scale, no shift: nothing to train
    out = get_output(bn)
    assert len(get_all_params(bn, trainable=True)) == 2 - (beta is None) - (gamma is None)
    if gamma is None and beta is None:
        assert get_all_params(bn, trainable=True) == []
    else:
        T.grad(out.sum(), get_all_params(bn, trainable=True))  # differentiable


# -- parameters: order, names, tags, initial values ------------------------------


@pytest.mark.parametrize("config,spread", [(SEED, "inv_std"), (PAPER, "var")])
def test_parameters_are_registered_in_lasagnes_order_with_its_tags(config, spread):
    bn = layers.BatchNormLayer(InputLayer((None, 4, 2, 2)), name="bn", **config)
    assert [p.name for p in bn.get_params()] == ["bn.beta", "bn.gamma", "bn.mean",
                                                 "bn." + spread]
    assert bn.get_params(trainable=True) == [bn.beta, bn.gamma]
    assert bn.get_params(regularizable=True) == [bn.gamma]
    assert bn.get_params(batch_norm_stat=True) == [bn.mean, bn.spread]
    assert bn.get_params(batch_norm_stat=False) == [bn.beta, bn.gamma]
    assert bn.get_params(trainable=False) == [bn.mean, bn.spread]
    assert getattr(bn, spread) is bn.spread
    np.testing.assert_array_equal(bn.beta.get_value(), 0)
    np.testing.assert_array_equal(bn.gamma.get_value(), 1)
    np.testing.assert_array_equal(bn.mean.get_value(), 0)
    np.testing.assert_array_equal(bn.spread.get_value(), 1)


def test_initial_values_are_taken_from_the_keywords():
    bn = layers.BatchNormLayer(InputLayer((None, 3)), beta=lasagne.init.Constant(0.5),
                               gamma=np.array([1, 2, 3], np.float32),
                               mean=lasagne.init.Constant(-1),
                               inv_std=lasagne.init.Constant(4))
    np.testing.assert_array_equal(bn.beta.get_value(), 0.5)
    np.testing.assert_array_equal(bn.gamma.get_value(), [1, 2, 3])
    np.testing.assert_array_equal(bn.mean.get_value(), -1)
    np.testing.assert_array_equal(bn.inv_std.get_value(), 4)
    torch_like = layers.BatchNormLayer(InputLayer((None, 3)), running="var",
                                       var=lasagne.init.Constant(2))
    np.testing.assert_array_equal(torch_like.var.get_value(), 2)


@pytest.mark.parametrize("kwargs,message", [
    ({"running": "std"}, "running must be"),
    ({"running": "var", "inv_std": lasagne.init.Constant(2)}, "give its initial value as var="),
    ({"var": lasagne.init.Constant(2)}, "only running='var' keeps"),
    ({"nonlinearity": tanh}, "NonlinearityLayer"),
])
def test_settings_the_layer_does_not_have_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.BatchNormLayer(InputLayer((None, 3, 2, 2)), **kwargs)


def test_float64_input_takes_the_plain_path_and_keeps_float32_averages(c_ops):
    x_var = T.dtensor4("x")
    bn = layers.BatchNormLayer(InputLayer((None, 2, 3, 3), x_var), alpha=0.5)
    f = theano.function([x_var], get_output(bn))
    assert not c_ops_in(f)
    data = np.random.default_rng(4).normal(size=(4, 2, 3, 3)) + 5
    f(data)
    assert bn.mean.dtype == "float32"
    np.testing.assert_allclose(bn.mean.get_value(), 0.5 * data.mean((0, 2, 3)), rtol=1e-6)


# -- the fused ReLU (this project's extension) -----------------------------------


@pytest.mark.parametrize("config", [SEED, PAPER], ids=["seed", "paper"])
def test_fused_relu_is_batch_norm_then_a_relu_layer(c_ops, config):
    """BatchNormLayer(nonlinearity=rectify), one layer, computes what Lasagne's
    BatchNormLayer followed by NonlinearityLayer(rectify) computes: outputs,
    gradients and averages."""
    rng = np.random.default_rng(5)
    x_var = T.tensor4("x")
    source = InputLayer((None, 3, 4, 4), x_var)
    fused = random_layer(source, rng, config, nonlinearity=rectify)
    separate = layers.BatchNormLayer(source, **config)
    for mine, theirs in zip(fused.get_params(), separate.get_params()):
        theirs.set_value(mine.get_value())
    stacked = NonlinearityLayer(separate, rectify)
    data = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)
    for deterministic in (False, True):
        results = []
        for top, bn in ((fused, fused), (stacked, separate)):
            out = get_output(top, deterministic=deterministic)
            params = get_all_params(top, trainable=True)
            f = theano.function([x_var], [out] + T.grad((out * out).sum(), params))
            results.append(f(data) + [p.get_value() for p in (bn.mean, bn.spread)])
        for a, b in zip(*results):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -- the batch_norm helper ---------------------------------------------------------


def test_batch_norm_helper_moves_the_nonlinearity_behind_and_drops_the_bias(c_ops):
    rng = np.random.default_rng(6)
    x_var = T.matrix("x")
    dense = DenseLayer(InputLayer((None, 7), x_var), 5, nonlinearity=rectify, name="fc")
    top = layers.batch_norm(dense)
    assert [type(l).__name__ for l in get_all_layers(top)] == [
        "InputLayer", "DenseLayer", "BatchNormLayer", "NonlinearityLayer"]
    bn = top.input_layer
    assert top.nonlinearity is rectify and dense.nonlinearity is identity
    assert dense.b is None and dense.get_params() == [dense.W]
    assert (bn.name, top.name) == ("fc_bn", "fc_bn_nonlin")
    assert [p.name for p in get_all_params(top)] == [
        "fc.W", "fc_bn.beta", "fc_bn.gamma", "fc_bn.mean", "fc_bn.inv_std"]
    assert (bn.epsilon, bn.alpha, bn.axes, bn.running) == (1e-4, 0.1, (0,), "inv_std")
    f = theano.function([x_var], get_output(top))
    assert c_ops_in(f) == expected_c_ops(c_ops, "BatchNormTrain")
    data = rng.normal(size=(8, 7)).astype(np.float32)
    pre = data.astype(np.float64) @ dense.W.get_value()
    y = (pre - pre.mean(0)) / np.sqrt(pre.var(0) + 1e-4)
    np.testing.assert_allclose(f(data), np.maximum(y, 0), rtol=1e-5, atol=1e-5)


def test_batch_norm_helper_names_and_keywords():
    conv = layers.CrossCorrelation2DLayer(InputLayer((None, 3, 8, 8)), 4, 3,
                                          b=lasagne.init.Constant(0), nonlinearity=rectify,
                                          name="c")
    top = layers.batch_norm(conv, name="norm", epsilon=1e-5, running="var")
    assert (top.input_layer.name, top.name) == ("norm", "norm_nonlin")
    assert (top.input_layer.epsilon, top.input_layer.running) == (1e-5, "var")
    assert conv.b is None and conv.get_params() == [conv.W]
    unnamed = layers.batch_norm(DenseLayer(InputLayer((None, 3)), 2))
    assert unnamed.name is None and unnamed.input_layer.name is None
    # a layer whose nonlinearity is the identity still gets its (identity) layer
    linear = layers.batch_norm(DenseLayer(InputLayer((None, 3)), 2, nonlinearity=None))
    assert isinstance(linear, NonlinearityLayer) and linear.nonlinearity is identity
    # a layer without a nonlinearity or bias is only normalised
    plain = layers.batch_norm(InputLayer((None, 3, 4, 4), name="in"))
    assert isinstance(plain, layers.BatchNormLayer) and plain.name == "in_bn"


def test_batch_norm_of_a_convolution_builds_the_fused_layers_graph(c_ops):
    """The 2016 code's batch_norm(conv(..., nonlinearity=rectify)) and this
    project's conv + BatchNormLayer(nonlinearity=rectify): the same numbers,
    parameters in the same order."""
    rng = np.random.default_rng(7)
    x_var = T.tensor4("x")
    source = InputLayer((None, 3, 8, 8), x_var)
    helper = layers.batch_norm(layers.CrossCorrelation2DLayer(
        source, 4, 3, b=lasagne.init.Constant(0), nonlinearity=rectify))
    conv = layers.CrossCorrelation2DLayer(source, 4, 3)
    fused = layers.BatchNormLayer(conv, nonlinearity=rectify)
    theirs, mine = get_all_params(helper), get_all_params(fused)
    assert [p.get_value().shape for p in theirs] == [p.get_value().shape for p in mine]
    for a, b in zip(theirs, mine):
        b.set_value(a.get_value())
    data = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    for deterministic in (False, True):
        f = theano.function([x_var], [get_output(helper, deterministic=deterministic),
                                      get_output(fused, deterministic=deterministic)])
        a, b = f(data)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -- the convolution: Lasagne's keywords, refused where it does not compute them ---


@pytest.mark.parametrize("kwargs,stride", [({"pad": "same"}, 1), ({"pad": 1}, 1),
                                           ({"pad": (1, 1)}, 1), ({"flip_filters": False}, 1),
                                           ({"untie_biases": False}, 1),
                                           ({"filter_size": (3, 3), "stride": (2, 2)}, 2),
                                           ({"stride": 2}, 2)])
def test_conv_takes_lasagnes_keywords_for_what_it_computes(kwargs, stride):
    kwargs = dict({"filter_size": 3}, **kwargs)
    conv = layers.CrossCorrelation2DLayer(InputLayer((None, 2, 6, 6)), 4, **kwargs)
    assert (conv.filter_size, conv.pad, conv.flip_filters) == (3, "same", False)
    assert conv.stride == stride and conv.output_shape == (None, 4, 6 // stride, 6 // stride)
    assert conv.nonlinearity is identity and conv.b is None


@pytest.mark.parametrize("kwargs,message", [
    ({"pad": 0}, "pads 'same' only"), ({"pad": "valid"}, "pads 'same' only"),
    ({"pad": "full"}, "pads 'same' only"), ({"pad": 2}, "pads 'same' only"),
    ({"flip_filters": True}, "cross-correlation"), ({"untie_biases": True}, "untie_biases"),
    ({"filter_size": (3, 1)}, "square"), ({"filter_size": 2}, "odd"),
    ({"stride": (1, 2)}, "square"), ({"nonlinearity": "relu"}, "callable"),
])
def test_conv_refuses_what_it_does_not_compute(kwargs, message):
    kwargs = dict({"filter_size": 3}, **kwargs)
    with pytest.raises(ValueError, match=message):
        layers.CrossCorrelation2DLayer(InputLayer((None, 2, 6, 6)), 4, **kwargs)


def test_conv_bias_and_nonlinearity_as_in_lasagne(c_ops):
    rng = np.random.default_rng(8)
    x_var = T.tensor4("x")
    source = InputLayer((None, 2, 6, 6), x_var)
    bare = layers.CrossCorrelation2DLayer(source, 3, 3)
    full = layers.CrossCorrelation2DLayer(source, 3, 3, W=bare.W, b=lasagne.init.Constant(0.5),
                                          nonlinearity=rectify)
    assert full.get_params() == [full.W, full.b]
    assert full.get_params(regularizable=True) == [full.W]
    f = theano.function([x_var], [get_output(bare), get_output(full)])
    assert c_ops_in(f) == expected_c_ops(c_ops, "Conv2D")
    a, b = f(rng.normal(size=(2, 2, 6, 6)).astype(np.float32))
    np.testing.assert_allclose(b, np.maximum(a + 0.5, 0), rtol=1e-6, atol=1e-6)


def test_no_layer_here_takes_lasagnes_conv2dlayer_name():
    # Its defaults (pad=0, flip_filters=True, a bias, ReLU) are not ours: a
    # Lasagne user must not get this class under that name.
    assert not hasattr(layers, "Conv2DLayer")
