"""A/B timing of two versions of engine/ops.py's convolutions, in one process.

    git show HEAD~1:engine/ops.py > /tmp/ops_before.py
    python bench/ops_ab.py /tmp/ops_before.py                 # the three 3x3 stages
    python bench/ops_ab.py /tmp/ops_before.py 128,64,32,16,1  # B,C,H,M,k cases

A is the project's engine/ops.py, B the given file. Both are compiled side by side
and timed in alternating rounds (forward, then both gradients, three calls
each), so that both see the machine in the same state: this machine's speed
drifts by more than the few per cent a kernel change is worth, so timings of
two versions taken in separate processes cannot be compared. Prints GFLOP/s
(medians) and whether the two versions give the same results bit for bit.
"""
import argparse
import hashlib
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

STAGES = ["128,16,32,16,3", "128,32,16,32,3", "128,64,8,64,3"]


def load_other_ops(path):
    """Import ``path`` as a module of its own, with a C cache version of its
    own (Theano reuses compiled code by that version, not by the code)."""
    spec = importlib.util.spec_from_file_location("ops_b", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(path, "rb") as f:
        digest = int(hashlib.sha256(f.read()).hexdigest()[:12], 16)
    version = module._COp.c_code_cache_version
    module._COp.c_code_cache_version = lambda self: (digest,) + tuple(version(self))
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", help="the other engine/ops.py (B)")
    parser.add_argument("cases", nargs="*", default=STAGES, help="B,C,H,M,k (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    import numpy as np
    import engine  # noqa: F401  (configures Theano before it is imported)
    import theano
    import theano.tensor as T
    from engine import ops
    other = load_other_ops(args.other)
    rng = np.random.default_rng(0)
    for case in args.cases:
        batch, channels, size, out_channels, k = (int(v) for v in case.split(","))
        x, w, dy = T.tensor4(), T.tensor4(), T.tensor4()
        values = [rng.normal(size=shape).astype("float32") for shape in (
            (batch, channels, size, size), (out_channels, channels, k, k),
            (batch, out_channels, size, size))]
        functions = {name: (theano.function([x, w], module.Conv2D(1)(x, w)),
                            theano.function([x, w, dy], module.Conv2DGrad(1)(x, w, dy)))
                     for name, module in (("A", ops), ("B", other))}
        results = {name: [np.asarray(r) for r in [f[0](*values[:2])] + list(f[1](*values))]
                   for name, f in functions.items()}
        same = all(np.array_equal(a, b) for a, b in zip(results["A"], results["B"]))
        times = {(name, part): [] for name in "AB" for part in (0, 1)}
        for _ in range(args.rounds):
            for name in "AB":
                for part, inputs in ((0, values[:2]), (1, values)):
                    for _ in range(3):
                        t = time.time()
                        functions[name][part](*inputs)
                        times[(name, part)].append(time.time() - t)
        flops = 2.0 * batch * out_channels * channels * k * k * size * size

        def rate(name, part):
            return (1 + part) * flops / float(np.median(times[(name, part)])) / 1e9
        print("B%d C%d H%d M%d k%d: forward A %.0f B %.0f GFLOP/s (%+.1f %%), gradients A %.0f "
              "B %.0f GFLOP/s (%+.1f %%), same results: %s" % (
                  batch, channels, size, out_channels, k, rate("A", 0), rate("B", 0),
                  100 * (rate("B", 0) / rate("A", 0) - 1), rate("A", 1), rate("B", 1),
                  100 * (rate("B", 1) / rate("A", 1) - 1), "yes" if same else "NO"), flush=True)


if __name__ == "__main__":
    sys.exit(main())
