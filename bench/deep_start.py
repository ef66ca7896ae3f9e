"""Start-up, step time and peak memory of a network's training as train_nn.py
runs it: building the graph, compiling the training step (cold or warm,
whatever THEANO_FLAGS' compile folder holds), then training steps on random
batches.

    python bench/deep_start.py "bottleneck 111" --batch-size 64 --steps 3
    THEANO_FLAGS=base_compiledir=/tmp/empty python bench/deep_start.py "bottleneck 111"

Prints one line per phase (seconds since the process started, the peak
resident memory so far) and ends with a JSON line: build, compile and
first-step seconds, the later steps' median, the peak RSS after compiling and
after the steps (GB, Linux's ru_maxrss). The steps are train_nn.py's: the
paper recipe's step (Nesterov, weight decay, batch-norm averages) on
normalised random images. Wall clock, all cores: time it on a quiet machine.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

STARTED = time.time()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("network", help="'VARIANT DEPTH [WIDTH]', e.g. 'bottleneck 111'")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="training steps to time")
    parser.add_argument("--recipe", default="paper")
    args = parser.parse_args()
    import engine
    import theano
    import numpy as np
    import models
    import train_nn
    import networks
    engine.compat.keep_freed_memory()   # as train_nn.main() does
    figures = {"network": args.network, "batch_size": args.batch_size,
               "recursion_limit": sys.getrecursionlimit(),
               "compile_dir": theano.config.compiledir}

    def say(what):
        print("%8.1f s  %-34s peak RSS %.2f GB" % (time.time() - STARTED, what, peak_gb()),
              flush=True)

    say("imported")
    variant, depth, width = networks.parse(args.network)
    began = time.time()
    net = models.Network(models.network_info(variant, depth, width, "paper", "cifar10"))
    figures["build_s"] = round(time.time() - began, 1)
    say("built (%s trainable parameters)" % format(net.trainable_count, ","))
    recipe = train_nn.resolve_recipe(args.recipe, variant)
    began = time.time()
    step, learning_rate, _ = train_nn.compile_training_step(net, recipe)
    figures["compile_s"] = round(time.time() - began, 1)
    figures["nodes"] = len(step.maker.fgraph.apply_nodes)
    figures["ready_s"] = round(time.time() - STARTED, 1)
    figures["peak_gb_compiled"] = round(peak_gb(), 2)
    say("compiled (%d nodes)" % figures["nodes"])
    learning_rate.set_value(np.float32(recipe["lr"]))
    images, labels = networks.random_batch(args.batch_size)
    times = []
    for i in range(args.steps):
        began = time.time()
        loss, _ = step(images, labels)
        times.append(time.time() - began)
        say("step %d: %.2f s, loss %.3f" % (i + 1, times[-1], float(loss)))
    figures["first_step_s"] = round(times[0], 2)
    if len(times) > 1:
        figures["step_s"] = round(statistics.median(times[1:]), 2)
    figures["peak_gb"] = round(peak_gb(), 2)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
