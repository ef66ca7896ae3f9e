"""Stochastic gradient descent with Nesterov momentum, as Torch and as Lasagne
compute it, with Caffe's plain momentum, and the two ways of applying weight
decay.

Each optimiser takes ``(grads, params, learning_rate, momentum)`` and returns
``(updates, buffers)``: the update dictionary for ``theano.function`` and the
momentum buffers (the optimiser's state, to checkpoint or reset).
"""
from collections import OrderedDict

import numpy as np

from . import compat  # noqa: F401  (configures Theano before it is imported)
import theano
import theano.tensor as T
import lasagne
from lasagne.regularization import l2, regularize_network_params


def _per_parameter(grads, params, learning_rate, momentum, step):
    """``(updates, buffers)`` with one momentum buffer per parameter and one
    element-wise node per parameter computing ``step(p, g, v, lr, momentum)
    -> (new v, new p)`` on scalars (a ``Composite``).

    One node instead of the dozen Theano would build from tensor arithmetic
    (and fuse back into one): with thousands of parameters (PreResNet-1001 has
    3,000) the optimiser's time grows faster than the graph, and these nodes
    were most of it.
    """
    momentum = float(momentum)
    updates, buffers, kernels = OrderedDict(), [], {}
    for param, grad in zip(params, grads):
        dtype = param.dtype
        if dtype not in kernels:
            p, g, v, lr = [theano.scalar.get_scalar_type(dtype)() for _ in range(4)]
            m = theano.scalar.constant(np.asarray(momentum, dtype))
            kernels[dtype] = T.Elemwise(theano.scalar.Composite([p, g, v, lr],
                                                                list(step(p, g, v, lr, m))))
        value = param.get_value(borrow=True)
        buffer = theano.shared(np.zeros(value.shape, value.dtype),
                               broadcastable=param.broadcastable,
                               name="%s.momentum" % param.name)
        rate = T.shape_padleft(T.cast(learning_rate, dtype), param.ndim)
        updates[buffer], updates[param] = kernels[dtype](param, T.cast(grad, dtype), buffer,
                                                         rate)
        buffers.append(buffer)
    return updates, buffers


def nesterov_torch(grads, params, learning_rate, momentum):
    """Torch's ``optim.sgd`` with ``nesterov=true, dampening=0``.

    ``v <- momentum * v + g``, then ``p <- p - lr * (g + momentum * v)``. The
    buffer holds gradients, not steps, so a new learning rate applies at once
    (Lasagne's velocity carries the old rate for a while).
    """
    def step(p, g, v, lr, m):
        new_v = m * v + g
        return new_v, p - lr * (g + m * new_v)
    return _per_parameter(grads, params, learning_rate, momentum, step)


def nesterov_lasagne(grads, params, learning_rate, momentum):
    """``lasagne.updates.nesterov_momentum``: ``v <- momentum * v - lr * g``,
    ``p <- p + momentum * v - lr * g``."""
    updates = lasagne.updates.nesterov_momentum(grads, params, learning_rate, momentum)
    buffers = [var for var in updates if var not in params]
    for buffer, param in zip(buffers, params):
        buffer.name = "%s.momentum" % param.name
    return updates, buffers


def momentum_caffe(grads, params, learning_rate, momentum):
    """Caffe's ``SGD`` solver (plain momentum, no Nesterov).

    ``v <- momentum * v - lr * g``, then ``p <- p + v`` (BVLC/caffe
    docs/tutorial/solver.md: V_{t+1} = mu V_t - alpha grad L(W_t), W_{t+1} =
    W_t + V_{t+1}). The buffer holds steps, so a new learning rate takes over
    gradually, as in Caffe.
    """
    def step(p, g, v, lr, m):
        new_v = m * v - lr * g
        return new_v, p + new_v
    return _per_parameter(grads, params, learning_rate, momentum, step)


OPTIMIZERS = {"nesterov_torch": nesterov_torch, "nesterov_lasagne": nesterov_lasagne,
              "momentum_caffe": momentum_caffe}

DECAY_MODES = ("gradient_all", "l2_loss_regularizable")


def gradients_with_decay(loss, network, params, weight_decay, mode):
    """Gradients of ``loss`` with respect to ``params``, plus weight decay.

    ``mode='gradient_all'`` (Torch's ``optim.sgd``): ``weight_decay * w`` added
    to the gradient of every parameter in ``params``.
    ``mode='l2_loss_regularizable'`` (Lasagne's way): ``weight_decay *
    sum(w**2)`` added to the loss over the parameters of ``network`` tagged
    ``regularizable``, so their gradient gains ``2 * weight_decay * w``
    (Lasagne's ``l2`` is the plain sum of squares, without a 1/2) and the
    others none.
    """
    if mode not in DECAY_MODES:
        raise ValueError("weight decay mode must be one of %s, got %r"
                         % (", ".join(DECAY_MODES), mode))
    decay = np.float32(weight_decay)
    if mode == "l2_loss_regularizable":
        return T.grad(loss + decay * regularize_network_params(network, l2), params)
    # g + decay * p as one element-wise node per parameter (see _per_parameter)
    kernels = {}
    decayed = []
    for g, p in zip(T.grad(loss, params), params):
        if p.dtype not in kernels:
            sg, sp = [theano.scalar.get_scalar_type(p.dtype)() for _ in range(2)]
            d = theano.scalar.constant(np.asarray(decay, p.dtype))
            kernels[p.dtype] = T.Elemwise(theano.scalar.Composite([sg, sp], [sg + d * sp]))
        decayed.append(kernels[p.dtype](T.cast(g, p.dtype), p))
    return decayed
