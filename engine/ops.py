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
# F(2x2, 3x3) or F(4x4, 3x3) for the stride-1 3x3 ones where it pays, see
# winograd.c's pw_pays), "direct" the direct kernels (im2col + sgemm for the
# kernels and strides they do not take), "winograd" / "winograd4" Winograd's
# 2x2 / 4x4 tiles wherever they apply (stride 1, 3x3), direct elsewhere;
# "-dx" and "-dw" for one gradient only (to time them apart); "im2col" the
# 1x1 and 3x3 stride-2 convolutions by im2col + sgemm instead of the direct
# kernels (conv2d.c's pr_im2col_pays chooses per part in "auto"); "gemm1x1"
# the 1x1 stride-1 convolutions as one sgemm per image (pr_gemm_pays).
ALGOS = {"auto": 0, "direct": 1, "winograd": 2, "winograd-dx": 3, "winograd-dw": 4,
         "winograd4": 5, "winograd4-dx": 6, "winograd4-dw": 7, "im2col": 8, "im2col-dx": 9,
         "im2col-dw": 10, "gemm1x1": 11}
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


# What a convolution may read its input through (engine/fusion.py puts it
# there): a batch normalisation with given statistics, with or without its
# ReLU. Its inputs follow the convolution's: mean, inv_std, gamma, beta (the
# scale gamma * inv_std is computed as BatchNormTrain computes it).
PROLOGUES = (None, "bn", "bn_relu")


def _check_prologue(prologue):
    if prologue not in PROLOGUES:
        raise ValueError("prologue must be one of %s, got %r" % (PROLOGUES, prologue))
    return prologue


def _bn_inputs(op, bn):
    """The prologue's four per-channel inputs, checked against the op's props."""
    bn = [T.as_tensor_variable(v) for v in bn]
    if (len(bn) == 4) != (op.prologue is not None):
        raise TypeError("%s with prologue %r takes %s batch-norm inputs, got %d"
                        % (type(op).__name__, op.prologue, "4" if op.prologue else "no", len(bn)))
    _check_float32(*bn)
    if any(v.ndim != 1 for v in bn):
        raise TypeError("the batch-norm inputs are vectors of one value per channel")
    return bn


class Conv2D(_ConvCOp):
    """Cross-correlation with 'same' zero padding (``filter_size // 2``) and a
    stride, of (batch, channels, rows, cols) images with (out, in, k, k)
    kernels: Theano's ``conv2d(..., border_mode='half', filter_flip=False)``.

    Fused forms (made by engine/fusion.py from the separate ops, with their
    bits): ``prologue`` 'bn' or 'bn_relu' reads the images through a batch
    normalisation with the statistics given as four more inputs (mean,
    inv_std, gamma, beta; + ReLU), as ``BatchNormTrain``/``ScaleShift`` would
    have written them; ``residual`` adds one more input, an array shaped as
    the output, to the result."""

    __props__ = ("stride", "chunk_bytes", "algo", "prologue", "residual")
    C_CALL = """
    if (pr_conv2d(%(x)s, %(w)s, %(mean)s, %(inv_std)s, %(gamma)s, %(beta)s, %(addend)s, &%(y)s,
                  %(stride)d, %(chunk_bytes)dL, %(algo)d, %(relu)d)) {
        %(fail)s
    }
    """

    def __init__(self, stride=1, chunk_bytes=CHUNK_BYTES, algo=None, prologue=None,
                 residual=False):
        super().__init__(stride, chunk_bytes, algo)
        self.prologue = _check_prologue(prologue)
        self.residual = bool(residual)

    def make_node(self, x, w, *more):
        x, w = T.as_tensor_variable(x), T.as_tensor_variable(w)
        _check_float32(x, w)
        if x.ndim != 4 or w.ndim != 4:
            raise TypeError("Conv2D takes 4-d images and kernels")
        more = list(more)
        addend = [T.as_tensor_variable(more.pop())] if self.residual and more else []
        if self.residual and not addend:
            raise TypeError("Conv2D with residual=True takes the array to add as its last input")
        bn = _bn_inputs(self, more)
        out = T.TensorType("float32", (x.broadcastable[0], w.broadcastable[0], False, False))()
        if addend:
            _check_float32(*addend)
            if addend[0].type != out.type:
                raise TypeError("Conv2D: the residual %s is not of the output's type %s"
                                % (addend[0].type, out.type))
        return Apply(self, [x, w] + bn + addend, [out])

    def infer_shape(self, node, shapes):
        (b, _, h, w_), (m, _, _, _) = shapes[:2]
        s = self.stride
        return [(b, m, (h + s - 1) // s, (w_ + s - 1) // s)]

    def grad(self, inputs, output_grads):
        if self.prologue or self.residual:
            raise NotImplementedError("fused convolutions exist only in compiled graphs, "
                                      "after the gradients are taken")
        x, w = inputs
        dx, dw = Conv2DGrad(self.stride, self.chunk_bytes, self.algo)(x, w, output_grads[0])
        return [dx, dw]

    def c_code(self, node, name, inputs, outputs, sub):
        bn = inputs[2:6] if self.prologue else ["NULL"] * 4
        return self.C_CALL % {"x": inputs[0], "w": inputs[1], "mean": bn[0], "inv_std": bn[1],
                              "gamma": bn[2], "beta": bn[3],
                              "addend": inputs[-1] if self.residual else "NULL",
                              "y": outputs[0], "stride": self.stride,
                              "chunk_bytes": self.chunk_bytes, "algo": ALGOS[self.algo],
                              "relu": int(self.prologue == "bn_relu"), "fail": sub["fail"]}


class Conv2DGrad(_ConvCOp):
    """Gradients of ``Conv2D`` with respect to the images and the kernels,
    each chosen as ``Conv2D``'s ``algo`` says (the rest in one direct pass).

    Fused forms: ``prologue`` as ``Conv2D``'s (the kernel gradient needs the
    normalised images); ``bn_grad`` (with a prologue) also does the first
    half of that batch normalisation's gradient: the input gradient comes out
    masked where the ReLU clamped, followed by two more outputs, the sums over
    the batch of it and of it times the normalised input per channel
    (float64), which ``BatchNormGradApply`` finishes; ``dx_residual`` (with
    ``bn_grad``) takes one more input, added to the input gradient before
    that (the gradient of the batch norm's output through its other
    readers)."""

    __props__ = ("stride", "chunk_bytes", "algo", "prologue", "bn_grad", "dx_residual")
    C_CALL = """
    if (pr_conv2d_grad(%(x)s, %(w)s, %(dy)s, %(mean)s, %(inv_std)s, %(gamma)s, %(beta)s,
                       %(dx_addend)s, &%(dx)s, &%(dw)s, %(sum_g)s, %(sum_gx)s, %(stride)d,
                       %(chunk_bytes)dL, %(algo)d, %(relu)d)) {
        %(fail)s
    }
    """

    def __init__(self, stride=1, chunk_bytes=CHUNK_BYTES, algo=None, prologue=None,
                 bn_grad=False, dx_residual=False):
        super().__init__(stride, chunk_bytes, algo)
        self.prologue = _check_prologue(prologue)
        self.bn_grad = bool(bn_grad)
        self.dx_residual = bool(dx_residual)
        if self.bn_grad and not self.prologue:
            raise ValueError("bn_grad needs the batch norm's inputs: a prologue")
        if self.dx_residual and not self.bn_grad:
            raise ValueError("dx_residual adds to the batch norm's output gradient: bn_grad")

    def make_node(self, x, w, dy, *more):
        x, w, dy = (T.as_tensor_variable(v) for v in (x, w, dy))
        _check_float32(x, w, dy)
        more = list(more)
        addend = [T.as_tensor_variable(more.pop())] if self.dx_residual and more else []
        if self.dx_residual and not addend:
            raise TypeError("Conv2DGrad with dx_residual=True takes the array to add last")
        bn = _bn_inputs(self, more)
        if addend:
            _check_float32(*addend)
            if addend[0].type != x.type:
                raise TypeError("Conv2DGrad: the residual %s is not of the input's type %s"
                                % (addend[0].type, x.type))
        outputs = [x.type(), w.type()]
        if self.bn_grad:
            outputs += [T.dvector(), T.dvector()]
        return Apply(self, [x, w, dy] + bn + addend, outputs)

    def infer_shape(self, node, shapes):
        channels = (shapes[0][1],)
        return [shapes[0], shapes[1]] + ([channels, channels] if self.bn_grad else [])

    def c_code(self, node, name, inputs, outputs, sub):
        bn = inputs[3:7] if self.prologue else ["NULL"] * 4
        sums = ["&" + outputs[2], "&" + outputs[3]] if self.bn_grad else ["NULL", "NULL"]
        return self.C_CALL % {"x": inputs[0], "w": inputs[1], "dy": inputs[2], "mean": bn[0],
                              "inv_std": bn[1], "gamma": bn[2], "beta": bn[3],
                              "dx_addend": inputs[7] if self.dx_residual else "NULL",
                              "dx": outputs[0], "dw": outputs[1], "sum_g": sums[0],
                              "sum_gx": sums[1], "stride": self.stride,
                              "chunk_bytes": self.chunk_bytes, "algo": ALGOS[self.algo],
                              "relu": int(self.prologue == "bn_relu"), "fail": sub["fail"]}


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


class BatchNormStats(_COp):
    """The batch statistics of ``BatchNormTrain`` alone (the same bits): mean,
    ``1 / sqrt(var + epsilon)`` and the biased variance per channel, for a
    graph where convolutions read the input through the normalisation
    (engine/fusion.py) and nothing needs the normalised array itself."""

    __props__ = ("epsilon",)
    C_FILES = ("support.c", "batchnorm.c")
    C_CALL = """
    if (pr_batchnorm_stats(%(x)s, &%(mean)s, &%(inv_std)s, &%(var)s, %(epsilon)s)) {
        %(fail)s
    }
    """

    def __init__(self, epsilon):
        self.epsilon = float(epsilon)

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        _check_float32(x)
        vector = T.TensorType("float32", (False,))
        return Apply(self, [x], [vector(), vector(), vector()])

    def infer_shape(self, node, shapes):
        channels = (shapes[0][1],)
        return [channels, channels, channels]

    def c_code(self, node, name, inputs, outputs, sub):
        (x,), (mean, inv_std, var) = inputs, outputs
        return self.C_CALL % {"x": x, "mean": mean, "inv_std": inv_std, "var": var,
                              "epsilon": repr(self.epsilon), "fail": sub["fail"]}


class BatchNormGradApply(_COp):
    """The second half of ``BatchNormTrainGrad``, after a fused
    ``Conv2DGrad(bn_grad=True)`` did the first: the input gradient from the
    masked output gradient ``g`` and its sums; ``residual`` adds one more
    input (the gradient arriving through a residual unit's shortcut) as it
    writes. Inputs: the batch norm's input, g, gamma, mean, inv_std, the two
    float64 sums (and the addend); outputs those of ``BatchNormTrainGrad``."""

    __props__ = ("residual",)
    C_FILES = ("support.c", "batchnorm.c")
    C_CALL = """
    if (pr_batchnorm_grad_apply(%(x)s, %(g)s, %(gamma)s, %(mean)s, %(inv_std)s, %(sum_g)s,
                                %(sum_gx)s, %(addend)s, &%(dx)s, &%(dgamma)s, &%(dbeta)s)) {
        %(fail)s
    }
    """

    def __init__(self, residual=False):
        self.residual = bool(residual)

    def make_node(self, x, g, gamma, mean, inv_std, sum_g, sum_gx, *addend):
        args = [T.as_tensor_variable(v) for v in (x, g, gamma, mean, inv_std)]
        sums = [T.as_tensor_variable(v) for v in (sum_g, sum_gx)]
        addend = [T.as_tensor_variable(v) for v in addend]
        if len(addend) != int(self.residual):
            raise TypeError("BatchNormGradApply(residual=%s) takes %d addend(s), got %d"
                            % (self.residual, int(self.residual), len(addend)))
        _check_float32(*(args + addend))
        if any(v.dtype != "float64" or v.ndim != 1 for v in sums):
            raise TypeError("the sums are float64 vectors (Conv2DGrad's bn_grad outputs)")
        if addend and addend[0].type != args[0].type:
            raise TypeError("BatchNormGradApply: the residual %s is not of the input's type %s"
                            % (addend[0].type, args[0].type))
        return Apply(self, args + sums + addend, [args[0].type(), args[2].type(), args[2].type()])

    def infer_shape(self, node, shapes):
        return [shapes[0], shapes[2], shapes[2]]

    def c_code(self, node, name, inputs, outputs, sub):
        (x, g, gamma, mean, inv_std, sum_g, sum_gx), more = inputs[:7], inputs[7:]
        dx, dgamma, dbeta = outputs
        return self.C_CALL % {"x": x, "g": g, "gamma": gamma, "mean": mean,
                              "inv_std": inv_std, "sum_g": sum_g, "sum_gx": sum_gx,
                              "addend": more[0] if more else "NULL", "dx": dx,
                              "dgamma": dgamma, "dbeta": dbeta, "fail": sub["fail"]}


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
