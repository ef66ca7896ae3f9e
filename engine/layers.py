"""The two layers this project needs that Lasagne 0.1 lacks or builds differently.

Both work unchanged on Lasagne master, so the networks are the same graphs
whichever Lasagne is installed. In training and inference they run the C ops
of ``engine.ops`` when they can (float32, Theano linked to OpenBLAS; set
``USE_C_OPS = False`` to compare), else the same computation in plain Theano.

``Conv2DLayer``
    A cross-correlation with 'same' zero padding, computed directly. Lasagne
    0.1's own ``Conv2DLayer`` flips its kernels (a true convolution; master
    flips by default too) and implements ``pad='same'`` as a 'full'
    convolution whose larger output is cropped afterwards. The old repository
    used cuDNN, which cross-correlates, so its published weights only give
    their accuracy in a cross-correlation.
``BatchNormLayer``
    Batch normalisation (Ioffe & Szegedy 2015) with Lasagne master's parameter
    order (beta, gamma, mean, then the running spread statistic), running
    averages kept either as Lasagne does (the inverse standard deviation) or as
    Torch/cuDNN do (the unbiased variance).
"""
from . import compat  # noqa: F401  (configures Theano before it is imported)

import theano
import theano.tensor as T
from lasagne import init
from lasagne.layers import Layer
from lasagne.nonlinearities import rectify

from . import ops

USE_C_OPS = True


def c_ops_apply(*variables):
    """Whether the C ops of engine.ops (CPU, float32, OpenBLAS) can compute with
    these variables. On a GPU device Theano's own ops run (cuDNN)."""
    on_cpu = not theano.config.device.startswith(("cuda", "gpu", "opencl"))
    return (USE_C_OPS and on_cpu and "openblas" in theano.config.blas.ldflags
            and all(v.dtype == "float32" for v in variables))


class Conv2DLayer(Layer):
    """2D cross-correlation with 'same' padding, no bias unless one is given.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, shape ``(batch, channels, rows, cols)``.
    num_filters : int
        Number of output channels.
    filter_size : int
        Side of the square, odd-sized kernel (1 or 3 here).
    stride : int
        Subsampling factor in both spatial directions.
    W : initializer
        Kernel initializer, shape ``(num_filters, channels, size, size)``.
    b : initializer or None
        Bias initializer; ``None`` for no bias (every convolution followed by
        batch normalisation: the normalisation's shift makes a bias redundant).
    **kwargs
        Passed to :class:`lasagne.layers.Layer` (e.g. ``name``).

    Notes
    -----
    ``border_mode='half'`` pads ``filter_size // 2`` zeros on each side, so the
    output has ``ceil(rows / stride)`` rows: exactly cuDNN's ``pad='same'``.
    """

    def __init__(self, incoming, num_filters, filter_size, stride=1,
                 W=init.GlorotUniform(), b=None, **kwargs):
        super().__init__(incoming, **kwargs)
        if filter_size % 2 != 1:
            raise ValueError("filter_size must be odd, got %d" % filter_size)
        self.num_filters = num_filters
        self.filter_size = filter_size
        self.stride = stride
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
        return output


class BatchNormLayer(Layer):
    """Batch normalisation over the batch and both spatial axes.

    In training (``deterministic=False``) the layer normalises with the batch
    statistics and updates its running averages through Theano's
    ``default_update`` (as Lasagne master does), so any function compiled from
    the training output updates them. With ``deterministic=True`` it uses the
    running averages.

    Parameters
    ----------
    incoming : Layer or tuple
        The layer feeding into this one, shape ``(batch, channels, rows, cols)``.
    epsilon : float
        Added to the variance before taking its square root.
    alpha : float
        Weight of the current batch in the running averages (Torch calls it
        momentum; 0.1 in both Torch and Lasagne).
    nonlinearity : None or lasagne.nonlinearities.rectify
        Applied to the normalised output: the pre-activation's ReLU, computed
        in the same pass as the normalisation (and its gradient with the
        normalisation's).
    running : {'inv_std', 'var'}
        What the running average of the spread tracks. ``'inv_std'``: the
        batch's ``1 / sqrt(var + epsilon)`` (Lasagne master, hence the old
        repository); ``'var'``: the unbiased batch variance ``var * m / (m-1)``
        with ``m`` values per channel (Torch's ``SpatialBatchNormalization`` and
        cuDNN, hence the papers' code), turned into ``1 / sqrt(var + epsilon)``
        at inference.
    **kwargs
        Passed to :class:`lasagne.layers.Layer` (e.g. ``name``).

    Notes
    -----
    Parameters are registered in Lasagne master's order: ``beta`` and ``gamma``
    (trainable; only ``gamma`` is tagged regularizable, as in Lasagne), then
    ``mean`` and ``inv_std`` or ``var`` (not trainable).
    """

    def __init__(self, incoming, epsilon=1e-4, alpha=0.1, running="inv_std",
                 nonlinearity=None, **kwargs):
        super().__init__(incoming, **kwargs)
        if running not in ("inv_std", "var"):
            raise ValueError("running must be 'inv_std' or 'var', got %r" % running)
        if nonlinearity not in (None, rectify):
            raise ValueError("nonlinearity must be None or rectify")
        self.relu = nonlinearity is rectify
        self.epsilon = epsilon
        self.alpha = alpha
        self.running = running
        shape = (self.input_shape[1],)
        self.beta = self.add_param(init.Constant(0), shape, "beta",
                                   trainable=True, regularizable=False)
        self.gamma = self.add_param(init.Constant(1), shape, "gamma",
                                    trainable=True, regularizable=True)
        self.mean = self.add_param(init.Constant(0), shape, "mean",
                                   trainable=False, regularizable=False)
        self.spread = self.add_param(init.Constant(1), shape, running,
                                     trainable=False, regularizable=False)

    def get_output_for(self, input, deterministic=False, **kwargs):
        def channel(v):
            return v.dimshuffle("x", 0, "x", "x")

        if deterministic:
            inv_std = (self.spread if self.running == "inv_std"
                       else T.inv(T.sqrt(self.spread + self.epsilon)))
            scale = self.gamma * inv_std
            shift = self.beta - self.mean * scale
            if c_ops_apply(input, scale, shift):
                return ops.ScaleShift(self.relu)(input, scale, shift)
            return self._finish(input * channel(scale) + channel(shift))

        # Clones share the parameters' storage; their default_update makes every
        # function compiled from this output update the running averages.
        running_mean = theano.clone(self.mean, share_inputs=False)
        running_spread = theano.clone(self.spread, share_inputs=False)
        # Adding zero times the clones puts them into the graph (Lasagne's trick).
        gamma = self.gamma + 0 * (running_mean + running_spread)
        if c_ops_apply(input, self.gamma, self.beta):
            output, mean, inv_std, var = ops.BatchNormTrain(self.epsilon, self.relu)(
                input, gamma, self.beta)
        else:
            axes = (0, 2, 3)
            mean = input.mean(axes)
            var = T.sqr(input - channel(mean)).mean(axes)
            inv_std = T.inv(T.sqrt(var + self.epsilon))
            output = self._finish((input - channel(mean)) * channel(gamma * inv_std)
                                  + channel(self.beta))
        if self.running == "inv_std":
            batch_spread = inv_std
        else:
            count = T.cast(input.shape[0] * input.shape[2] * input.shape[3],
                           theano.config.floatX)
            batch_spread = var * count / (count - 1)
        running_mean.default_update = (1 - self.alpha) * running_mean + self.alpha * mean
        running_spread.default_update = ((1 - self.alpha) * running_spread
                                         + self.alpha * batch_spread)
        return output

    def _finish(self, normalised):
        return T.nnet.relu(normalised) if self.relu else normalised
