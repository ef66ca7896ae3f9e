"""Winograd F(2x2, 3x3) and F(4x4, 3x3) (engine/c_code/winograd.c) against a
float64 reference: Theano's stock convolution (CorrMM) and its gradients in
float64. Every stride-1 3x3 shape of the networks, forward, input gradient
and kernel gradient, within 2e-5 of the largest reference value; the same
bits for any number of threads."""

import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
import lasagne

from engine import layers, ops
import models
from conftest import outputs_per_thread_count, pairs

TOLERANCE = 2e-5


def network_shapes():
    """(in channels, size, out channels) of every stride-1 3x3 convolution in
    normal, bottleneck and wide networks (widths 1, 4 and 10): the shapes
    depend on the variant and width only, not on the depth."""
    shapes = set()
    for variant, width in (("normal", 1), ("bottleneck", 1), ("wide", 4), ("wide", 10)):
        net = models.build_model(variant, 1, width=width) if variant == "wide" else \
            models.build_model(variant, 1)
        for layer in lasagne.layers.get_all_layers(net):
            if isinstance(layer, layers.CrossCorrelation2DLayer) and layer.filter_size == 3 \
                    and layer.stride == 1:
                _, channels, size, _ = layer.input_shape
                shapes.add((channels, size, layer.num_filters))
    return sorted(shapes)


SHAPES = network_shapes()


def reference_and_ours(algo):
    """A function of (x, w, dy) returning the float64 reference's y, dx, dw and ours."""
    x, w, dy = T.dtensor4(), T.dtensor4(), T.dtensor4()
    stock = T.nnet.conv2d(x, w, border_mode="half", filter_flip=False)
    x32, w32, dy32 = (T.cast(v, "float32") for v in (x, w, dy))
    ours = ops.Conv2D(1, algo=algo)(x32, w32)
    dx, dw = ops.Conv2DGrad(1, algo=algo)(x32, w32, dy32)
    return theano.function([x, w, dy], [stock] + T.grad((stock * dy).sum(), [x, w])
                           + [ours, dx, dw])


WINOGRAD = ("winograd", "winograd4")   # 2x2 and 4x4 tiles


@pytest.fixture(scope="module", params=WINOGRAD)
def winograd(request):
    return reference_and_ours(request.param)


def relative_error(ours, reference):
    return np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30)


def test_the_networks_shapes_are_found():
    assert (16, 32, 16) in SHAPES and (64, 8, 64) in SHAPES and (640, 8, 640) in SHAPES


# batch 20: a whole group of 16 images (one vector each) and a group of 4;
# the wide networks' larger shapes take most of the time (float64 reference)
@pytest.mark.parametrize("channels,size,filters", [
    pytest.param(*shape, marks=[pytest.mark.slow] if shape[0] * shape[2] > 128 * 128 else [])
    for shape in SHAPES])
def test_winograd_matches_float64_on_every_network_shape(winograd, channels, size, filters):
    rng = np.random.default_rng(channels * 1000 + size * 10 + filters)
    batch = 20 if channels * filters <= 256 * 256 else 16
    xv = rng.normal(size=(batch, channels, size, size)).astype(np.float32)
    wv = (rng.normal(size=(filters, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
    dyv = rng.normal(size=(batch, filters, size, size)).astype(np.float32)
    out = winograd(xv.astype(np.float64), wv.astype(np.float64), dyv.astype(np.float64))
    for name, ours, reference in zip(("forward", "input gradient", "kernel gradient"),
                                     out[3:], out[:3]):
        assert relative_error(ours, reference) < TOLERANCE, name


# odd sizes (a last row and column of tiles half outside), odd channel counts
# (the product tiles' remainders), batches of one image and of a group and a bit
@pytest.mark.parametrize("batch,channels,size,filters",
                         [(1, 3, 5, 2), (3, 13, 7, 21), (17, 16, 9, 8), (16, 9, 6, 33),
                          (33, 24, 4, 12), (2, 5, 32, 9), (128, 16, 8, 16)])
def test_winograd_matches_float64_on_odd_shapes(winograd, batch, channels, size, filters):
    rng = np.random.default_rng(batch + channels + size + filters)
    args = [rng.normal(size=shape) for shape in ((batch, channels, size, size),
                                                  (filters, channels, 3, 3),
                                                  (batch, filters, size, size))]
    args = [a.astype(np.float32).astype(np.float64) for a in args]
    out = winograd(*args)
    for ours, reference in zip(out[3:], out[:3]):
        assert relative_error(ours, reference) < TOLERANCE


def test_every_algorithm_gives_the_same_convolution():
    """auto, direct, winograd and the two mixed ones, on a shape where auto
    picks Winograd for some parts: all within the tolerance of each other."""
    rng = np.random.default_rng(1)
    args = [rng.normal(size=shape).astype(np.float32).astype(np.float64)
            for shape in ((32, 64, 8, 8), (64, 64, 3, 3), (32, 64, 8, 8))]
    results = {algo: reference_and_ours(algo)(*args) for algo in ops.ALGOS}
    for algo, out in results.items():
        for ours, reference in zip(out[3:], out[:3]):
            assert relative_error(ours, reference) < TOLERANCE, algo


def float32_convolutions(algo):
    """A function of float32 (x, w, dy) returning y, dx, dw of one algorithm."""
    x, w, dy = T.tensor4(), T.tensor4(), T.tensor4()
    return theano.function([x, w, dy], [ops.Conv2D(1, algo=algo)(x, w)]
                           + list(ops.Conv2DGrad(1, algo=algo)(x, w, dy)))


@pytest.mark.parametrize("batch,channels,size,filters,chosen", [
    (32, 16, 16, 16, ("winograd4", "winograd4", "direct")),  # 16 channels: not the kernel gradient
    (32, 16, 16, 64, ("winograd4", "winograd4", "direct")),
    (32, 32, 16, 32, ("winograd4", "winograd4", "winograd4")),
    (32, 32, 8, 32, ("winograd4", "winograd4", "winograd")),  # 8x8: the kernel gradient by F(2x2)
    (4, 64, 8, 64, ("direct", "direct", "direct")),       # 4 of a vector's 16 lanes used
])
def test_auto_chooses_each_part_by_its_shape(batch, channels, size, filters, chosen):
    """auto takes Winograd F(4x4)'s forward pass and input gradient from 16
    channels and its kernel gradient from 32 on both sides, F(2x2)'s kernel
    gradient on 8x8 images (winograd.c's pw_pays): each part's bits equal
    those of the algorithm it should have chosen, and differ from the others'."""
    rng = np.random.default_rng(batch + channels + filters)
    args = [rng.normal(size=shape).astype(np.float32)
            for shape in ((batch, channels, size, size), (filters, channels, 3, 3),
                          (batch, filters, size, size))]
    auto = float32_convolutions("auto")(*args)
    fixed = {algo: float32_convolutions(algo)(*args) for algo in ("direct", "winograd",
                                                                   "winograd4")}
    for part, (name, algo) in enumerate(zip(("forward", "input gradient", "kernel gradient"),
                                            chosen)):
        np.testing.assert_array_equal(auto[part], fixed[algo][part], err_msg=name)
        for other in fixed:
            if other != algo:
                assert not np.array_equal(auto[part], fixed[other][part]), (name, other)


def test_conv_ops_refuse_an_unknown_algorithm():
    with pytest.raises(ValueError, match="algo must be one of"):
        ops.Conv2D(1, algo="fft")


THREAD_SCRIPT = """
import sys
import numpy as np
import engine
import theano
import theano.tensor as T
from engine import ops
rng = np.random.default_rng(0)
x, w, dy = T.tensor4(), T.tensor4(), T.tensor4()
outputs = []
for algo in ("winograd", "winograd4"):
    f = theano.function([x, w, dy], [ops.Conv2D(1, algo=algo)(x, w)]
                        + list(ops.Conv2DGrad(1, algo=algo)(x, w, dy)))
    for batch, channels, size, filters in ((40, 16, 8, 24), (20, 13, 9, 21)):
        outputs += f(rng.normal(size=(batch, channels, size, size)).astype("float32"),
                     rng.normal(size=(filters, channels, 3, 3)).astype("float32"),
                     rng.normal(size=(batch, filters, size, size)).astype("float32"))
np.savez(sys.argv[1], *outputs)
"""


@pytest.mark.slow  # two processes (3 s)
def test_winograd_results_do_not_depend_on_the_number_of_threads(tmp_path):
    results = outputs_per_thread_count(THREAD_SCRIPT, tmp_path, ("1", "3"))
    assert len(results[0]) == 12
    for one, three in pairs(*results):
        np.testing.assert_array_equal(one, three)
