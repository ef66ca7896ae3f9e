"""Training steps of this tree, another tree of the project and (``--torch``)
PyTorch, as three live processes timed in alternating rounds.

    python bench/trees_ab.py "normal 3" --other /tmp/old-tree --torch
    python bench/trees_ab.py "normal 3" "normal 18" --other /tmp/old-tree --rounds 4

``--other`` is a checkout (or ``git archive`` export) of another commit of
this project; its own bench/speed.py runs its side (``--live ours``), so both
trees train exactly as their speed.py measures them: the paper recipe's
training step, fed the same way, on the tree's own compile folder
(``--compiledir`` and ``--other-compiledir``; default: the compile folder
THEANO_FLAGS names, and that name with ``-other``). Each round every
process runs ``--round-steps`` steps, each process starting the rounds in
turn; prints the median step of each, the ratios, and evaluation img/s
(``--eval-rounds``). The compile and warm-up are not timed: run it once
through the heavy wrapper to fill the compile folders, then time it.
"""
import argparse
import importlib.util
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_speed(tree):
    """The bench/speed.py module of a tree (its Live runs that tree)."""
    path = os.path.join(os.path.abspath(tree), "bench", "speed.py")
    if not os.path.exists(path):
        raise SystemExit("error: %s has no bench/speed.py: give a tree of this project" % tree)
    sys.path.insert(0, os.path.dirname(path))
    try:
        spec = importlib.util.spec_from_file_location("speed_%d" % abs(hash(path)), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(os.path.dirname(path))
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("networks", nargs="+", help="'VARIANT DEPTH [WIDTH]'")
    parser.add_argument("--other", required=True, help="another tree of this project")
    parser.add_argument("--torch", action="store_true", help="also PyTorch (bench/torch_models.py)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--round-steps", type=int, default=3)
    parser.add_argument("--eval-rounds", type=int, default=2)
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--compiledir", default=None)
    parser.add_argument("--other-compiledir", default=None)
    args = parser.parse_args()
    flags = os.environ.get("THEANO_FLAGS", "")
    named = re.search(r"base_compiledir=([^,]+)", flags)
    compiledir = args.compiledir or (named.group(1) if named else None)
    if not compiledir:
        raise SystemExit("error: give --compiledir or THEANO_FLAGS=base_compiledir=...")
    other_compiledir = args.other_compiledir or compiledir + "-other"
    import numpy as np
    mine = load_speed(os.path.dirname(HERE))
    import train_nn   # this tree's (loading the other speed.py puts its tree first on the path)
    other = load_speed(args.other)
    # Live puts base_compiledir=FOLDER before THEANO_FLAGS, and Theano takes the
    # last one: importing the engine here wrote the project's folder into them
    os.environ["THEANO_FLAGS"] = re.sub(r"base_compiledir=[^,]*", "",
                                        os.environ.get("THEANO_FLAGS", ""))
    os.environ["THEANO_FLAGS"] = ",".join(f for f in os.environ["THEANO_FLAGS"].split(",") if f)
    for network in args.networks:
        variant, depth, width = mine.parse_network(network)
        recipe = train_nn.resolve_recipe("paper", variant)
        spec = {"variant": variant, "depth": depth, "width": width,
                "eval_images": args.eval_images, "threads": os.cpu_count(), "algo": "auto",
                "recipe": {key: recipe[key] for key in ("batch_size", "momentum",
                                                        "weight_decay")}}
        children = {}
        try:
            children["this"] = mine.Live("ours", spec, compiledir)
            children["other"] = other.Live("ours", spec, other_compiledir)
            if args.torch:
                children["torch"] = mine.Live("torch", spec, compiledir)
            for child in children.values():
                child.wait_ready()
            macs = {name: child.ready["macs"] for name, child in children.items()}
            if len(set(macs.values())) != 1:
                raise SystemExit("error: the networks differ: %s multiply-adds" % macs)
            names = list(children)
            times = {name: [] for name in names}
            for order in mine.in_turn(names, args.rounds):
                for name in order:
                    times[name] += children[name].ask("train %d" % args.round_steps)["times"]
                    time.sleep(0.1)   # spinning BLAS/OpenMP threads leave the cores
            evals, memory = mine.evaluate_in_turn(children, args.eval_rounds)
        finally:
            for child in children.values():
                child.close()
        batch = children["this"].ready["batch"]
        step = {name: float(np.median(times[name])) for name in names}
        ev = {name: args.eval_images / float(np.median(evals[name])) for name in names}
        print("%s, batch %d, %d rounds of %d steps each in turn (medians):"
              % (network, batch, args.rounds, args.round_steps))
        for name in names:
            print("  %-6s step %.3f s (%.1f img/s; %.3f-%.3f), eval %.0f img/s, peak RSS %.2f GB, "
                  "ready after %.0f s" % (name, step[name], batch / step[name], min(times[name]),
                                          max(times[name]), ev[name], memory[name],
                                          children[name].ready.get("start_s", float("nan"))))
        print("  training, this / other tree: %.2fx" % (step["other"] / step["this"]))
        if args.torch:
            print("  training, this / PyTorch: %.2fx; other / PyTorch: %.2fx; evaluation, "
                  "this / PyTorch: %.2fx" % (step["torch"] / step["this"],
                                             step["torch"] / step["other"],
                                             ev["this"] / ev["torch"]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
