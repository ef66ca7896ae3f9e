"""Where a training step's time goes, by kind of op, with Theano's profiler.

    python bench/profile_step.py "normal 18"
    python bench/profile_step.py "normal 18" "wide 2 4" --steps 6
    python bench/profile_step.py "normal 3" --fusion off     # engine/fusion.py's rewrites off
    python bench/profile_step.py "normal 3" --batch 16       # the costs that do not scale

Compiles the paper recipe's training step with Theano's profiler on, runs it
on one random batch (after a first, unprofiled step) and prints, per kind of
op, its time per step and share of the step; then every convolution shape
with its forward pass and its gradients: time per step and the GFLOP/s of
the direct convolution's arithmetic (2 x B x M x C x k x k x H' x W' per pass, twice that
for the two gradients). Wall clock, all cores: run it on a quiet machine.
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kind_of(op):
    name = type(op).__name__
    if name == "Conv2D":
        return "convolution, forward" + (" (+ BN read, sum)" if op.prologue or op.residual
                                         else "")
    if name == "Conv2DGrad":
        return "convolution, gradients" + (" (+ BN gradient)" if op.bn_grad else "")
    if name == "BatchNormStats":
        return "batch norm statistics"
    if name == "BatchNormGradApply":
        return "batch norm gradient, rest (+ sum)"
    if "BatchNorm" in name or "ScaleShift" in name:
        return "batch norm (+ ReLU), " + ("gradient" if "Grad" in name else "forward")
    if name == "Elemwise":
        return "element-wise (residual sums, updates, ...)"
    return name


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("networks", nargs="+", help="'VARIANT DEPTH [WIDTH]'")
    parser.add_argument("--steps", type=int, default=4, help="profiled steps")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per step (default: the recipe's batch size)")
    parser.add_argument("--fusion", choices=("on", "off"), default="on",
                        help="engine/fusion.py's rewrites (default: on, as train_nn.py runs)")
    args = parser.parse_args()
    import engine  # noqa: F401  (configures Theano)
    import theano
    from engine import compat, fusion, ops
    fusion.ENABLED = args.fusion == "on"
    import networks
    compat.keep_freed_memory()
    theano.config.profile = True
    theano.config.profile_memory = True   # records every variable's shape
    from theano.compile import profiling
    for network in args.networks:
        step, recipe = networks.paper_training_step(network)
        batch = args.batch or recipe["batch_size"]
        x, y = networks.random_batch(batch)
        step(x, y)
        profile = step.profile
        profile.apply_time.clear()
        profile.fct_call_time = 0.0
        for _ in range(args.steps):
            step(x, y)
        call = profile.fct_call_time / args.steps
        by_kind = collections.Counter()
        convolutions = collections.defaultdict(lambda: [0, 0.0, 0.0])  # count, seconds, MACs
        for key, seconds in profile.apply_time.items():
            node = key[1] if isinstance(key, tuple) else key
            seconds /= args.steps
            by_kind[kind_of(node.op)] += seconds
            if isinstance(node.op, (ops.Conv2D, ops.Conv2DGrad)):
                x_shape = profile.variable_shape[node.inputs[0]]
                w_shape = profile.variable_shape[node.inputs[1]]
                s = node.op.stride
                b, c, h, _ = x_shape
                m, _, k, _ = w_shape
                out = (h + s - 1) // s
                macs = b * m * c * k * k * out * out
                forward = isinstance(node.op, ops.Conv2D)
                entry = convolutions[(c, h, m, k, s, forward)]
                entry[0] += 1
                entry[1] += seconds
                entry[2] += macs * (1 if forward else 2)
        # shares of the ops' own time: memory profiling needs Theano's Python
        # VM, whose overhead between ops the C VM that train_nn.py uses has not
        total = sum(by_kind.values())
        print("%s, batch %d, convolutions %s, fusion %s: the ops %.3f s a step (the profiled "
              "call %.3f s; mean of %d steps)" % (network, batch, ops.DEFAULT_ALGO, args.fusion,
                                                   total, call, args.steps))
        for kind, seconds in by_kind.most_common():
            print("  %-45s %7.1f ms  %5.1f %%" % (kind, 1e3 * seconds, 100 * seconds / total))
        print("  convolutions (GFLOP/s of the direct convolution's arithmetic):")
        for (c, h, m, k, s, forward), (count, seconds, macs) in sorted(convolutions.items()):
            print("    %dx%d/%d %3d -> %3d at %2dx%-2d %-9s x%-2d %7.1f ms %5.1f %%  %4.0f GFLOP/s"
                  % (k, k, s, c, m, h, h, "forward" if forward else "gradients", count,
                     1e3 * seconds, 100 * seconds / total, 2 * macs / seconds / 1e9))
        del profiling._atexit_print_list[:]   # not Theano's full report at exit


if __name__ == "__main__":
    sys.exit(main())
