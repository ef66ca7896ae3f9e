"""The C ops against Theano's stock ops: same numbers, forward and backward."""
import os
import shutil

import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
import lasagne
from lasagne.layers import get_all_params, get_output

from engine import layers
import models
from conftest import outputs_per_thread_count, pairs
from engine import ops

RNG = np.random.default_rng(0)


def close(ours, reference, tolerance):
    scale = max(np.abs(reference).max(), 1e-12)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() / scale < tolerance


# batch, in channels, size, out channels, kernel, stride: tile-sized and odd
# channel counts (the register tiles' remainders), the strides the networks use,
# a batch whose chunks hold several images (8x8: 7 per chunk), and rows of
# whole vectors (16 and 32 pixels: tiles write output rows in place).
CONV_CASES = [(3, 4, 9, 5, 3, 1), (2, 16, 8, 16, 3, 1), (5, 3, 8, 6, 3, 2),
              (4, 6, 8, 7, 1, 2), (2, 5, 7, 3, 1, 1), (3, 13, 6, 21, 3, 1),
              (1, 8, 4, 17, 1, 1), (2, 7, 5, 9, 3, 2), (20, 8, 8, 16, 3, 1),
              (3, 5, 16, 9, 3, 1), (2, 3, 32, 17, 3, 1)]


@pytest.mark.parametrize("batch,channels,size,filters,kernel,stride", CONV_CASES)
def test_conv_matches_stock_conv2d_forward_and_backward(batch, channels, size, filters,
                                                        kernel, stride):
    x, w, dy = T.tensor4(), T.tensor4(), T.tensor4()
    stock = T.nnet.conv2d(x, w, border_mode="half", subsample=(stride, stride),
                          filter_flip=False)
    ours = ops.Conv2D(stride)(x, w)
    f = theano.function([x, w, dy], [stock, ours]
                        + T.grad((stock * dy).sum(), [x, w])
                        + T.grad((ours * dy).sum(), [x, w]))
    xv = RNG.normal(size=(batch, channels, size, size)).astype(np.float32)
    wv = RNG.normal(size=(filters, channels, kernel, kernel)).astype(np.float32)
    out = -(-size // stride)
    dyv = RNG.normal(size=(batch, filters, out, out)).astype(np.float32)
    y_stock, y_ours, dx_stock, dw_stock, dx_ours, dw_ours = f(xv, wv, dyv)
    close(y_ours, y_stock, 1e-6)
    close(dx_ours, dx_stock, 1e-6)
    close(dw_ours, dw_stock, 1e-6)
    again = f(xv, wv, dyv)  # deterministic: bit-identical on a second call
    for first, second in pairs((y_ours, dx_ours, dw_ours), (again[1], again[4], again[5])):
        np.testing.assert_array_equal(first, second)


def network_convolutions():
    """(in channels, size, out channels, kernel, stride) of every convolution
    of normal, bottleneck and wide networks (widths 1, 4 and 10); the shapes
    depend on the variant and width only, not on the depth."""
    shapes = set()
    for variant, width in (("normal", 1), ("bottleneck", 1), ("wide", 4), ("wide", 10)):
        net = models.build_model(variant, 1, width=width)
        for layer in lasagne.layers.get_all_layers(net):
            if isinstance(layer, layers.CrossCorrelation2DLayer):
                _, channels, size, _ = layer.input_shape
                shapes.add((channels, size, layer.num_filters, layer.filter_size, layer.stride))
    return sorted(shapes)


def float64_reference_and(algo, stride):
    """A function of float64 (x, w, dy): CorrMM's y, dx, dw in float64, then ours."""
    x, w, dy = T.dtensor4(), T.dtensor4(), T.dtensor4()
    stock = T.nnet.conv2d(x, w, border_mode="half", subsample=(stride, stride),
                          filter_flip=False)
    x32, w32, dy32 = (T.cast(v, "float32") for v in (x, w, dy))
    return theano.function([x, w, dy], [stock] + T.grad((stock * dy).sum(), [x, w])
                           + [ops.Conv2D(stride, algo=algo)(x32, w32)]
                           + list(ops.Conv2DGrad(stride, algo=algo)(x32, w32, dy32)))


# the stride-1 3x3 ones by Winograd: tests/test_winograd.py
@pytest.mark.parametrize("algo", ["direct", "im2col", "gemm1x1", "auto"])
@pytest.mark.parametrize("channels,size,filters,kernel,stride", [
    pytest.param(*shape, marks=[pytest.mark.slow] if shape[0] * shape[2] > 128 * 128 else [])
    for shape in network_convolutions()])
def test_every_network_convolution_matches_float64(channels, size, filters, kernel, stride,
                                                   algo):
    """Forward, input gradient and kernel gradient of every convolution shape
    of the networks, each algorithm that computes it, within 2e-5 of a
    float64 reference relative to the largest value."""
    if algo == "im2col" and stride == 1:
        pytest.skip("im2col takes the strided convolutions only")
    if algo == "gemm1x1" and (kernel, stride) != (1, 1):
        pytest.skip("one sgemm per image takes the 1x1 stride-1 convolutions only")
    rng = np.random.default_rng(channels + 3 * size + 7 * filters + kernel + stride)
    batch = 20 if channels * filters <= 256 * 256 else 16
    out = -(-size // stride)
    args = [rng.normal(size=shape).astype(np.float32).astype(np.float64) for shape in (
        (batch, channels, size, size), (filters, channels, kernel, kernel),
        (batch, filters, out, out))]
    args[1] /= np.sqrt(kernel * kernel * channels)
    results = float64_reference_and(algo, stride)(*args)
    for name, ours, reference in zip(("forward", "input gradient", "kernel gradient"),
                                     results[3:], results[:3]):
        assert relative_error(ours, reference) < 2e-5, name


def relative_error(ours, reference):
    return np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30)


@pytest.mark.parametrize("channels,filters,chosen", [
    (64, 128, ("direct", "direct", "im2col")),   # WRN's downsampling: the kernel gradient
    (32, 64, ("direct", "direct", "direct")),
])
def test_auto_takes_im2col_for_the_kernel_gradient_of_wide_stride_2_convolutions(
        channels, filters, chosen):
    """conv2d.c's pr_im2col_pays: each part's bits equal those of the
    algorithm it should have chosen, and differ from the other's."""
    rng = np.random.default_rng(channels)
    x, w, dy = T.tensor4(), T.tensor4(), T.tensor4()
    args = [rng.normal(size=shape).astype(np.float32) for shape in (
        (8, channels, 16, 16), (filters, channels, 3, 3), (8, filters, 8, 8))]
    results = {algo: theano.function([x, w, dy], [ops.Conv2D(2, algo=algo)(x, w)]
                                     + list(ops.Conv2DGrad(2, algo=algo)(x, w, dy)))(*args)
               for algo in ("auto", "direct", "im2col")}
    for part, algo in enumerate(chosen):
        other = "im2col" if algo == "direct" else "direct"
        np.testing.assert_array_equal(results["auto"][part], results[algo][part])
        if part > 0:   # the forward passes of the two happen to agree bit for bit
            assert not np.array_equal(results["auto"][part], results[other][part])


def test_conv_refuses_kernels_its_direct_code_does_not_cover():
    x, w = T.tensor4(), T.tensor4()
    f = theano.function([x, w], ops.Conv2D(1)(x, w))
    xv = RNG.normal(size=(1, 2, 6, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="larger than 3x3"):
        f(xv, RNG.normal(size=(3, 2, 5, 5)).astype(np.float32))


def test_conv_layer_with_a_5x5_kernel_uses_theanos_convolution():
    layer = layers.CrossCorrelation2DLayer(lasagne.layers.InputLayer((2, 3, 7, 7)), 4, 5)
    x = T.tensor4()
    f = theano.function([x], get_output(layer, x))
    xv = RNG.normal(size=(2, 3, 7, 7)).astype(np.float32)
    stock = T.nnet.conv2d(x, layer.W, border_mode="half", filter_flip=False)
    close(f(xv), theano.function([x], stock)(xv), 1e-6)


def plain_batch_norm(x, gamma, beta, epsilon, relu):
    mean = x.mean((0, 2, 3))
    var = T.sqr(x - mean.dimshuffle("x", 0, "x", "x")).mean((0, 2, 3))
    inv_std = 1 / T.sqrt(var + epsilon)
    y = ((x - mean.dimshuffle("x", 0, "x", "x")) * (gamma * inv_std).dimshuffle("x", 0, "x", "x")
         + beta.dimshuffle("x", 0, "x", "x"))
    return (T.nnet.relu(y) if relu else y), mean, inv_std, var


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (16, 16, 8, 8), (7, 5, 3, 1)])
def test_batch_norm_matches_plain_theano(shape, relu):
    x, gamma, beta, dy = T.tensor4(), T.vector(), T.vector(), T.tensor4()
    reference = plain_batch_norm(x, gamma, beta, 1e-5, relu)
    ours = ops.BatchNormTrain(1e-5, relu)(x, gamma, beta)
    f = theano.function([x, gamma, beta, dy], list(reference) + list(ours)
                        + T.grad((reference[0] * dy).sum(), [x, gamma, beta])
                        + T.grad((ours[0] * dy).sum(), [x, gamma, beta]))
    xv = (RNG.normal(size=shape) * 2 + 1).astype(np.float32)
    gv = RNG.normal(size=shape[1]).astype(np.float32)
    bv = RNG.normal(size=shape[1]).astype(np.float32)
    out = f(xv, gv, bv, RNG.normal(size=shape).astype(np.float32))
    for ours_value, reference_value in pairs(out[4:8] + out[11:14], out[0:4] + out[8:11]):
        close(ours_value, reference_value, 1e-5)


@pytest.mark.slow  # compiles a whole network twice (5 s)
def test_networks_with_and_without_c_ops_agree(monkeypatch):
    """A bottleneck net's loss, gradients (training mode; running averages
    updated) and predictions (inference mode), C ops versus plain Theano."""
    images, labels = T.tensor4(), T.ivector()
    xv = RNG.normal(size=(6, 3, 32, 32)).astype(np.float32)
    yv = RNG.integers(0, 10, 6).astype(np.int32)
    results = []
    for use_c in (True, False):
        monkeypatch.setattr(layers, "USE_C_OPS", use_c)
        lasagne.random.set_rng(np.random.RandomState(0))
        net = models.build_model("bottleneck", 1, input_var=images)
        params = get_all_params(net, trainable=True)
        loss = T.nnet.categorical_crossentropy(get_output(net), labels).mean()
        f = theano.function([images, labels], [loss] + T.grad(loss, params))
        predict = theano.function([images], get_output(net, deterministic=True))
        results.append(f(xv, yv) + [predict(xv)])
    for ours, plain in pairs(*results):
        close(np.asarray(ours), np.asarray(plain), 2e-4)


@pytest.mark.slow  # times a step against a worker thread (2 s each)
@pytest.mark.parametrize("algo", ["direct", "winograd"])
def test_ops_release_the_gil_so_the_batch_worker_runs_during_the_step(algo):
    """Theano's own ops hold the GIL; ours release it while they compute, so
    a Python thread (the batch worker) runs during the step. A thread that
    needs the GIL for every increment counts during one long C call: with the
    GIL held it could run only around the call (a few switch intervals of
    5 ms, against a call of 300 ms and more)."""
    import threading
    import time
    x, w = T.tensor4(), T.tensor4()
    step = theano.function([x, w], ops.Conv2D(1, algo=algo)(x, w))
    wv = RNG.normal(size=(128, 128, 3, 3)).astype(np.float32)
    # One call must last long enough (0.3 s) to tell the two cases apart: a
    # machine with many cores computes a batch of 128 sooner, so the batch
    # doubles until a call (the first of its size, also the warm-up) takes
    # that long.
    for batch in (128, 256, 512, 1024):
        xv = RNG.standard_normal((batch, 128, 32, 32), dtype=np.float32)
        started = time.perf_counter()
        step(xv, wv)
        if time.perf_counter() - started >= 0.3:
            break
    else:
        pytest.skip("a convolution of 1024 x 128 x 32 x 32 took under 0.3 s: too short to "
                    "see a Python thread run during it")
    count, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.1)
        before, started = count[0], time.perf_counter()
        time.sleep(0.1)
        alone = (count[0] - before) / (time.perf_counter() - started)  # counts a second
        before, started = count[0], time.perf_counter()
        step(xv, wv)
        seconds = time.perf_counter() - started
        during = count[0] - before
    finally:
        stop.set()
        spinner.join()
    # released: the spinner shares the cores with the op's threads (and,
    # on a loaded machine, with other processes) for the whole call: 19 % of
    # its rate alone on the two loaded cores here; held: at most about 10 ms
    # of the call, a few per cent
    assert during > 0.1 * alone * seconds, (during, alone, seconds)


@pytest.mark.parametrize("relu", [False, True])
def test_scale_shift_matches_plain_theano(relu):
    x, scale, shift, dy = T.tensor4(), T.vector(), T.vector(), T.tensor4()
    plain = x * scale.dimshuffle("x", 0, "x", "x") + shift.dimshuffle("x", 0, "x", "x")
    plain = T.nnet.relu(plain) if relu else plain
    ours = ops.ScaleShift(relu)(x, scale, shift)
    f = theano.function([x, scale, shift, dy], [plain, ours]
                        + T.grad((plain * dy).sum(), [x, scale, shift])
                        + T.grad((ours * dy).sum(), [x, scale, shift]))
    shape = (5, 7, 4, 3)
    out = f(RNG.normal(size=shape).astype(np.float32), RNG.normal(size=7).astype(np.float32),
            RNG.normal(size=7).astype(np.float32), RNG.normal(size=shape).astype(np.float32))
    close(out[1], out[0], 1e-6)
    for ours_grad, plain_grad in pairs(out[5:8], out[2:5]):
        close(ours_grad, plain_grad, 1e-5)


C_OPS = [ops.Conv2D(1), ops.Conv2DGrad(2), ops.BatchNormTrain(1e-5, True),
         ops.BatchNormTrainGrad(1e-5, False), ops.ScaleShift(True)]


def test_every_c_file_is_versioned_and_a_changed_byte_changes_the_version(tmp_path):
    """Theano reuses compiled code by its version: a digest of what the op
    compiles, so that editing a C file can never leave a stale module."""
    files = sorted(os.listdir(ops.C_CODE))
    assert set(files) == {name for op in C_OPS for name in op.C_FILES}
    for op in C_OPS:
        assert op.c_code_cache_version() == op.c_code_version_in(ops.C_CODE)
        # all the op's support code is versioned: Theano's headers and its files
        assert op.c_support_code() == op._headers() + [
            open(os.path.join(ops.C_CODE, name), encoding="utf-8").read() for name in op.C_FILES]
    versions = {op: op.c_code_version_in(ops.C_CODE) for op in C_OPS}
    assert len(set(versions.values())) == len(C_OPS)
    for name in files:
        changed = tmp_path / ("one-byte-changed-in-" + name)
        shutil.copytree(ops.C_CODE, changed)
        data = bytearray((changed / name).read_bytes())
        data[len(data) // 2] ^= 1
        (changed / name).write_bytes(bytes(data))
        for op in C_OPS:
            assert (op.c_code_version_in(str(changed)) != versions[op]) == (name in op.C_FILES)


def test_ops_refuse_per_channel_vectors_of_the_wrong_length():
    x, v, w, dy = T.tensor4(), T.vector(), T.vector(), T.tensor4()
    xv = RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)
    three, two = np.ones(3, np.float32), np.ones(2, np.float32)
    with pytest.raises(ValueError, match="gamma: needs one value per channel"):
        theano.function([x, v, w], ops.BatchNormTrain(1e-5, True)(x, v, w))(xv, two, three)
    with pytest.raises(ValueError, match="shift: needs one value per channel"):
        theano.function([x, v, w], ops.ScaleShift(True)(x, v, w))(xv, three, two)
    grad = theano.function([x, dy, v, w], ops.BatchNormTrainGrad(1e-5, False)(x, dy, v, w, v, w))
    with pytest.raises(ValueError, match="output gradient's shape"):
        grad(xv, xv[:1], three, three)


THREAD_SCRIPT = """
import sys
import numpy as np
import engine
import theano
import theano.tensor as T
from engine import ops
rng = np.random.default_rng(0)
x, w, dy, g, b = T.tensor4(), T.tensor4(), T.tensor4(), T.vector(), T.vector()
outputs = []
for stride, k in ((2, 3), (2, 1), (1, 3), (1, 1)):
    f = theano.function([x, w, dy], [ops.Conv2D(stride)(x, w)]
                        + list(ops.Conv2DGrad(stride)(x, w, dy)))
    size = 16 // stride
    outputs += f(rng.normal(size=(20, 13, 16, 16)).astype("float32"),
                 rng.normal(size=(21, 13, k, k)).astype("float32"),
                 rng.normal(size=(20, 21, size, size)).astype("float32"))
f = theano.function([x, g, b, dy], T.grad((ops.BatchNormTrain(1e-5, True)(x, g, b)[0] * dy).sum(),
                                          [x, g, b]))
outputs += f(rng.normal(size=(20, 13, 8, 8)).astype("float32"),
             rng.normal(size=13).astype("float32"), rng.normal(size=13).astype("float32"),
             rng.normal(size=(20, 13, 8, 8)).astype("float32"))
np.savez(sys.argv[1], *outputs)
"""


@pytest.mark.slow  # two processes (3 s)
def test_results_do_not_depend_on_the_number_of_threads(tmp_path):
    """Work is cut by the shapes alone: one thread and three give the same
    bits (the resume test relies on it for whole training steps)."""
    results = outputs_per_thread_count(THREAD_SCRIPT, tmp_path, ("1", "3"))
    assert len(results[0]) == 15
    for one, three in pairs(*results):
        np.testing.assert_array_equal(one, three)
