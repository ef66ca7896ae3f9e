"""The layers this project needs that Lasagne 0.1 lacks or builds differently.

They work unchanged on Lasagne 0.1 and master, so the networks are the same
graphs whichever Lasagne is installed. In training and inference they run the
C ops of ``engine.ops`` where those compute what is asked (float32, Theano
linked to OpenBLAS, and for batch norm per-channel statistics; set
``USE_C_OPS = False`` to compare), else the same formulas in plain Theano.

``CrossCorrelation2DLayer``
    A cross-correlation with 'same' zero padding, computed directly. Lasagne
    0.1's own ``Conv2DLayer`` flips its kernels (a true convolution; master
    flips by default too) and implements ``pad='same'`` as a 'full'
    convolution whose larger output is cropped afterwards. The old repository
    used cuDNN, which cross-correlates, so its published weights only give
    their accuracy in a cross-correlation. It takes Lasagne's keyword names
    (``pad``, ``flip_filters``, ``nonlinearity``, ``b``, ``untie_biases``)
    and refuses, with a ValueError, the values it does not compute; its
    defaults are this project's (same padding, no bias, no nonlinearity, no
    flip), which is why it is not called ``Conv2DLayer``.
``BatchNormLayer`` and ``batch_norm``
    Batch normalisation (Ioffe & Szegedy 2015) as Lasagne's development
    version defines it (the version the 2016 code used; Lasagne 0.1 has
    none): the same signature, parameters, tags and ``get_output`` keywords,
    and its ``batch_norm(layer)`` helper. Two documented extensions: Torch's
    running statistics (``running='var'``) and a ReLU fused into the
    normalisation (``nonlinearity=rectify``).
"""
from . import compat  # noqa: F401  (configures Theano before it is imported)

import numbers

import numpy as np

import theano
import theano.tensor as T
from lasagne import init
from lasagne.layers import Layer, NonlinearityLayer
from lasagne.nonlinearities import identity, rectify

from . import fusion  # noqa: F401  (registers the rewrites that fuse the ops)
from . import ops

USE_C_OPS = True


def c_ops_apply(*variables):
    """Whether the C ops of engine.ops (CPU, float32, OpenBLAS) can compute with
    these variables. On a GPU device Theano's own ops run (cuDNN)."""
    on_cpu = not theano.config.device.startswith(("cuda", "gpu", "opencl"))
    return (USE_C_OPS and on_cpu and "openblas" in theano.config.blas.ldflags
            and all(v.dtype == "float32" for v in variables))


def _square_size(value, what):
    """An int from an int or a pair of equal ints (Lasagne takes both)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError("%s must be one int or a pair of equal ints (square), got %r"
                             % (what, value))
        value = value[0]
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError("%s must be a positive int, got %r" % (what, value))
    return int(value)


class CrossCorrelation2DLayer(Layer):
    """CrossCorrelation2DLayer(incoming, num_filters, filter_size, stride=1,
    pad='same', untie_biases=False, W=lasagne.init.GlorotUniform(), b=None,
    nonlinearity=None, flip_filters=False, **kwargs)

    2D cross-correlation with 'same' zero padding (cuDNN's, and Lasagne's
    ``Conv2DDNNLayer(pad='same', flip_filters=False)``).

    Its output is ``nonlinearity(y + b)`` with ``y[n, m, i, j] = sum over
    c, u, v of W[m, c, u, v] * x_pad[n, c, s*i + u, s*j + v]``, where
    ``x_pad`` is the input with ``filter_size // 2`` zeros on every side and
    ``s`` is the stride: the kernels are not flipped, and the output has
    ``ceil(rows / stride)`` rows and ``ceil(cols / stride)`` columns.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, shape ``(batch, channels, rows, cols)``.
    num_filters : int
        Number of output channels.
    filter_size : int or (int, int)
        Side of the square, odd-sized kernel.
    stride : int or (int, int)
        Subsampling factor, the same in both spatial directions.
    pad : 'same' or int or (int, int)
        Only 'same' padding is computed: ``'same'``, or ``filter_size // 2``
        given as a number. Other values (Lasagne's default ``pad=0``,
        ``'valid'``, ``'full'``) raise a ValueError: use Lasagne's
        ``Conv2DLayer`` for them.
    untie_biases : False
        ``True`` (one bias per output position) raises a ValueError.
    W : initializer
        Kernel initializer, shape ``(num_filters, channels, size, size)``.
    b : initializer or None
        Bias initializer, one bias per output channel; ``None`` (the
        default, unlike Lasagne's ``Constant(0)``) for no bias: every
        convolution followed by batch normalisation, whose shift makes a bias
        redundant. Tagged ``regularizable=False``, as in Lasagne.
    nonlinearity : callable or None
        Applied to the output; ``None`` (the default, unlike Lasagne's
        ``rectify``) for none (``lasagne.nonlinearities.identity``).
    flip_filters : False
        The layer cross-correlates. ``True`` (Lasagne ``Conv2DLayer``'s
        default, a true convolution) raises a ValueError.
    **kwargs
        Passed to :class:`lasagne.layers.Layer` (e.g. ``name``).

    Notes
    -----
    Computed by ``engine.ops.Conv2D`` (stride 1 with kernels up to 3x3, and
    stride 2) where the C ops apply, else by Theano's
    ``conv2d(border_mode='half', filter_flip=False)``.
    """

    def __init__(self, incoming, num_filters, filter_size, stride=1, pad="same",
                 untie_biases=False, W=init.GlorotUniform(), b=None, nonlinearity=None,
                 flip_filters=False, **kwargs):
        super().__init__(incoming, **kwargs)
        filter_size = _square_size(filter_size, "filter_size")
        if filter_size % 2 != 1:
            raise ValueError("filter_size must be odd, got %d" % filter_size)
        same = filter_size // 2
        if not (pad == "same" or pad == same or pad == (same, same) or pad == [same, same]):
            raise ValueError(
                "%s pads 'same' only (filter_size // 2 = %d zeros on each side), got pad=%r; "
                "Lasagne's Conv2DLayer computes other paddings" % (type(self).__name__, same, pad))
        if flip_filters:
            raise ValueError(
                "%s computes a cross-correlation (flip_filters=False); flip_filters=True, a true "
                "convolution (Lasagne Conv2DLayer's default), is not implemented"
                % type(self).__name__)
        if untie_biases:
            raise ValueError("%s has one bias per output channel; untie_biases=True is not "
                             "implemented" % type(self).__name__)
        if nonlinearity is not None and not callable(nonlinearity):
            raise ValueError("nonlinearity must be callable or None, got %r" % (nonlinearity,))
        self.num_filters = num_filters
        self.filter_size = filter_size
        self.stride = _square_size(stride, "stride")
        self.pad = "same"
        self.flip_filters = False
        self.untie_biases = False
        self.nonlinearity = identity if nonlinearity is None else nonlinearity
        channels = self.input_shape[1]
        self.W = self.add_param(W, (num_filters, channels, filter_size, filter_size),
                                name="W")
        self.b = None if b is None else self.add_param(
            b, (num_filters,), name="b", regularizable=False)

    def get_output_shape_for(self, input_shape):
        def out(length):
            return None if length is None else (length + self.stride - 1) // self.stride
        return (input_shape[0], self.num_filters, out(input_shape[2]), out(input_shape[3]))

    def get_output_for(self, input, **kwargs):
        if c_ops_apply(input, self.W) and ops.conv2d_covers(self.filter_size, self.stride):
            output = ops.Conv2D(self.stride)(input, self.W)
        else:
            output = T.nnet.conv2d(input, self.W,
                                   input_shape=self.input_shape,
                                   filter_shape=self.W.get_value(borrow=True).shape,
                                   border_mode="half",
                                   subsample=(self.stride, self.stride),
                                   filter_flip=False)
        if self.b is not None:
            output = output + self.b.dimshuffle("x", 0, "x", "x")
        if self.nonlinearity is not identity:
            output = self.nonlinearity(output)
        return output


# Lasagne's default for the running inverse standard deviation; compared by
# identity to tell a value the caller gave from the default.
_INV_STD_DEFAULT = init.Constant(1)


def _normalised_axes(axes, ndim):
    if axes == "auto":
        return (0,) + tuple(range(2, ndim))
    if isinstance(axes, numbers.Integral):
        axes = (axes,)
    try:
        axes = tuple(axes)
    except TypeError:
        raise ValueError("axes must be 'auto', an int or a tuple of ints, got %r" % (axes,))
    result = []
    for axis in axes:
        if not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
            raise ValueError("axes: %r is not an axis of a %d-dimensional input" % (axis, ndim))
        result.append(int(axis) % ndim)
    if len(set(result)) != len(result):
        raise ValueError("axes: %r names an axis twice" % (axes,))
    return tuple(result)


class BatchNormLayer(Layer):
    """BatchNormLayer(incoming, axes='auto', epsilon=1e-4, alpha=0.1,
    beta=lasagne.init.Constant(0), gamma=lasagne.init.Constant(1),
    mean=lasagne.init.Constant(0), inv_std=lasagne.init.Constant(1),
    running='inv_std', var=None, nonlinearity=None, **kwargs)

    Batch normalisation [1]_, as Lasagne's development version defines it.

    Normalises its input over the ``axes``, then scales and shifts it with
    parameters that have one value per position of the remaining axes:

    .. math::
        y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\gamma + \\beta

    computed as ``(x - mean) * (gamma * inv_std) + beta``. In training,
    ``mean`` and ``inv_std = 1 / sqrt(var + epsilon)`` come from the batch
    (``var`` is the biased variance: the mean squared deviation) and
    exponential moving averages of them are kept; at inference the averages
    are used.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, or the expected input shape.
    axes : 'auto', int or tuple of int
        The axes to normalise over. ``'auto'``: all but the second, ``(0,) +
        (2, 3, ...)``: per channel after a convolution, per unit after a
        dense layer. Every axis not listed needs a known size.
    epsilon : scalar
        Added to the variance before its square root, to avoid dividing by
        zero.
    alpha : scalar
        Weight of the current batch in the moving averages:
        ``average = (1 - alpha) * average + alpha * batch_value`` (Torch
        calls it momentum; 0.1 in both).
    beta : initializer, Theano shared variable, numpy array or None
        The shift; ``None`` for none (no parameter). Trainable, not
        regularizable.
    gamma : initializer, Theano shared variable, numpy array or None
        The scale; ``None`` for none (no parameter). Trainable and
        regularizable (Lasagne's tags: an L2 penalty over regularizable
        parameters includes it).
    mean : initializer, Theano shared variable or numpy array
        The moving average of the batch mean.
    inv_std : initializer, Theano shared variable or numpy array
        The moving average of the batch's ``1 / sqrt(var + epsilon)``
        (``running='inv_std'`` only).
    running : {'inv_std', 'var'}
        Which spread statistic is averaged (this project's option).
        ``'inv_std'``: ``1 / sqrt(var + epsilon)``, as Lasagne does; the
        parameter is ``inv_std``. ``'var'``: the unbiased batch variance
        ``var * m / (m - 1)``, ``m`` the number of values normalised
        together, as Torch's ``(Spatial)BatchNormalization`` and cuDNN do [2]_;
        the parameter is ``var`` and inference uses ``1 / sqrt(var +
        epsilon)``. The papers' networks use ``'var'`` with ``epsilon=1e-5``
        (Torch's defaults), the old repository's ``'inv_std'`` with 1e-4
        (Lasagne's).
    var : initializer, Theano shared variable, numpy array or None
        The moving average of the unbiased variance (``running='var'``
        only); ``None``: ``Constant(1)``, as in Torch.
    nonlinearity : None or lasagne.nonlinearities.rectify
        This project's extension, not Lasagne's: ``rectify`` clamps the
        output at zero in the same pass as the normalisation, and its gradient
        in the same pass as the normalisation's (the pre-activation BN-ReLU
        of the networks, one layer instead of ``BatchNormLayer`` then
        ``NonlinearityLayer``). ``None`` (or ``identity``): no nonlinearity.
    **kwargs
        Passed to :class:`lasagne.layers.Layer` (e.g. ``name``).

    Notes
    -----
    ``lasagne.layers.get_output(..., deterministic=False)`` normalises with
    the batch statistics and updates the moving averages;
    ``deterministic=True`` normalises with the averages and leaves them.
    Two keywords of ``get_output`` override ``deterministic``:
    ``batch_norm_use_averages`` (normalise with the averages, True, or the
    batch statistics, False; default ``deterministic``) and
    ``batch_norm_update_averages`` (update the averages, True, or not,
    False; default ``not deterministic``). The averages are updated through
    the ``default_update`` of clones of the parameters, so every Theano
    function compiled from such an output updates them each time it runs.

    The parameters are registered in the order ``beta``, ``gamma``, ``mean``,
    ``inv_std`` (or ``var``); the two statistics are tagged
    ``trainable=False, regularizable=False, batch_norm_stat=True``. The
    layer's ``spread`` is its ``inv_std`` or ``var`` parameter.

    The C ops of ``engine.ops`` compute the normalisation where the statistics
    are per channel (the kept axes are just axis 1, of a 2- to 4-dimensional
    input) and the variables are float32; the plain Theano expression
    otherwise.

    References
    ----------
    .. [1] Ioffe, S. and Szegedy, C. (2015): Batch Normalization: Accelerating
           Deep Network Training by Reducing Internal Covariate Shift.
           http://arxiv.org/abs/1502.03167
    .. [2] torch/nn: BatchNormalization.lua and SpatialBatchNormalization.lua
           (``running_var``, updated with the unbiased variance); cuDNN's
           ``cudnnBatchNormalizationForwardTraining``.
    """

    def __init__(self, incoming, axes="auto", epsilon=1e-4, alpha=0.1,
                 beta=init.Constant(0), gamma=init.Constant(1),
                 mean=init.Constant(0), inv_std=_INV_STD_DEFAULT,
                 running="inv_std", var=None, nonlinearity=None, **kwargs):
        super().__init__(incoming, **kwargs)
        if running not in ("inv_std", "var"):
            raise ValueError("running must be 'inv_std' or 'var', got %r" % (running,))
        if running == "inv_std" and var is not None:
            raise ValueError("var= sets the moving average of the variance, which only "
                             "running='var' keeps")
        if running == "var" and inv_std is not _INV_STD_DEFAULT:
            raise ValueError("running='var' keeps the moving average of the variance: give its "
                             "initial value as var=, not inv_std=")
        if nonlinearity not in (None, identity, rectify):
            raise ValueError("nonlinearity must be None or lasagne.nonlinearities.rectify (fused "
                             "into the normalisation), got %r; for another one, add a "
                             "NonlinearityLayer (batch_norm() does)" % (nonlinearity,))
        self.axes = _normalised_axes(axes, len(self.input_shape))
        self.epsilon = epsilon
        self.alpha = alpha
        self.running = running
        self.relu = nonlinearity is rectify
        kept = [a for a in range(len(self.input_shape)) if a not in self.axes]
        missing = [a for a in kept if self.input_shape[a] is None]
        if missing:
            raise ValueError(
                "BatchNormLayer needs specified input sizes for all axes not normalized over: "
                "axis %s of the input shape %r is None (normalised over: axes %r)"
                % (", ".join(map(str, missing)), tuple(self.input_shape), self.axes))
        shape = tuple(self.input_shape[a] for a in kept)
        self.beta = None if beta is None else self.add_param(
            beta, shape, "beta", trainable=True, regularizable=False)
        self.gamma = None if gamma is None else self.add_param(
            gamma, shape, "gamma", trainable=True, regularizable=True)
        self.mean = self.add_param(mean, shape, "mean", trainable=False,
                                   regularizable=False, batch_norm_stat=True)
        if running == "inv_std":
            self.inv_std = self.add_param(inv_std, shape, "inv_std", trainable=False,
                                          regularizable=False, batch_norm_stat=True)
            self.spread = self.inv_std
        else:
            self.var = self.add_param(init.Constant(1) if var is None else var, shape, "var",
                                      trainable=False, regularizable=False, batch_norm_stat=True)
            self.spread = self.var

    def get_output_for(self, input, deterministic=False, batch_norm_use_averages=None,
                       batch_norm_update_averages=None, **kwargs):
        use_averages = (deterministic if batch_norm_use_averages is None
                        else batch_norm_use_averages)
        update_averages = (not deterministic if batch_norm_update_averages is None
                           else batch_norm_update_averages)
        kept = [a for a in range(input.ndim) if a not in self.axes]
        numbered = iter(range(len(kept)))
        pattern = ["x" if a in self.axes else next(numbered) for a in range(input.ndim)]

        def spread_out(v):
            """A parameter-shaped value broadcast over the normalised axes."""
            return v.dimshuffle(pattern)

        shape = self.mean.get_value(borrow=True).shape
        dtype = self.mean.dtype
        gamma = T.ones(shape, dtype) if self.gamma is None else self.gamma
        beta = T.zeros(shape, dtype) if self.beta is None else self.beta
        params = [p for p in (self.beta, self.gamma, self.mean, self.spread) if p is not None]
        # The C ops normalise (B, C, rows, cols) arrays per channel; two- and
        # three-dimensional inputs get broadcastable axes for them.
        fused = kept == [1] and 2 <= input.ndim <= 4 and c_ops_apply(input, *params)

        def to_4d(v):
            return v if v.ndim == 4 else v.dimshuffle(
                tuple(range(v.ndim)) + ("x",) * (4 - v.ndim))

        def from_4d(v):
            return v if input.ndim == 4 else v.dimshuffle(tuple(range(input.ndim)))

        if update_averages:
            # Clones share the parameters' storage; their default_update (set
            # below, from the batch statistics) makes every function compiled
            # from this output update the averages. Adding zero times them to
            # a value the output depends on puts them into the graph (Lasagne's
            # way): to gamma for batch statistics, to the mean for averages.
            running_mean = theano.clone(self.mean, share_inputs=False)
            running_spread = theano.clone(self.spread, share_inputs=False)
            carrier = 0 * (running_mean + running_spread)
        if not use_averages and update_averages:
            gamma = gamma + carrier

        if not use_averages or update_averages:
            if fused:
                normalised, batch_mean, batch_inv_std, batch_var = ops.BatchNormTrain(
                    self.epsilon, self.relu)(to_4d(input), gamma, beta)
                normalised = from_4d(normalised)
            else:
                batch_mean = input.mean(self.axes)
                batch_var = T.sqr(input - spread_out(batch_mean)).mean(self.axes)
                batch_inv_std = T.inv(T.sqrt(batch_var + self.epsilon))

        if update_averages:
            if self.running == "inv_std":
                batch_spread = batch_inv_std
            else:
                count = 1
                for a in self.axes:
                    count = count * input.shape[a]
                count = T.cast(count, batch_var.dtype)
                batch_spread = (batch_var, count)   # the unbiased variance, in _average
            running_mean.default_update = self._average(running_mean, batch_mean)
            running_spread.default_update = self._average(running_spread, batch_spread)

        if use_averages:
            mean = self.mean + carrier if update_averages else self.mean
            inv_std = (self.spread if self.running == "inv_std"
                       else T.inv(T.sqrt(self.spread + self.epsilon)))
            if fused:
                return from_4d(ops.ScaleShift(self.relu)(to_4d(input), gamma * inv_std, beta,
                                                         mean))
        elif fused:
            return normalised
        else:
            mean, inv_std = batch_mean, batch_inv_std
        output = (input - spread_out(mean)) * spread_out(gamma * inv_std) + spread_out(beta)
        return T.nnet.relu(output) if self.relu else output

    def _average(self, running, batch_value):
        """The moving average's next value, of the parameter's type:
        ``(1 - alpha) running + alpha batch_value``, where ``batch_value`` may be
        ``(batch_var, count)`` for ``batch_var * count / (count - 1)``. One
        element-wise node when alpha is a number: PreResNet-1001's 1,000 batch
        norms made a third of its training step's graph with these as tensor
        arithmetic, and Theano's optimiser time grows faster than the graph."""
        count = None
        if isinstance(batch_value, tuple):
            batch_value, count = batch_value
        if not isinstance(self.alpha, numbers.Number):
            if count is not None:
                batch_value = batch_value * count / (count - 1)
            value = (1 - self.alpha) * running + self.alpha * batch_value
            return T.patternbroadcast(T.cast(value, running.dtype), running.broadcastable)
        dtype = running.dtype
        r, b, c = [theano.scalar.get_scalar_type(dtype)() for _ in range(3)]
        keep = theano.scalar.constant(np.asarray(1 - self.alpha, dtype))
        alpha = theano.scalar.constant(np.asarray(self.alpha, dtype))
        if count is None:
            kernel = theano.scalar.Composite([r, b], [keep * r + alpha * b])
            inputs = [running, T.cast(batch_value, dtype)]
        else:
            kernel = theano.scalar.Composite([r, b, c], [keep * r + alpha * ((b * c) / (c - 1))])
            inputs = [running, T.cast(batch_value, dtype),
                      T.shape_padleft(T.cast(count, dtype), running.ndim)]
        value = T.Elemwise(kernel)(*inputs)
        return T.patternbroadcast(value, running.broadcastable)


def batch_norm(layer, **kwargs):
    """Batch-normalise the output of ``layer`` before its nonlinearity.

    Lasagne's ``batch_norm`` helper: removes the layer's bias (a batch
    normalisation's shift makes it redundant) and its nonlinearity, adds a
    :class:`BatchNormLayer` on top of it and, if the layer had a
    nonlinearity, a ``NonlinearityLayer`` applying it after the
    normalisation. This is how the 2016 code built its graphs
    (``batch_norm(Conv2DDNNLayer(..., nonlinearity=rectify))``).

    Parameters
    ----------
    layer : Layer
        The layer to normalise. Changed in place: its ``nonlinearity`` becomes
        ``identity`` and, if it has a bias ``b``, ``b`` becomes ``None`` and
        leaves its parameters.
    **kwargs
        Passed to :class:`BatchNormLayer`. Without a ``name``, the batch
        normalisation is named after the layer, ``<name>_bn`` (and the
        nonlinearity ``<name>_bn_nonlin``), when the layer has a name.

    Returns
    -------
    BatchNormLayer or NonlinearityLayer
        The layer to build on: the ``NonlinearityLayer`` if the wrapped layer
        had a nonlinearity attribute (even ``identity``), else the
        ``BatchNormLayer``.
    """
    nonlinearity = getattr(layer, "nonlinearity", None)
    if nonlinearity is not None:
        layer.nonlinearity = identity
    if getattr(layer, "b", None) is not None:
        del layer.params[layer.b]
        layer.b = None
    name = kwargs.pop("name", None)
    if not name:
        name = getattr(layer, "name", None) and layer.name + "_bn"
    layer = BatchNormLayer(layer, name=name, **kwargs)
    if nonlinearity is not None:
        layer = NonlinearityLayer(layer, nonlinearity, name=name and name + "_nonlin")
    return layer
