"""The networks: exact parameter counts, structure, argument checks, layers."""
import numpy as np
import pytest
import scipy.signal

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
import lasagne
from lasagne.layers import count_params, get_all_layers, get_output

from engine import layers
import models

# The papers' counts (He et al. 2016 Table 3 rounds them to 1.7M; these are
# exact for the described graphs) and the old repository's.
EXPECTED_TRAINABLE = [
    ("normal", 18, 1, "paper", 1730522),       # PreResNet-110
    ("bottleneck", 18, 1, "paper", 1703258),   # PreResNet-164
    ("wide", 2, 4, "paper", 2748890),          # WRN-16-4
    pytest.param("wide", 4, 10, "paper", 36479194,  # WRN-28-10 (1 s to build)
                 marks=pytest.mark.slow),
    ("normal", 18, 1, "seed", 1732538),
    ("bottleneck", 18, 1, "seed", 1711322),
    ("wide", 2, 4, "seed", 5702746),
]


@pytest.mark.parametrize("variant,n,k,arch,expected", EXPECTED_TRAINABLE)
def test_exact_parameter_counts(variant, n, k, arch, expected):
    net = models.build_model(variant, n, k, arch=arch)
    assert count_params(net, trainable=True) == expected


@pytest.mark.parametrize("variant,n,k,features", [
    ("normal", 18, 1, 64), ("bottleneck", 18, 1, 256), ("wide", 2, 4, 256)])
def test_hundred_classes_only_widen_the_classifier(variant, n, k, features):
    ten = count_params(models.build_model(variant, n, k, num_classes=10), trainable=True)
    net = models.build_model(variant, n, k, num_classes=100)
    assert net.output_shape == (None, 100)
    assert count_params(net, trainable=True) == ten + 90 * (features + 1)


def test_old_function_names_are_aliases():
    assert count_params(models.ResNet_FullPreActivation(n=18), trainable=True) == 1730522
    assert count_params(models.ResNet_BottleNeck_FullPreActivation(n=18),
                        trainable=True) == 1703258
    assert count_params(models.ResNet_FullPre_Wide(n=2, k=4), trainable=True) == 2748890
    assert count_params(models.ResNet_FullPre_Wide(n=2, k=4, arch="seed"),
                        trainable=True) == 5702746


@pytest.mark.parametrize("args,kwargs,message", [
    (("resnet", 18), {}, "unknown variant"),
    (("normal", 0), {}, "depth n"),
    (("normal", -3), {}, "depth n"),
    (("normal", 2.5), {}, "depth n"),
    (("wide", 2, 0), {}, "width k"),
    (("normal", 18, 4), {}, "wide networks only"),
    (("bottleneck", 18, 2), {}, "wide networks only"),
    (("normal", 1), {"num_classes": 1}, "num_classes"),
    (("normal", 1), {"dropout": 0.3}, "dropout"),
    (("wide", 1, 1), {"dropout": 1.0}, "dropout"),
    (("normal", 1), {"arch": "torch"}, "unknown arch"),
])
def test_invalid_arguments_raise_clear_value_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.build_model(*args, **kwargs)


def _convs(net):
    return [l for l in get_all_layers(net) if isinstance(l, layers.CrossCorrelation2DLayer)]


def _by_name(net):
    return {l.name: l for l in get_all_layers(net)}


def test_bottleneck_stride_sits_on_first_1x1_in_paper_and_on_3x3_in_seed():
    paper = _by_name(models.build_model("bottleneck", 1))
    assert (paper["stage2.unit1.conv1"].filter_size, paper["stage2.unit1.conv1"].stride) == (1, 2)
    assert (paper["stage2.unit1.conv2"].filter_size, paper["stage2.unit1.conv2"].stride) == (3, 1)
    seed = _by_name(models.build_model("bottleneck", 1, arch="seed"))
    assert seed["stage2.unit1.conv1"].stride == 1
    assert (seed["stage2.unit1.conv2"].filter_size, seed["stage2.unit1.conv2"].stride) == (3, 2)


def test_paper_convolutions_have_no_bias_seed_last_ones_do():
    assert all(c.b is None for c in _convs(models.build_model("normal", 2)))
    seed = _convs(models.build_model("normal", 2, arch="seed"))
    with_bias = sorted(c.name for c in seed if c.b is not None)
    assert with_bias == sorted("stage%d.unit%d.conv2" % (s, u) for s in (1, 2, 3) for u in (1, 2))


@pytest.mark.parametrize("variant,k,projected", [
    ("normal", 1, ["stage2.unit1", "stage3.unit1"]),
    ("bottleneck", 1, ["stage1.unit1", "stage2.unit1", "stage3.unit1"]),
    ("wide", 2, ["stage1.unit1", "stage2.unit1", "stage3.unit1"]),
])
def test_projections_where_shape_changes_from_the_preactivated_input(variant, k, projected):
    net = models.build_model(variant, 2, k)
    found = _by_name(net)
    names = sorted(n[:-len(".projection")] for n in found if n.endswith(".projection"))
    assert names == projected
    for unit in projected:
        source = found[unit + ".projection"].input_layer
        # Pre-activated: a BN-ReLU (the stem's for the very first unit).
        assert isinstance(source, layers.BatchNormLayer) and source.relu
        expected = "stem.bn" if unit == "stage1.unit1" else unit + ".pre.bn"
        assert source.name == expected
    # Identity shortcuts elsewhere: the sum's second input is the previous sum.
    second = found["stage2.unit2.sum"].input_layers[1]
    assert second is found["stage2.unit1.sum"]


def test_first_unit_shares_the_stem_preactivation():
    found = _by_name(models.build_model("normal", 1))
    assert "stage1.unit1.pre.bn" not in found
    assert found["stage1.unit1.conv1"].input_layer is found["stem.bn"]


def test_wide_dropout_sits_between_the_two_convolutions():
    found = _by_name(models.build_model("wide", 1, 2, dropout=0.3))
    drop = found["stage1.unit1.dropout"]
    assert drop.p == 0.3
    assert drop.input_layer is found["stage1.unit1.conv1.bn"]
    assert found["stage1.unit1.conv2"].input_layer is drop


def test_seed_wide_has_two_extra_units_in_stages_two_and_three():
    assert models.stage_units("wide", 2, "seed") == (2, 4, 4)
    assert models.stage_units("wide", 2, "paper") == (2, 2, 2)
    assert "22 layers" in models.display_name("wide", 2, 4, "seed")


def test_names():
    assert models.network_name("normal", 18) == "preresnet110"
    assert models.network_name("bottleneck", 18) == "preresnet164"
    assert models.network_name("wide", 2, 4) == "wrn16-4"
    assert models.network_name("wide", 4, 10, num_classes=100) == "wrn28-10-cifar100"
    assert models.network_name("normal", 18, arch="seed") == "seed-preresnet110"
    assert models.display_name("wide", 4, 10) == "WRN-28-10"


def test_forward_pass_gives_probabilities():
    x = T.tensor4()
    net = models.build_model("normal", 1, input_var=x)
    predict = theano.function([x], get_output(net, deterministic=True))
    probabilities = predict(np.random.default_rng(0).normal(size=(4, 3, 32, 32))
                            .astype(np.float32))
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


# -- layers -------------------------------------------------------------------


@pytest.mark.parametrize("size,stride", [(3, 1), (3, 2), (1, 2)])
def test_conv_layer_is_a_same_padded_cross_correlation(size, stride):
    rng = np.random.default_rng(size + stride)
    image = rng.normal(size=(2, 3, 9, 9)).astype(np.float32)
    x = T.tensor4()
    conv = layers.CrossCorrelation2DLayer(lasagne.layers.InputLayer((None, 3, 9, 9), x), 4, size, stride)
    out = theano.function([x], get_output(conv))(image)
    assert out.shape == (2, 4, (9 + stride - 1) // stride, (9 + stride - 1) // stride)
    assert conv.output_shape[2:] == out.shape[2:]
    kernels = conv.W.get_value()
    expected = np.zeros((2, 4, 9, 9))
    for b in range(2):
        for o in range(4):
            expected[b, o] = sum(scipy.signal.correlate2d(image[b, c], kernels[o, c],
                                                          mode="same") for c in range(3))
    np.testing.assert_allclose(out, expected[:, :, ::stride, ::stride], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("running", ["inv_std", "var"])
def test_batch_norm_normalises_and_keeps_running_averages(running):
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(8, 2, 3, 3)) * [[[[2.0]], [[0.5]]]] + 3).astype(np.float32)
    x = T.tensor4()
    bn = layers.BatchNormLayer(lasagne.layers.InputLayer((None, 2, 3, 3), x),
                               epsilon=1e-5, alpha=0.1, running=running)
    assert [p.name for p in bn.get_params()] == ["beta", "gamma", "mean", running]
    assert [p.name for p in bn.get_params(regularizable=True)] == ["gamma"]
    train = theano.function([x], get_output(bn))
    out = train(data)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, atol=1e-3)
    mean, var = data.mean(axis=(0, 2, 3)), data.var(axis=(0, 2, 3))
    np.testing.assert_allclose(bn.mean.get_value(), 0.1 * mean, rtol=1e-5)
    if running == "inv_std":
        expected_spread = 0.9 * 1 + 0.1 / np.sqrt(var + 1e-5)
    else:
        m = 8 * 3 * 3
        expected_spread = 0.9 * 1 + 0.1 * var * m / (m - 1)
    np.testing.assert_allclose(bn.spread.get_value(), expected_spread, rtol=1e-5)
    infer = theano.function([x], get_output(bn, deterministic=True))
    inv_std = (bn.spread.get_value() if running == "inv_std"
               else 1 / np.sqrt(bn.spread.get_value() + 1e-5))
    expected = (data - bn.mean.get_value()[None, :, None, None]) * inv_std[None, :, None, None]
    np.testing.assert_allclose(infer(data), expected, rtol=1e-5, atol=1e-5)
