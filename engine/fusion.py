"""Graph rewrites that fuse batch normalisation, its ReLU and residual sums into
the convolutions of ``engine.ops``, in compiled Theano functions.

A pre-activation network spends a third of its training step outside the
convolutions, in passes over every activation: batch norm + ReLU writes a
normalised copy that the next convolution reads, its gradient reads the input
and the output gradient twice, and each residual sum (and its gradient) is
one more pass. Where the graph holds these patterns, Theano's optimiser (this
module's ``FuseConvolutions``, run on every function compiled in ``fast_run``
mode) replaces them:

- ``Conv2D(BatchNormTrain(x)[0], w)`` -> ``Conv2D(prologue=...)(x, w, mean,
  inv_std, gamma, beta)``: the convolution normalises (and rectifies) ``x``
  as it copies it into its own layout; the same for ``ScaleShift`` (batch
  norm with the running averages, at inference) and for the kernel gradient
  (``Conv2DGrad``), which needs the normalised input;
- ``BatchNormTrainGrad(x, Conv2DGrad(...)[0] [+ r], ...)`` -> ``Conv2DGrad``
  with ``bn_grad`` (the input gradient, plus ``r``, masked where the ReLU
  clamped, and its sums, each image while it is in the cache) followed by
  ``BatchNormGradApply`` (the rest of the batch norm's gradient); ``r`` is
  the gradient through the batch norm's other readers (a projection, or the
  shortcut of the first unit);
- ``Conv2D(...) + r`` and ``BatchNormGradApply(...)[0] + r`` -> the op adds
  ``r`` as it writes (the residual sum forward, and the shortcut's gradient
  backward);
- a ``BatchNormTrain`` whose normalised output nobody reads any more ->
  ``BatchNormStats`` (its statistics, for the running averages and the
  convolutions).

Each rewrite matches a pattern and nothing more: a batch norm whose output
also feeds something else stays (the convolutions read through it all the
same), a gradient that is a sum of three or more terms keeps the separate
``BatchNormTrainGrad``, and so on; any
unit order (conv-BN-ReLU, BN after the sum, ReLU before it, ...) compiles to
whatever of these patterns it contains. Every fused op computes the same
floating-point operations in the same order as the ops it replaces, so a
fused graph gives the unfused graph's results bit for bit
(``tests/test_fusion.py``).

Switch it off with ``THEANO_FLAGS=optimizer_excluding=pr_fusion``, or for the
functions compiled while ``ENABLED`` is False (benchmarks compare both in one
process).
"""
from . import compat  # noqa: F401  (configures Theano before it is imported)

import theano.tensor as T
from theano import gof, scalar
from theano.compile import optdb
from theano.tensor.elemwise import Elemwise

from . import ops

# False: functions compiled from now on keep the separate ops.
ENABLED = True

# The optimiser's tag (THEANO_FLAGS=optimizer_excluding=pr_fusion).
TAG = "pr_fusion"


def _single_client(fgraph, variable):
    """Whether ``variable`` feeds exactly one node and is not an output of the function."""
    clients = fgraph.clients(variable)
    return len(clients) == 1 and clients[0][0] != "output"


def _is_output(variable, op_class, index=0):
    """Whether ``variable`` is output ``index`` of an ``op_class`` node."""
    owner = variable.owner
    return owner is not None and isinstance(owner.op, op_class) and \
        owner.outputs.index(variable) == index


def _prologue_of(variable):
    """(prologue, [mean, inv_std, gamma, beta], normalised input) when
    ``variable`` is the normalised output of a batch norm a convolution can
    read through, else None."""
    if _is_output(variable, ops.BatchNormTrain):
        bn = variable.owner
        x, gamma, beta = bn.inputs
        _, mean, inv_std, _ = bn.outputs
        return ("bn_relu" if bn.op.relu else "bn"), [mean, inv_std, gamma, beta], x
    if _is_output(variable, ops.ScaleShift):
        # scale = gamma * inv_std of the running averages, given whole: the
        # convolution computes 1 * scale, exactly scale
        x, scale, shift, mean = variable.owner.inputs
        return ("bn_relu" if variable.owner.op.relu else "bn"), \
            [mean, scale, T.ones_like(scale), shift], x
    return None


def _conv_args(op):
    return {"stride": op.stride, "chunk_bytes": op.chunk_bytes, "algo": op.algo}


def read_through_batch_norm(fgraph, node):
    """Conv2D / Conv2DGrad of a batch norm's output -> read its input through it."""
    if not isinstance(node.op, (ops.Conv2D, ops.Conv2DGrad)) or node.op.prologue:
        return None
    found = _prologue_of(node.inputs[0])
    if found is None:
        return None
    prologue, bn, x = found
    if isinstance(node.op, ops.Conv2D):
        addend = node.inputs[2:] if node.op.residual else []
        new = ops.Conv2D(prologue=prologue, residual=node.op.residual,
                         **_conv_args(node.op))(x, node.inputs[1], *(bn + addend))
        return [(node.outputs[0], new)]
    w, dy = node.inputs[1:3]
    new = ops.Conv2DGrad(prologue=prologue, **_conv_args(node.op))(x, w, dy, *bn)
    return list(zip(node.outputs, new))


def batch_norm_gradient_in_convolution(fgraph, node):
    """BatchNormTrainGrad of a gradient that a Conv2DGrad reading through that
    same batch norm computed, alone or plus one more term -> Conv2DGrad(bn_grad
    [, dx_residual]) + BatchNormGradApply."""
    if not isinstance(node.op, ops.BatchNormTrainGrad):
        return None
    x, g, gamma, beta, mean, inv_std = node.inputs
    candidates = [(g, [])]
    if g.owner is not None and _is_sum_of_two(g.owner) and _single_client(fgraph, g):
        a, b = g.owner.inputs
        candidates += [(a, [b]), (b, [a])]
    for dx, rest in candidates:
        if not _is_output(dx, ops.Conv2DGrad) or not _single_client(fgraph, dx):
            continue
        conv = dx.owner
        if conv.op.bn_grad or conv.op.prologue != ("bn_relu" if node.op.relu else "bn"):
            continue
        if not all(a is b for a, b in zip(list(conv.inputs[:1]) + list(conv.inputs[3:]),
                                          (x, mean, inv_std, gamma, beta))):
            continue   # another batch norm's statistics
        if rest and rest[0].type != x.type:
            continue
        masked, dw, sum_g, sum_gx = ops.Conv2DGrad(
            prologue=conv.op.prologue, bn_grad=True, dx_residual=bool(rest),
            **_conv_args(conv.op))(*(list(conv.inputs) + rest))
        dx_, dgamma, dbeta = ops.BatchNormGradApply()(x, masked, gamma, mean, inv_std, sum_g,
                                                      sum_gx)
        return [(conv.outputs[1], dw), (node.outputs[0], dx_), (node.outputs[1], dgamma),
                (node.outputs[2], dbeta)]
    return None


def _is_sum_of_two(node):
    return isinstance(node.op, Elemwise) and isinstance(node.op.scalar_op, scalar.Add) \
        and len(node.inputs) == 2


def residual_into_the_op(fgraph, node):
    """a + r, where a is a Conv2D's or a BatchNormGradApply's result read by
    nothing else -> the op adds r as it writes a."""
    if not _is_sum_of_two(node):
        return None
    out = node.outputs[0]
    for a, r in (node.inputs, node.inputs[::-1]):
        if a.type != out.type or r.type != out.type or not _single_client(fgraph, a):
            continue
        if _is_output(a, ops.Conv2D) and not a.owner.op.residual:
            op = a.owner.op
            new = ops.Conv2D(prologue=op.prologue, residual=True,
                             **_conv_args(op))(*(list(a.owner.inputs) + [r]))
            return [(out, new)]
        if _is_output(a, ops.BatchNormGradApply) and not a.owner.op.residual:
            apply = a.owner
            dx, dgamma, dbeta = ops.BatchNormGradApply(residual=True)(
                *(list(apply.inputs) + [r]))
            return [(out, dx), (apply.outputs[1], dgamma), (apply.outputs[2], dbeta)]
    return None


def statistics_alone(fgraph, node):
    """BatchNormTrain whose normalised output nobody reads -> BatchNormStats."""
    if not isinstance(node.op, ops.BatchNormTrain) or fgraph.clients(node.outputs[0]):
        return None
    mean, inv_std, var = ops.BatchNormStats(node.op.epsilon)(node.inputs[0])
    return list(zip(node.outputs[1:], (mean, inv_std, var)))


# In this order: the reads first (after them a batch norm's gradient can see
# the convolution that reads through it), the sums last (the ops they fold
# into must exist).
REWRITES = (read_through_batch_norm, batch_norm_gradient_in_convolution,
            residual_into_the_op, statistics_alone)


class FuseConvolutions(gof.Optimizer):
    """Applies ``REWRITES`` over the whole graph, each until it matches
    nothing more, in order."""

    def add_requirements(self, fgraph):
        fgraph.attach_feature(gof.toolbox.ReplaceValidate())

    def apply(self, fgraph):
        if not ENABLED:
            return
        for rewrite in REWRITES:
            changed = True
            while changed:
                changed = False
                for node in fgraph.toposort():
                    if node not in fgraph.apply_nodes:
                        continue   # replaced by an earlier match of this sweep
                    replacements = rewrite(fgraph, node)
                    if replacements:
                        fgraph.replace_all_validate(replacements, reason=rewrite.__name__)
                        changed = True


# After the specialisations (48.6), before Theano's element-wise fusion (49),
# which would fold the residual sums into composites, and before the in-place
# rewrites (75).
optdb.register(TAG, FuseConvolutions(), 48.7, "fast_run")   # its name is its tag
