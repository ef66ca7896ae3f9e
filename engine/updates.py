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


def nesterov_torch(grads, params, learning_rate, momentum):
    """Torch's ``optim.sgd`` with ``nesterov=true, dampening=0``.

    ``v <- momentum * v + g``, then ``p <- p - lr * (g + momentum * v)``. The
    buffer holds gradients, not steps, so a new learning rate applies at once
    (Lasagne's velocity carries the old rate for a while).
    """
    updates, buffers = OrderedDict(), []
    for param, grad in zip(params, grads):
        value = param.get_value(borrow=True)
        buffer = theano.shared(np.zeros(value.shape, value.dtype),
                               broadcastable=param.broadcastable,
                               name="%s.momentum" % param.name)
        new_buffer = momentum * buffer + grad
        updates[buffer] = new_buffer
        updates[param] = param - learning_rate * (grad + momentum * new_buffer)
        buffers.append(buffer)
    return updates, buffers


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
    updates, buffers = OrderedDict(), []
    for param, grad in zip(params, grads):
        value = param.get_value(borrow=True)
        buffer = theano.shared(np.zeros(value.shape, value.dtype),
                               broadcastable=param.broadcastable,
                               name="%s.momentum" % param.name)
        new_buffer = momentum * buffer - learning_rate * grad
        updates[buffer] = new_buffer
        updates[param] = param + new_buffer
        buffers.append(buffer)
    return updates, buffers


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
    return [g + decay * p for g, p in zip(T.grad(loss, params), params)]
