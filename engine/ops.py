"""Theano Ops in C for the two operations that dominate a pre-activation ResNet
on the CPU: the convolution and batch normalisation + ReLU.

Why our own: Theano 1.0's CPU convolution (CorrMM) forces BLAS to one thread
and, unless ``openmp`` is on, walks the batch one image at a time with a
single-threaded sgemm of ``out_channels x pixels`` (16 x 1024 in stage 1, 64 x
64 in stage 3: far too small for BLAS to be efficient), and batch
normalisation written with Theano's tensor operations makes about a dozen
passes over every activation, its reductions accumulating in float64 through
casts. Here:

- ``Conv2D`` (forward) and ``Conv2DGrad`` (both gradients) run direct,
  register-tiled kernels for stride 1 (3x3 and 1x1: nearly all the FLOPs) on
  zero-padded copies of the images, and im2col + single-threaded sgemm in
  cache-sized chunks of images for the few stride-2 convolutions; all cores
  through OpenMP.
- ``BatchNormTrain`` and ``BatchNormTrainGrad`` compute batch statistics,
  normalisation, scale, shift and an optional ReLU in two passes forward and
  two backward, one channel per thread, with float partial sums in vector
  lanes combined in doubles. The variance comes from the deviations from a
  mean (each image's values get a second look while they are in the L1
  cache; the images' statistics are combined pairwise), never from
  ``mean(x**2) - mean**2``: it holds for any mean.

Every result is the same, bit for bit, for any number of threads: work is cut
by the shapes alone and partial sums are added in a fixed order. Tests compare
each op with Theano's stock ``conv2d`` (CorrMM) and with batch normalisation
written in plain Theano.
Only float32 (the project's floatX) is implemented.

The C is in ``c_code/`` (Theano's own layout, as ``theano/tensor/nnet/corr.py``
with ``c_code/corr_gemm.c``): one function per op there, which the op's
``c_code`` calls with its Theano variables. Theano reuses compiled code by an
op's ``c_code_cache_version``: here a digest of the C files, the Theano
headers and the call template the op puts into its module
(``c_code_version``), so editing any of them recompiles it; the values filled
into the template are the op's ``__props__``, which Theano keys on itself.
"""
from . import compat  # noqa: F401  (configures Theano before it is imported)

import functools
import hashlib
import os

import theano.tensor as T
from theano import Apply, Op
from theano.gradient import DisconnectedType
from theano.tensor import blas_headers
from theano.tensor.blas import ldflags

# Target size of one thread's im2col buffer: small enough to stay in its L2
# cache (1 MB per core on the development machine), large enough that one
# sgemm call covers thousands of columns.
CHUNK_BYTES = 1 << 20

C_CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c_code")


@functools.lru_cache(maxsize=None)
def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def c_code_version(folder, names, extra=()):
    """A compiled-code version for the C files ``names`` in ``folder`` and the
    strings ``extra`` (the rest of the text that goes into the module): the
    SHA-256 of all of them, as a tuple of four 64-bit ints. Any change to any
    of them changes it, so Theano can never load code compiled from other
    sources. Reads each file once per process, as ``c_support_code`` does:
    the version always describes the code that is compiled."""
    digest = hashlib.sha256()
    for text in [name + "\n" + _read(os.path.join(folder, name)) for name in names] + list(extra):
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    hexdigest = digest.hexdigest()
    return tuple(int(hexdigest[i:i + 16], 16) for i in range(0, 64, 16))


class _COp(Op):
    """Shared C set-up: BLAS from Theano's ldflags, OpenMP, and the op's C
    files (``C_FILES``, in this order, after Theano's ``_headers()``). The
    op's ``c_code`` fills its template ``C_CALL`` with named keys."""

    C_FILES = ("support.c",)
    C_CALL = ""

    def _headers(self):
        """Theano's C declarations the C files need before them."""
        return [blas_headers.blas_header_text()]

    def c_support_code(self):
        return self._headers() + [_read(os.path.join(C_CODE, name)) for name in self.C_FILES]

    def c_libraries(self):
        return ldflags()

    def c_lib_dirs(self):
        return ldflags(libs=False, libs_dir=True)

    def c_compile_args(self):
        return ldflags(libs=False, flags=True) + ["-fopenmp", "-O3"]

    def c_headers(self):
        return ["<omp.h>", "<math.h>", "<string.h>"]

    def c_code_cache_version(self):
        return self.c_code_version_in(C_CODE)

    def c_code_version_in(self, folder):
        """The version of this op's code were its C files those in ``folder``."""
        # CHUNK_BYTES reaches the code only as the ops' chunk_bytes, which
        # Theano keys on anyway (its key holds each op, compared by __props__).
        return c_code_version(folder, self.C_FILES,
                              self._headers() + [self.C_CALL, "CHUNK_BYTES=%d" % CHUNK_BYTES])


def _check_float32(*variables):
    for v in variables:
        if v.dtype != "float32":
            raise TypeError("ops are implemented for float32 only, got %s" % v.dtype)


# =============================================================================
# Convolution


# How a convolution is computed: "auto" chooses by the shapes (Winograd
# F(2x2, 3x3) for the stride-1 3x3 ones where it pays, see winograd.c's
# pw_pays), "direct" the direct kernels (im2col + sgemm for stride 2),
# "winograd" Winograd wherever it applies (stride 1, 3x3), direct elsewhere;
# "winograd-dx" and "winograd-dw" for one gradient only (to time them apart).
ALGOS = {"auto": 0, "direct": 1, "winograd": 2, "winograd-dx": 3, "winograd-dw": 4}
# What ops built without an algo use (CrossCorrelation2DLayer builds them so): benchmarks
# set it to time whole networks with the direct kernels alone.
DEFAULT_ALGO = "auto"


class _ConvCOp(_COp):
    C_FILES = ("support.c", "conv2d.c", "winograd.c")

    def __init__(self, stride=1, chunk_bytes=CHUNK_BYTES, algo=None):
        algo = DEFAULT_ALGO if algo is None else algo
        if algo not in ALGOS:
            raise ValueError("algo must be one of %s, got %r" % (sorted(ALGOS), algo))
        self.stride = int(stride)
        self.chunk_bytes = int(chunk_bytes)
        self.algo = algo

    def _headers(self):
        return super()._headers() + [blas_headers.openblas_threads_text()]


class Conv2D(_ConvCOp):
    """Cross-correlation with 'same' zero padding (``filter_size // 2``) and a
    stride, of (batch, channels, rows, cols) images with (out, in, k, k)
    kernels: Theano's ``conv2d(..., border_mode='half', filter_flip=False)``."""

    __props__ = ("stride", "chunk_bytes", "algo")
    C_CALL = """
    if (pr_conv2d(%(x)s, %(w)s, &%(y)s, %(stride)d, %(chunk_bytes)dL, %(algo)d)) {
        %(fail)s
    }
    """

    def make_node(self, x, w):
        x, w = T.as_tensor_variable(x), T.as_tensor_variable(w)
        _check_float32(x, w)
        if x.ndim != 4 or w.ndim != 4:
            raise TypeError("Conv2D takes 4-d images and kernels")
        out = T.TensorType("float32", (x.broadcastable[0], w.broadcastable[0], False, False))()
        return Apply(self, [x, w], [out])

    def infer_shape(self, node, shapes):
        (b, _, h, w_), (m, _, _, _) = shapes
        s = self.stride
        return [(b, m, (h + s - 1) // s, (w_ + s - 1) // s)]

    def grad(self, inputs, output_grads):
        x, w = inputs
        dx, dw = Conv2DGrad(self.stride, self.chunk_bytes, self.algo)(x, w, output_grads[0])
        return [dx, dw]

    def c_code(self, node, name, inputs, outputs, sub):
        (x, w), (y,) = inputs, outputs
        return self.C_CALL % {"x": x, "w": w, "y": y, "stride": self.stride,
                              "chunk_bytes": self.chunk_bytes, "algo": ALGOS[self.algo],
                              "fail": sub["fail"]}


class Conv2DGrad(_ConvCOp):
    """Gradients of ``Conv2D`` with respect to the images and the kernels,
    each chosen as ``Conv2D``'s ``algo`` says (the rest in one direct pass)."""

    __props__ = ("stride", "chunk_bytes", "algo")
    C_CALL = """
    if (pr_conv2d_grad(%(x)s, %(w)s, %(dy)s, &%(dx)s, &%(dw)s, %(stride)d, %(chunk_bytes)dL,
                       %(algo)d)) {
        %(fail)s
    }
    """

    def make_node(self, x, w, dy):
        x, w, dy = (T.as_tensor_variable(v) for v in (x, w, dy))
        _check_float32(x, w, dy)
        return Apply(self, [x, w, dy], [x.type(), w.type()])

    def infer_shape(self, node, shapes):
        return [shapes[0], shapes[1]]

    def c_code(self, node, name, inputs, outputs, sub):
        (x, w, dy), (dx, dw) = inputs, outputs
        return self.C_CALL % {"x": x, "w": w, "dy": dy, "dx": dx, "dw": dw,
                              "stride": self.stride, "chunk_bytes": self.chunk_bytes,
                              "algo": ALGOS[self.algo], "fail": sub["fail"]}


def conv2d_covers(filter_size, stride):
    """Whether ``Conv2D`` computes this kernel: its direct kernels (stride 1)
    stop at 3x3 (it refuses larger ones), im2col (stride > 1) takes any."""
    return stride > 1 or filter_size <= 3


# =============================================================================
# Batch normalisation (+ ReLU) in training mode


class BatchNormTrain(_COp):
    """Normalise each channel with its batch mean and variance, then scale by
    gamma, shift by beta and (``relu=True``) clamp at zero.

    Outputs: the result, and the batch mean, ``1 / sqrt(var + epsilon)`` and
    the (biased) variance per channel, for the running averages. The
    variance is the mean squared deviation from the mean (each image's part
    of a channel in two passes, the parts combined with Chan et al.'s
    pairwise update), never ``mean(x**2) - mean**2``, which cancels when a
    channel's mean is large next to its spread.
    """

    __props__ = ("epsilon", "relu")
    C_FILES = ("support.c", "batchnorm.c")
    C_CALL = """
    if (pr_batchnorm_train(%(x)s, %(gamma)s, %(beta)s, &%(y)s, &%(mean)s, &%(inv_std)s,
                           &%(var)s, %(epsilon)s, %(relu)d)) {
        %(fail)s
    }
    """

    def __init__(self, epsilon, relu):
        self.epsilon = float(epsilon)
        self.relu = bool(relu)

    def make_node(self, x, gamma, beta):
        x, gamma, beta = (T.as_tensor_variable(v) for v in (x, gamma, beta))
        _check_float32(x, gamma, beta)
        vector = T.TensorType("float32", (False,))
        return Apply(self, [x, gamma, beta], [x.type(), vector(), vector(), vector()])

    def infer_shape(self, node, shapes):
        channels = (shapes[0][1],)
        return [shapes[0], channels, channels, channels]

    def grad(self, inputs, output_grads):
        x, gamma, beta = inputs
        dy = output_grads[0]
        if any(not isinstance(g.type, DisconnectedType) for g in output_grads[1:]):
            raise NotImplementedError("the batch statistics feed only the running averages")
        if isinstance(dy.type, DisconnectedType):
            return [DisconnectedType()() for _ in inputs]
        _, mean, inv_std, _ = self(x, gamma, beta)
        return BatchNormTrainGrad(self.epsilon, self.relu)(x, dy, gamma, beta, mean, inv_std)

    def connection_pattern(self, node):
        return [[True, True, True, True]] * 3

    def c_code(self, node, name, inputs, outputs, sub):
        (x, gamma, beta), (y, mean, inv_std, var) = inputs, outputs
        return self.C_CALL % {"x": x, "gamma": gamma, "beta": beta, "y": y, "mean": mean,
                              "inv_std": inv_std, "var": var, "epsilon": repr(self.epsilon),
                              "relu": int(self.relu), "fail": sub["fail"]}


class BatchNormTrainGrad(_COp):
    """Gradients of ``BatchNormTrain`` (its first output) with respect to the
    input, gamma and beta."""

    __props__ = ("epsilon", "relu")
    C_FILES = ("support.c", "batchnorm.c")
    C_CALL = """
    if (pr_batchnorm_train_grad(%(x)s, %(dy)s, %(gamma)s, %(beta)s, %(mean)s, %(inv_std)s,
                                &%(dx)s, &%(dgamma)s, &%(dbeta)s, %(relu)d)) {
        %(fail)s
    }
    """

    def __init__(self, epsilon, relu):
        self.epsilon = float(epsilon)
        self.relu = bool(relu)

    def make_node(self, x, dy, gamma, beta, mean, inv_std):
        args = [T.as_tensor_variable(v) for v in (x, dy, gamma, beta, mean, inv_std)]
        _check_float32(*args)
        return Apply(self, args, [args[0].type(), args[2].type(), args[3].type()])

    def infer_shape(self, node, shapes):
        return [shapes[0], shapes[2], shapes[3]]

    def c_code(self, node, name, inputs, outputs, sub):
        (x, dy, gamma, beta, mean, inv_std), (dx, dgamma, dbeta) = inputs, outputs
        return self.C_CALL % {"x": x, "dy": dy, "gamma": gamma, "beta": beta, "mean": mean,
                              "inv_std": inv_std, "dx": dx, "dgamma": dgamma, "dbeta": dbeta,
                              "relu": int(self.relu), "fail": sub["fail"]}


# =============================================================================
# Batch normalisation (+ ReLU) with given statistics: a per-channel affine map


class ScaleShift(_COp):
    """``(x - mean[c]) * scale[c] + shift[c]`` per channel, then (``relu=True``)
    clamped at zero: batch normalisation with running averages, ``scale =
    gamma * inv_std`` and ``shift = beta`` (Lasagne's formula; the mean is
    subtracted first, so a mean that is large next to the spread costs no
    precision). ``mean`` may be left out: ``x * scale[c] + shift[c]``. One
    parallel pass (Theano's own elementwise loop runs on one core)."""

    __props__ = ("relu",)
    C_FILES = ("support.c", "scale_shift.c")
    C_CALL = """
    if (pr_scale_shift(%(x)s, %(mean)s, %(scale)s, %(shift)s, &%(y)s, %(relu)d)) {
        %(fail)s
    }
    """

    def __init__(self, relu):
        self.relu = bool(relu)

    def make_node(self, x, scale, shift, mean=None):
        x, scale, shift = (T.as_tensor_variable(v) for v in (x, scale, shift))
        mean = T.zeros_like(scale) if mean is None else T.as_tensor_variable(mean)
        _check_float32(x, scale, shift, mean)
        return Apply(self, [x, scale, shift, mean], [x.type()])

    def infer_shape(self, node, shapes):
        return [shapes[0]]

    def grad(self, inputs, output_grads):
        x, scale, shift, mean = inputs
        (dy,) = output_grads
        if self.relu:
            dy = dy * T.gt(self(x, scale, shift, mean), 0)
        axes = (0, 2, 3)

        def channel(v):
            return v.dimshuffle("x", 0, "x", "x")
        dy_sum = dy.sum(axes)
        return [dy * channel(scale), (dy * (x - channel(mean))).sum(axes), dy_sum,
                -dy_sum * scale]

    def c_code(self, node, name, inputs, outputs, sub):
        (x, scale, shift, mean), (y,) = inputs, outputs
        return self.C_CALL % {"x": x, "mean": mean, "scale": scale, "shift": shift, "y": y,
                              "relu": int(self.relu), "fail": sub["fail"]}
