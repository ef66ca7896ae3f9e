"""Run train_nn.py with the engine set one way (every convolution on one
algorithm; engine/fusion.py's rewrites on or off).

    python bench/train_with_algo.py direct normal 3 --epochs 10 --limit 10000 --seed 2
    python bench/train_with_algo.py auto normal 3 --epochs 10 --limit 10000 --seed 2
    python bench/train_with_algo.py algo=auto,fusion=off normal 3 --epochs 10 --limit 10000

The first argument is one of engine.ops.ALGOS ("direct": the direct kernels
alone, as before Winograd; "auto": what train_nn.py runs) or a setting as
bench/network_ab.py takes it (algo=NAME,fusion=on|off); the rest are
train_nn.py's own arguments. For comparing where training lands under two
settings of the same tree; not a timing tool.
"""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(HERE)
sys.path.insert(0, PROJECT_DIR)
sys.path.insert(0, HERE)


def main():
    from engine import fusion, ops
    from network_ab import parse_setting
    if len(sys.argv) < 2:
        sys.exit("usage: python bench/train_with_algo.py {%s|algo=NAME,fusion=on|off} "
                 "TRAIN_NN_ARGS..." % ",".join(ops.ALGOS))
    setting = parse_setting(sys.argv[1] if "=" in sys.argv[1] else "algo=" + sys.argv[1])
    if setting["algo"] not in ops.ALGOS:
        sys.exit("error: the algorithm must be one of %s" % ", ".join(ops.ALGOS))
    ops.DEFAULT_ALGO, fusion.ENABLED = setting["algo"], setting["fusion"]
    sys.argv = [os.path.join(PROJECT_DIR, "train_nn.py")] + sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
