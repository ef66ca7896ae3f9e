"""Training and evaluation speed, compile time and memory: this project's
networks side by side with the same networks built the plain way.

    python bench/speed.py                      # normal 18, bottleneck 18, wide 2 4, normal 3
    python bench/speed.py --networks "normal 3" --steps 4      # a quick look

"Plain way" (the baseline): PyPI Lasagne 0.1's stock Conv2DLayer(pad='same')
(a kernel-flipping 'full' convolution, cropped), batch normalisation written
in plain Theano (float64 accumulation, separate ReLU), the same graph and
Nesterov updates; fed by a synchronous loop that copies each batch and pads,
crops and flips every image and channel with np.pad in Python; evaluated one
image at a time. It runs twice: with Theano's default flags ("plain"; its
convolution then uses one core) and with ``openmp=True`` ("plain+omp", both
cores). Ratios are taken against the faster of the two. "Ours": the project
as it trains (engine.ops' C ops, the batch worker thread, batched evaluation),
Theano's default flags.

Each network and implementation runs in fresh processes: a first one on an
empty Theano compile cache (cold compile), a second on the cache the first
filled (warm compile, time to the first step). Every figure is printed with
ours/baseline, and everything goes to bench/results/speed-<time>.json with
the CPU model and core count. "% of sgemm" is the train step's GFLOP/s over
sgemm's, in pairs taken one right after the other in the same process (a
step, then one 4096 x 4096 sgemm, then a 0.1 s pause; the median of the
pairs' ratios): this machine's speed drifts by more than the margins
measured here, within seconds (the same kernel ran at 120 and at 210
GFLOP/s in consecutive runs). "train GFLOP/s" is from the timed loop's
throughput, data feeding included.
"""

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
sys.path.insert(0, PROJECT)

NETWORKS = ["normal 18", "bottleneck 18", "wide 2 4", "normal 3"]


# =============================================================================
# The baseline's layers (used only in a child process)


def install_plain_layers():
    """Make models.build_model use stock Lasagne 0.1 convolutions and
    textbook batch normalisation."""
    import theano
    import theano.tensor as T
    import lasagne
    from engine import layers
    import models

    class StockConv(lasagne.layers.Conv2DLayer):
        def __init__(self, incoming, num_filters, filter_size, stride=1,
                     W=lasagne.init.GlorotUniform(), b=None, **kwargs):
            super().__init__(incoming, num_filters, filter_size, stride=stride, pad="same",
                             W=W, b=b, nonlinearity=None, **kwargs)

    class TextbookBatchNorm(layers.BatchNormLayer):
        def get_output_for(self, input, deterministic=False, **kwargs):
            axes = (0, 2, 3)
            if deterministic:
                mean, inv_std = self.mean, (
                    self.spread if self.running == "inv_std"
                    else T.inv(T.sqrt(self.spread + self.epsilon)))
            else:
                mean = input.mean(axes)  # Theano's default: float64 accumulation
                var = input.var(axes)
                inv_std = T.inv(T.sqrt(var + self.epsilon))
                running_mean = theano.clone(self.mean, share_inputs=False)
                running_spread = theano.clone(self.spread, share_inputs=False)
                running_mean.default_update = ((1 - self.alpha) * running_mean
                                               + self.alpha * mean)
                running_spread.default_update = (
                    (1 - self.alpha) * running_spread
                    + self.alpha * (inv_std if self.running == "inv_std" else var))
                mean += 0 * (running_mean + running_spread)
            out = ((input - mean.dimshuffle("x", 0, "x", "x"))
                   * (self.gamma * inv_std).dimshuffle("x", 0, "x", "x")
                   + self.beta.dimshuffle("x", 0, "x", "x"))
            return T.nnet.relu(out) if self.relu else out

    models.CrossCorrelation2DLayer = StockConv
    models.BatchNormLayer = TextbookBatchNorm


def plain_batches(images, labels, batch_size, stats, rng):
    """The synchronous per-image loop of the plain way."""
    import numpy as np
    for start in range(0, len(images) - batch_size + 1, batch_size):
        picks = rng.permutation(len(images))[:batch_size]
        batch = ((images[picks].astype(np.float32) - stats["mean"]) / stats["std"]).copy()
        for i in range(batch_size):
            dy, dx = rng.integers(0, 9, 2)
            flip = rng.random() < 0.5
            for c in range(3):
                padded = np.pad(batch[i, c], 4, mode="constant")
                crop = padded[dy:dy + 32, dx:dx + 32]
                batch[i, c] = crop[:, ::-1] if flip else crop
        yield batch, labels[picks]


def forward_macs(network):
    import lasagne
    total = 0
    for layer in lasagne.layers.get_all_layers(network):
        if hasattr(layer, "filter_size") and hasattr(layer, "num_filters"):
            _, m, h, w = layer.output_shape
            size = layer.filter_size  # an int in ours, a tuple in Lasagne's
            taps = size * size if isinstance(size, int) else size[0] * size[1]
            total += m * h * w * layer.input_shape[1] * taps
        elif isinstance(layer, lasagne.layers.DenseLayer):
            total += layer.input_shape[1] * layer.num_units
    return total


# =============================================================================
# One measurement, in a child process


def child(spec):
    started = time.time()
    import numpy as np
    import engine  # noqa: F401  (configures Theano)
    from engine import layers, loop
    import models
    import train_nn
    import utils

    if spec["impl"] == "baseline":
        install_plain_layers()
        layers.USE_C_OPS = False
    variant, depth, width = spec["variant"], spec["depth"], spec["width"]
    info = models.network_info(variant, depth, width, "paper", "cifar10")
    recipe = train_nn.resolve_recipe("paper", variant)
    batch = recipe["batch_size"]
    net = models.Network(info)
    result = {"macs": forward_macs(net.output), "batch": batch}
    t = time.time()
    train_step, learning_rate, _ = train_nn.compile_training_step(net, recipe)
    result["compile_train_s"] = time.time() - t

    rng = np.random.default_rng(0)
    count = batch * (spec["steps"] + 1)
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, count).astype(np.int32)
    stats = utils.normalisation_stats("channel_mean_std", images)
    learning_rate.set_value(np.float32(0.1))

    if spec["impl"] == "ours":
        plan = utils.epoch_plan(0, 0, count, recipe["pad"])
        positions = utils.batch_positions(count, batch, True)
        loader = loop.Prefetcher(
            lambda i: utils.make_batch(images, labels, plan, *positions[i], stats,
                                       recipe["pad"], recipe["pad_mode"]),
            range(len(positions)))
        batches = iter(loader)
    else:
        batches = plain_batches(images, labels, batch, stats, rng)
    # First step (not timed in the throughput).
    x, y = next(batches)
    train_step(x, y)
    result["first_step_from_start_s"] = time.time() - started
    inside, step_times = 0.0, []
    loop_start = time.time()
    for x, y in batches:
        t = time.time()
        train_step(x, y)
        step_times.append(time.time() - t)
    wall = time.time() - loop_start
    # Efficiency: pairs of (one step on the last batch, one sgemm), timed back
    # to back, so that both see the machine in the same state.
    step_flops = 6 * result["macs"] * batch
    sgemm = sgemm_timer()
    result["pair_step_gflops"], result["pair_sgemm_gflops"] = [], []
    for _ in range(spec["pairs"]):
        t = time.time()
        train_step(x, y)
        result["pair_step_gflops"].append(step_flops / (time.time() - t) / 1e9)
        result["pair_sgemm_gflops"].append(sgemm())
        # OpenBLAS's threads spin for a while after a call, taking the cores
        # from the next step's OpenMP threads (measured: normal 1's step ran
        # at 62 GFLOP/s right after an sgemm, 74-88 with a 50 ms pause)
        time.sleep(0.1)
    if spec["pairs"]:
        result["sgemm_gflops"] = float(np.median(result["pair_sgemm_gflops"]))
        result["sgemm_share"] = 100 * float(np.median(
            np.divide(result["pair_step_gflops"], result["pair_sgemm_gflops"])))
    inside = sum(step_times)
    steps = len(step_times)
    result["train_img_s"] = steps * batch / wall
    result["step_img_s"] = batch / float(np.median(step_times))
    result["outside_share"] = 1 - inside / wall

    t = time.time()
    net.compile_predict()  # train_nn.py compiles it at the first test, too
    result["compile_predict_s"] = time.time() - t
    eval_count = spec["eval_images"] if spec["impl"] == "ours" else spec["eval_images_plain"]
    test = rng.integers(0, 256, (eval_count, 3, 32, 32), dtype=np.uint8)
    t = time.time()
    if spec["impl"] == "ours":
        models.predict_labels(net, test, stats, 500)
    else:
        for i in range(eval_count):
            net.predict(utils.normalise(test[i:i + 1], stats))
    result["eval_img_s"] = eval_count / (time.time() - t)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print("RESULT " + json.dumps(result), flush=True)


IMPLEMENTATIONS = {"plain": ("baseline", ""), "plain+omp": ("baseline", "openmp=True"),
                   "ours": ("ours", "")}


def run_child(spec, compiledir):
    env = dict(os.environ)
    flags = [f for f in (env.get("THEANO_FLAGS", ""), spec.get("flags", "")) if f]
    env["THEANO_FLAGS"] = ",".join(["base_compiledir=%s" % compiledir] + flags)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                         capture_output=True, text=True, env=env, cwd=PROJECT)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError("benchmark child failed:\n" + out.stderr[-3000:])


# =============================================================================
# The sgemm reference (children time it in pairs with their steps), the runs, the table


def sgemm_timer(size=4096):
    """A function that runs one size x size sgemm through Theano's Dot22 (the
    BLAS Theano is linked to, all cores) and returns its GFLOP/s."""
    import numpy as np
    import engine  # noqa: F401  (configures Theano)
    import theano
    import theano.tensor as T
    a = T.matrix()
    f = theano.function([a], T.dot(a, a))
    x = np.random.default_rng(0).random((size, size), dtype=np.float32)
    f(x)

    def run():
        t = time.time()
        f(x)
        return 2 * size ** 3 / (time.time() - t) / 1e9
    return run


def sgemm_gflops(repeats=5):
    """The best of a few sgemm timings."""
    run = sgemm_timer()
    return max(run() for _ in range(repeats))


FIGURES = [("cold compile s", "cold_compile_s", False), ("warm compile s", "warm_compile_s", False),
           ("warm start to 1st step s", "first_step_from_start_s", False),
           ("train img/s", "train_img_s", True), ("eval img/s", "eval_img_s", True),
           ("peak RSS GB", "peak_rss_gb", False), ("train GFLOP/s", "gflops", True),
           ("sgemm GFLOP/s next to the steps", "sgemm_gflops", True),
           ("% of sgemm (step / sgemm, paired)", "sgemm_share", True),
           ("outside step %", "outside_percent", False)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(NETWORKS),
                        help="comma-separated 'VARIANT DEPTH [WIDTH]' (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per run")
    parser.add_argument("--pairs", type=int, default=8,
                        help="(step, sgemm) pairs for %% of sgemm, ours")
    parser.add_argument("--pairs-plain", type=int, default=3,
                        help="(step, sgemm) pairs for %% of sgemm, the baseline (slow steps)")
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--eval-images-plain", type=int, default=200,
                        help="images for the batch-size-1 evaluation")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if min(args.steps, args.pairs, args.pairs_plain) < 1:
        parser.error("--steps, --pairs and --pairs-plain take a count of at least 1")

    from engine import loop
    machine = loop.machine_description()
    gflops = sgemm_gflops()
    print("%s, %d cores; sgemm (Theano Dot22, OpenBLAS): %.0f GFLOP/s at the start "
          "(%% of sgemm: against sgemm timed right after each step, in pairs)"
          % (machine["cpu"], machine["cores"], gflops), flush=True)
    rows = []
    for network in [n.strip() for n in args.networks.split(",") if n.strip()]:
        parts = network.split()
        spec = {"variant": parts[0], "depth": int(parts[1]),
                "width": int(parts[2]) if len(parts) > 2 else 1, "steps": args.steps,
                "eval_images": args.eval_images, "eval_images_plain": args.eval_images_plain}
        for name, (impl, flags) in IMPLEMENTATIONS.items():
            compiledir = tempfile.mkdtemp(prefix="bench-theano-")
            try:
                pairs = args.pairs if impl == "ours" else args.pairs_plain
                cold = run_child(dict(spec, impl=impl, flags=flags, steps=1, pairs=0), compiledir)
                warm = run_child(dict(spec, impl=impl, flags=flags, pairs=pairs), compiledir)
            finally:
                shutil.rmtree(compiledir, ignore_errors=True)
            row = dict(warm, network=network, impl=name, theano_flags=flags,
                       cold_compile_s=cold["compile_train_s"],
                       warm_compile_s=warm["compile_train_s"])
            row["gflops"] = 6 * row["macs"] * row["train_img_s"] / 1e9
            row["outside_percent"] = 100 * row["outside_share"]
            rows.append(row)
            print("  %-14s %-9s %s" % (network, name, ", ".join(
                "%s %.3g" % (label, row[key]) for label, key, _ in FIGURES)), flush=True)

    header = "| network | figure | plain | plain+omp | ours | ours / best plain |"
    lines = [header, "| --- | --- | --- | --- | --- | --- |"]
    for network in dict.fromkeys(r["network"] for r in rows):
        found = {r["impl"]: r for r in rows if r["network"] == network}
        ours = found["ours"]
        for label, key, higher_is_better in FIGURES:
            plain = [found[name][key] for name in ("plain", "plain+omp")]
            best = max(plain) if higher_is_better else min(plain)
            lines.append("| %s (batch %d) | %s | %.3g | %.3g | %.3g | %.2f |" % (
                network, ours["batch"], label, plain[0], plain[1], ours[key],
                ours[key] / best if best else float("nan")))
    table = "\n".join(lines)
    print("\n" + table)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "speed-%s.json"
                        % datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    with open(path, "w") as f:
        json.dump({"machine": machine, "sgemm_gflops": gflops, "rows": rows,
                   "versions": loop.library_versions(), "table": table,
                   "command": " ".join(sys.argv)}, f, indent=2)
    print("\nwritten: %s" % path)


if __name__ == "__main__":
    sys.exit(main())
