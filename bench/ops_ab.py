"""A/B timing of two versions of the engine's convolutions, in one process.

    python bench/ops_ab.py HEAD~1                     # the three 3x3 stages
    python bench/ops_ab.py HEAD~1 128,64,32,16,1      # B,C,H,M,k cases
    python bench/ops_ab.py HEAD~1 128,16,32,32,3,2    # B,C,H,M,k,stride
    python bench/ops_ab.py /tmp/other/engine          # an engine/ folder
    python bench/ops_ab.py . --algo direct --algo-b winograd   # two algorithms, this tree

A is the working tree's engine/, B the engine/ of the given git revision (or
folder: engine/ops.py and its c_code/; "." for the working tree's own, to
compare two of its algorithms: --algo, --algo-b). Both are compiled side by side
and timed in alternating rounds (forward, then both gradients, three calls
each), so that both see the machine in the same state: this machine's speed
drifts by more than the few per cent a kernel change is worth, so timings of
two versions taken in separate processes cannot be compared. Prints GFLOP/s
(medians) and whether the two versions give the same results bit for bit.
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

STAGES = ["128,16,32,16,3", "128,32,16,32,3", "128,64,8,64,3"]


def load_other_engine(revision_or_folder):
    """Import another version of the engine as the package ``engine_b``. Its C
    ops carry their own cache versions (digests of their C files), so Theano
    compiles them apart from ours when the code differs."""
    folder = revision_or_folder
    if folder == ".":
        return importlib.import_module("engine.ops")
    if not os.path.isdir(folder):
        root = tempfile.mkdtemp(prefix="ops_ab-")
        archive = subprocess.run(["git", "-C", os.path.dirname(HERE), "archive",
                                  revision_or_folder, "engine"],
                                 capture_output=True, check=False)
        if archive.returncode != 0:
            sys.exit("error: %s is neither a folder nor a git revision with engine/ (%s)"
                     % (revision_or_folder, archive.stderr.decode().strip()))
        subprocess.run(["tar", "-x", "-C", root], input=archive.stdout, check=True)
        folder = os.path.join(root, "engine")
    spec = importlib.util.spec_from_file_location(
        "engine_b", os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules["engine_b"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("engine_b.ops")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", help="the other engine (B): a git revision or an "
                                      "engine/ folder")
    parser.add_argument("cases", nargs="*", default=STAGES, help="B,C,H,M,k[,stride] (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the process's CPU time, not the wall clock: with "
                             "OMP_NUM_THREADS=1, figures that hold on a loaded machine "
                             "(other processes' share of the cores is not counted)")
    parser.add_argument("--algo", default=None,
                        help="A's convolution algorithm (engine.ops.ALGOS; default: its default)")
    parser.add_argument("--algo-b", default=None,
                        help="B's (only for an engine that has them)")
    args = parser.parse_args()
    import numpy as np
    import engine  # noqa: F401  (configures Theano before it is imported)
    import theano
    import theano.tensor as T
    from engine import compat, ops
    compat.keep_freed_memory()  # as train_nn.py runs: no page faults on reused buffers
    other = load_other_engine(args.other)
    rng = np.random.default_rng(0)
    clock = time.process_time if args.cpu_time else time.time
    for case in args.cases:
        numbers = [int(v) for v in case.split(",")]
        batch, channels, size, out_channels, k = numbers[:5]
        stride = numbers[5] if len(numbers) > 5 else 1
        out_size = -(-size // stride)
        x, w, dy = T.tensor4(), T.tensor4(), T.tensor4()
        values = [rng.normal(size=shape).astype("float32") for shape in (
            (batch, channels, size, size), (out_channels, channels, k, k),
            (batch, out_channels, out_size, out_size))]
        functions = {}
        for name, module, algo in (("A", ops, args.algo), ("B", other, args.algo_b)):
            kwargs = {} if algo is None else {"algo": algo}
            functions[name] = (theano.function([x, w], module.Conv2D(stride, **kwargs)(x, w)),
                               theano.function([x, w, dy],
                                               module.Conv2DGrad(stride, **kwargs)(x, w, dy)))
        results = {name: [np.asarray(r) for r in [f[0](*values[:2])] + list(f[1](*values))]
                   for name, f in functions.items()}
        same = all(np.array_equal(a, b) for a, b in zip(results["A"], results["B"]))
        # the largest difference relative to the largest value (forward, dx, dw)
        differences = " ".join("%.1e" % (np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                               for a, b in zip(results["A"], results["B"]))
        times = {(name, part): [] for name in "AB" for part in (0, 1)}
        for _ in range(args.rounds):
            for name in "AB":
                for part, inputs in ((0, values[:2]), (1, values)):
                    for _ in range(3):
                        t = clock()
                        functions[name][part](*inputs)
                        times[(name, part)].append(clock() - t)
        flops = 2.0 * batch * out_channels * channels * k * k * out_size * out_size

        def rate(name, part):
            return (1 + part) * flops / float(np.median(times[(name, part)])) / 1e9
        print("B%d C%d H%d M%d k%d/%d: forward A %.0f B %.0f GFLOP/s (%+.1f %%), gradients A %.0f "
              "B %.0f GFLOP/s (%+.1f %%), same results: %s (%s)" % (
                  batch, channels, size, out_channels, k, stride, rate("A", 0), rate("B", 0),
                  100 * (rate("B", 0) / rate("A", 0) - 1), rate("A", 1), rate("B", 1),
                  100 * (rate("B", 1) / rate("A", 1) - 1), "yes" if same else "no",
                  differences), flush=True)


if __name__ == "__main__":
    sys.exit(main())
