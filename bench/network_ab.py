"""Whole training steps with the direct kernels against the automatic choice
(Winograd where engine/c_code/winograd.c's pw_pays chooses it), in one
process, in alternating rounds.

    OMP_NUM_THREADS=1 python bench/network_ab.py "normal 18" --cpu-time

Two networks of the same graph, fed the same batch (the weights do not
matter for the time); prints the median step time of each and their ratio. --cpu-time times the
process's CPU time (with OMP_NUM_THREADS=1: figures that hold on a loaded
machine).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("networks", nargs="+", help="'VARIANT DEPTH [WIDTH]'")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps per round")
    parser.add_argument("--cpu-time", action="store_true")
    args = parser.parse_args()
    import numpy as np
    import engine  # noqa: F401  (configures Theano)
    from engine import compat, ops
    import networks
    compat.keep_freed_memory()
    clock = time.process_time if args.cpu_time else time.time
    for network in args.networks:
        steps = {}
        for algo in ("direct", "auto"):
            ops.DEFAULT_ALGO = algo
            steps[algo], recipe = networks.paper_training_step(network)
        ops.DEFAULT_ALGO = "auto"
        x, y = networks.random_batch(recipe["batch_size"])
        times = {algo: [] for algo in steps}
        for algo in steps:
            steps[algo](x, y)
        for _ in range(args.rounds):
            for algo, step in steps.items():
                for _ in range(args.steps):
                    t = clock()
                    step(x, y)
                    times[algo].append(clock() - t)
        direct, auto = (float(np.median(times[a])) for a in ("direct", "auto"))
        print("%s: step %.3f s direct, %.3f s auto (Winograd where chosen): %.2fx (%s, %d "
              "steps each)" % (network, direct, auto, direct / auto,
                              "CPU time" if args.cpu_time else "wall clock",
                              len(times["auto"])), flush=True)


if __name__ == "__main__":
    sys.exit(main())
