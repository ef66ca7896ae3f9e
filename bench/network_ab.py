"""Whole training steps under two settings of the engine, in one process, in
alternating rounds.

    python bench/network_ab.py "normal 18"                            # direct vs auto
    python bench/network_ab.py "normal 3" --a fusion=off --b fusion=on
    python bench/network_ab.py "wide 2 4" --a algo=winograd --b algo=winograd4
    OMP_NUM_THREADS=1 python bench/network_ab.py "normal 18" --cpu-time
    python bench/network_ab.py "normal 18" --a fusion=off --b fusion=on --eval

A setting is a comma-separated list of ``algo=NAME`` (engine.ops.ALGOS, what
the convolutions run) and ``fusion=on|off`` (engine/fusion.py's rewrites);
what it leaves out is the default (auto, on). Two networks of the same
graph, compiled under each setting, fed the same batch (the weights do not
matter for the time); prints the median step time of each and their ratio.
--eval times the inference pass instead (test_model.py's: batches of 500,
running averages), compiled under each setting.
--cpu-time times the process's CPU time (with OMP_NUM_THREADS=1: figures
that hold on a loaded machine).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_setting(text):
    """{'algo': ..., 'fusion': bool} from 'algo=direct,fusion=off'."""
    setting = {"algo": "auto", "fusion": True}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key == "algo":
            setting["algo"] = value
        elif key == "fusion" and value in ("on", "off"):
            setting["fusion"] = value == "on"
        else:
            raise SystemExit("error: %r is not algo=NAME or fusion=on|off" % item)
    return setting


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("networks", nargs="+", help="'VARIANT DEPTH [WIDTH]'")
    parser.add_argument("--a", default="algo=direct", help="setting A (default: %(default)s)")
    parser.add_argument("--b", default="algo=auto", help="setting B (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps per round")
    parser.add_argument("--cpu-time", action="store_true")
    parser.add_argument("--eval", action="store_true",
                        help="time the inference pass on batches of 500, not the training step")
    args = parser.parse_args()
    import numpy as np
    import engine  # noqa: F401  (configures Theano)
    from engine import compat, fusion, ops
    import networks
    compat.keep_freed_memory()
    settings = {"A": parse_setting(args.a), "B": parse_setting(args.b)}
    for setting in settings.values():
        if setting["algo"] not in ops.ALGOS:
            raise SystemExit("error: algo must be one of %s" % ", ".join(ops.ALGOS))
    clock = time.process_time if args.cpu_time else time.time
    for network in args.networks:
        steps = {}
        try:
            for name, setting in settings.items():
                ops.DEFAULT_ALGO, fusion.ENABLED = setting["algo"], setting["fusion"]
                if args.eval:
                    steps[name] = networks.inference_pass(network)
                else:
                    steps[name], recipe = networks.paper_training_step(network)
        finally:
            ops.DEFAULT_ALGO, fusion.ENABLED = "auto", True
        images, labels = networks.random_batch(500 if args.eval else recipe["batch_size"])
        batch = (images,) if args.eval else (images, labels)
        times = {name: [] for name in steps}
        for step in steps.values():
            step(*batch)
        for _ in range(args.rounds):
            for name, step in steps.items():
                for _ in range(args.steps):
                    t = clock()
                    step(*batch)
                    times[name].append(clock() - t)
        a, b = (float(np.median(times[name])) for name in "AB")
        print("%s: %s %.3f s A (%s), %.3f s B (%s): B is %.2fx as fast (%s, %d each)"
              % (network, "inference of 500 images" if args.eval else "step", a, args.a, b,
                 args.b, a / b,
                 "CPU time" if args.cpu_time else "wall clock", len(times["A"])), flush=True)


if __name__ == "__main__":
    sys.exit(main())
