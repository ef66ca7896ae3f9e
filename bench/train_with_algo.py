"""Run train_nn.py with every convolution on one algorithm of the engine.

    python bench/train_with_algo.py direct normal 3 --epochs 10 --limit 10000 --seed 2
    python bench/train_with_algo.py auto normal 3 --epochs 10 --limit 10000 --seed 2

The first argument is one of engine.ops.ALGOS ("direct": the direct kernels
alone, as before Winograd; "auto": what train_nn.py runs); the rest are
train_nn.py's own arguments. For comparing where training lands with the
direct kernels and with Winograd on the same tree (the same code otherwise);
not a timing tool.
"""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(HERE)
sys.path.insert(0, PROJECT_DIR)


def main():
    from engine import ops
    if len(sys.argv) < 2 or sys.argv[1] not in ops.ALGOS:
        sys.exit("usage: python bench/train_with_algo.py {%s} TRAIN_NN_ARGS..."
                 % ",".join(ops.ALGOS))
    ops.DEFAULT_ALGO = sys.argv[1]
    sys.argv = [os.path.join(PROJECT_DIR, "train_nn.py")] + sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
