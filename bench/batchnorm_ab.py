"""A/B timing of two versions of the engine's batch-norm ops, in one process.

    python bench/batchnorm_ab.py HEAD~1                 # the networks' three stages
    python bench/batchnorm_ab.py main 128,16,32         # B,C,H cases

bench/ops_ab.py's method for the batch-norm ops: A is the working tree's
engine/, B the engine/ of the given git revision (or folder); both are
compiled side by side and timed in alternating rounds (training forward
``BatchNormTrain`` with its ReLU, its gradient ``BatchNormTrainGrad``, and
inference ``ScaleShift``; three calls each). Prints milliseconds per call
(medians), B's difference to A, and whether the two give the same bits.
"""
import argparse
import inspect
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

STAGES = ["128,16,32", "128,32,16", "128,64,8"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", help="the other engine (B): a git revision or an "
                                      "engine/ folder")
    parser.add_argument("cases", nargs="*", default=STAGES, help="B,C,H (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    import numpy as np
    import engine  # noqa: F401  (configures Theano before it is imported)
    import theano
    import theano.tensor as T
    from engine import ops
    from ops_ab import load_other_engine
    other = load_other_engine(args.other)
    rng = np.random.default_rng(0)
    parts = ("forward", "gradient", "inference")
    for case in args.cases:
        batch, channels, size = (int(v) for v in case.split(","))
        shape = (batch, channels, size, size)
        x, dy, g, b, m, i = T.tensor4(), T.tensor4(), T.vector(), T.vector(), T.vector(), T.vector()
        values = [(rng.normal(size=shape) + 1).astype("float32"),
                  rng.normal(size=shape).astype("float32")] + [
            rng.normal(size=channels).astype("float32") for _ in range(4)]
        functions = {}
        for name, module in (("A", ops), ("B", other)):
            forward = theano.function([x, g, b], module.BatchNormTrain(1e-5, True)(x, g, b))
            gradient = theano.function([x, dy, g, b, m, i], module.BatchNormTrainGrad(
                1e-5, True)(x, dy, g, b, m, abs(i) + 1))
            # before the mean became an input of ScaleShift, inference folded it
            # into the shift: one argument fewer, the same work
            centred = "mean" in inspect.signature(module.ScaleShift.make_node).parameters
            inference = theano.function(
                [x, g, b, m], module.ScaleShift(True)(x, g, b, m) if centred
                else module.ScaleShift(True)(x, g, b - m * g))
            functions[name] = {
                "forward": (forward, [values[0], values[2], values[3]]),
                "gradient": (gradient, values),
                "inference": (inference, [values[0], values[2], values[3], values[4]])}
        def results(name, part):
            f, inputs = functions[name][part]
            out = f(*inputs)
            return out if isinstance(out, list) else [out]
        same = {part: all(np.array_equal(u, v) for u, v in zip(results("A", part),
                                                                results("B", part)))
                for part in parts}
        times = {(name, part): [] for name in "AB" for part in parts}
        for _ in range(args.rounds):
            for name in "AB":
                for part in parts:
                    f, inputs = functions[name][part]
                    for _ in range(3):
                        t = time.perf_counter()
                        f(*inputs)
                        times[(name, part)].append(time.perf_counter() - t)

        def ms(name, part):
            return 1000 * float(np.median(times[(name, part)]))
        print("B%d C%d H%d: " % (batch, channels, size) + "; ".join(
            "%s A %.2f B %.2f ms (B %+.1f %%)%s" % (
                part, ms("A", part), ms("B", part), 100 * (ms("B", part) / ms("A", part) - 1),
                "" if same[part] else ", bits differ") for part in parts), flush=True)


if __name__ == "__main__":
    sys.exit(main())
