"""Training and evaluation speed, compile time and memory: this project's
networks side by side with the same networks built the plain way.

    python bench/speed.py                      # normal 18, bottleneck 18, wide 2 4, normal 3
    python bench/speed.py --networks "normal 3" --steps 4      # a quick look
    python bench/speed.py --quick              # the regression guard: a few minutes

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

Side by side with PyTorch (``--torch``, or ``--only-torch`` without the plain
baseline): the same networks written in PyTorch (bench/torch_models.py; pip
install -r bench/requirements.txt), fp32, channels_last, the same batch and
thread count, Nesterov SGD with weight decay, in a live process of its own
next to a live process of ours. The parent tells them in turn to run a round
of training steps (then of evaluation), so both see the machine in the same
state; ratios are ours / PyTorch of the medians. "Effective GFLOP/s" is the
direct convolutions' arithmetic (6 x forward multiply-adds per image) over the
step's time, paired with an sgemm timed right after each of our rounds.

The regression guard (``--quick``, default network "normal 18"): in this
process, on the compile cache as it is, rounds of training steps each
paired with an sgemm; prints the step's effective GFLOP/s over sgemm's
beside the same figure of the last run committed in docs/speed/ (a ratio of
ratios: this machine's speed drifts, the ratio to sgemm far less), and how
many of the step's convolutions engine/fusion.py fused. Nothing is written.
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

from networks import parse as parse_network  # bench/networks.py, beside this script

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
                     W=lasagne.init.GlorotUniform(), b=None, nonlinearity=None, **kwargs):
            super().__init__(incoming, num_filters, filter_size, stride=stride, pad="same",
                             W=W, b=b, nonlinearity=nonlinearity, **kwargs)

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
    else:
        from engine import compat
        compat.keep_freed_memory()   # as train_nn.py's main() does
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


# =============================================================================
# Side by side with PyTorch: two live processes, told in turn to run a round


def serve(ready, commands):
    """Print READY with ``ready`` (a dict), then answer one JSON line per
    command line on stdin ("NAME ARG"), until "quit"."""
    print("READY " + json.dumps(ready), flush=True)
    for line in sys.stdin:
        name, _, arg = line.strip().partition(" ")
        if name == "quit":
            return
        print("REPLY " + json.dumps(commands[name](int(arg or 0))), flush=True)


def peak_rss(_):
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def live_ours(spec):
    started = time.time()
    import numpy as np
    import engine  # noqa: F401  (configures Theano)
    from engine import compat
    from engine import ops
    import models
    import train_nn
    import utils
    compat.keep_freed_memory()   # as train_nn.py runs
    ops.DEFAULT_ALGO = spec["algo"]
    info = models.network_info(spec["variant"], spec["depth"], spec["width"], "paper", "cifar10")
    recipe = train_nn.resolve_recipe("paper", spec["variant"])
    batch = recipe["batch_size"]
    net = models.Network(info)
    train_step, learning_rate, _ = train_nn.compile_training_step(net, recipe)
    learning_rate.set_value(np.float32(0.1))
    net.compile_predict()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4 * batch, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 4 * batch).astype(np.int32)
    stats = utils.normalisation_stats("channel_mean_std", images)
    plan = utils.epoch_plan(0, 0, len(images), recipe["pad"])
    batches = [utils.make_batch(images, labels, plan, start, stop, stats, recipe["pad"],
                                recipe["pad_mode"])
               for start, stop in utils.batch_positions(len(images), batch, True)]
    train_step(*batches[0])
    test = rng.integers(0, 256, (spec["eval_images"], 3, 32, 32), dtype=np.uint8)
    models.predict_labels(net, test[:500], stats, 500)
    sgemm = sgemm_timer()

    def train(steps):
        times = []
        for i in range(steps):
            t = time.time()
            train_step(*batches[i % len(batches)])
            times.append(time.time() - t)
        return {"times": times}

    def evaluate(_):
        t = time.time()
        models.predict_labels(net, test, stats, 500)
        return {"seconds": time.time() - t}

    serve({"batch": batch, "macs": forward_macs(net.output),
           "start_s": time.time() - started},
          {"train": train, "eval": evaluate, "sgemm": lambda _: {"gflops": sgemm()},
           "memory": peak_rss})


def live_torch(spec):
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torch_models   # nothing of ours (no Theano) in this process
    torch.set_num_threads(spec["threads"])
    recipe = spec["recipe"]
    batch = recipe["batch_size"]
    torch.manual_seed(0)
    model = torch_models.PreResNet(spec["variant"], spec["depth"], spec["width"])
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=recipe["momentum"],
                                nesterov=True, weight_decay=recipe["weight_decay"])
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(rng.normal(size=(batch, 3, 32, 32)).astype(np.float32))
                .contiguous(memory_format=torch.channels_last),
                torch.from_numpy(rng.integers(0, 10, batch)))
               for _ in range(4)]
    test = rng.integers(0, 256, (spec["eval_images"], 3, 32, 32), dtype=np.uint8)
    mean, std = 127.5, 64.0

    def train(steps):
        model.train()
        times = []
        for i in range(steps):
            x, y = batches[i % len(batches)]
            t = time.time()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            times.append(time.time() - t)
        return {"times": times}

    def evaluate(_):
        model.eval()
        t = time.time()
        with torch.no_grad():
            for i in range(0, len(test), 500):
                x = ((torch.from_numpy(test[i:i + 500]).float() - mean) / std)
                model(x.contiguous(memory_format=torch.channels_last)).argmax(1)
        return {"seconds": time.time() - t}

    train(2)
    evaluate(0)
    config = torch.__config__.show()
    onednn = [line.strip() for line in config.splitlines() if "MKL-DNN" in line or "oneDNN" in line]
    serve({"batch": batch, "torch": torch.__version__, "onednn": onednn[0] if onednn else "",
           "threads": torch.get_num_threads(),
           "macs": torch_models.forward_macs(spec["variant"], spec["depth"], spec["width"])},
          {"train": train, "eval": evaluate, "memory": peak_rss})


class Live:
    """A live child process of this script that answers commands."""

    def __init__(self, kind, spec, compiledir):
        env = dict(os.environ)
        # last: Theano takes the last base_compiledir, and importing the engine
        # in this process wrote the project's folder into THEANO_FLAGS
        flags = [f for f in (env.get("THEANO_FLAGS", ""),) if f]
        env["THEANO_FLAGS"] = ",".join(flags + ["base_compiledir=%s" % compiledir])
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--live", kind, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=PROJECT)
        self.ready = None

    def wait_ready(self):
        """Block until the child has compiled and warmed up (all children
        start at once, so that their compilations overlap)."""
        self.ready = self._read("READY ")
        return self

    def _read(self, prefix):
        for line in self.process.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])
        raise RuntimeError("benchmark child ended without %s(exit %s)"
                           % (prefix, self.process.wait()))

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read("REPLY ")

    def close(self):
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        except OSError:
            pass
        self.process.wait()


def side_by_side(network, args, compiledir):
    """One network, ours and PyTorch in alternating rounds; a row of figures."""
    import numpy as np
    import train_nn
    variant, depth, width = parse_network(network)
    recipe = train_nn.resolve_recipe("paper", variant)
    spec = {"variant": variant, "depth": depth, "width": width,
            "eval_images": args.eval_images, "threads": os.cpu_count(),
            "recipe": {key: recipe[key] for key in ("batch_size", "momentum", "weight_decay")}}
    # ours as it runs, PyTorch, and (--direct) ours with the direct kernels alone
    children = {}
    try:
        children["ours"] = Live("ours", dict(spec, algo="auto"), compiledir)
        children["torch"] = Live("torch", spec, compiledir)
        if args.direct:
            # a compile folder of its own: Theano compiles one module at a time per folder
            children["direct"] = Live("ours", dict(spec, algo="direct"),
                                      os.path.join(compiledir, "direct"))
        for child in children.values():
            child.wait_ready()
        ours, theirs = children["ours"], children["torch"]
        if ours.ready["macs"] != theirs.ready["macs"]:
            raise RuntimeError("the PyTorch network differs from ours: %d vs %d multiply-adds"
                               % (theirs.ready["macs"], ours.ready["macs"]))
        names = list(children)
        times = {name: [] for name in names}
        pairs = []   # (our step's effective GFLOP/s, sgemm right after)
        flops = 6 * ours.ready["macs"] * ours.ready["batch"]
        for order in in_turn(names, args.rounds):
            for name in order:
                round_times = children[name].ask("train %d" % args.round_steps)["times"]
                times[name] += round_times
                if name == "ours":
                    pairs.append((flops / float(np.median(round_times)) / 1e9,
                                  ours.ask("sgemm")["gflops"]))
                time.sleep(0.1)   # spinning BLAS/OpenMP threads leave the cores
        evals, memory = evaluate_in_turn(children, args.eval_rounds)
    finally:
        for child in children.values():
            child.close()
    batch = ours.ready["batch"]
    row = {"network": network, "batch": batch, "torch": theirs.ready["torch"],
           "onednn": theirs.ready["onednn"], "torch_threads": theirs.ready["threads"],
           "step_times": times, "eval_seconds": evals, "pairs": pairs,
           "ours_start_s": ours.ready["start_s"]}
    for name in names:
        row[name + "_train_img_s"] = batch / float(np.median(times[name]))
        row[name + "_eval_img_s"] = args.eval_images / float(np.median(evals[name]))
        row[name + "_peak_rss_gb"] = memory[name]
        row[name + "_effective_gflops"] = flops / float(np.median(times[name])) / 1e9
    row["sgemm_gflops"] = float(np.median([p[1] for p in pairs]))
    row["effective_over_sgemm"] = float(np.median([p[0] / p[1] for p in pairs]))
    return row


def in_turn(names, rounds):
    """Each round's order of the live processes: every one in turn, starting
    with the next one each round, so that none always runs first."""
    for round_ in range(rounds):
        yield names[round_ % len(names):] + names[:round_ % len(names)]


def evaluate_in_turn(children, rounds):
    """Evaluation rounds of live processes in turn, then each one's peak
    memory: ({name: [seconds per round]}, {name: peak RSS in GB})."""
    evals = {name: [] for name in children}
    for order in in_turn(list(children), rounds):
        for name in order:
            evals[name].append(children[name].ask("eval")["seconds"])
            time.sleep(0.1)   # spinning BLAS/OpenMP threads leave the cores
    return evals, {name: child.ask("memory")["peak_rss_gb"] for name, child in children.items()}


TORCH_FIGURES = [("train img/s", "train_img_s", True), ("eval img/s", "eval_img_s", True),
                 ("peak RSS GB", "peak_rss_gb", False),
                 ("effective GFLOP/s (train)", "effective_gflops", True)]


def torch_table(rows):
    direct = all("direct_train_img_s" in row for row in rows)
    lines = ["| network | figure | ours | PyTorch | ours / PyTorch |"
             + (" ours, direct kernels only | ours / direct |" if direct else ""),
             "| --- | --- | --- | --- | --- |" + (" --- | --- |" if direct else "")]
    for row in rows:
        for label, key, _ in TORCH_FIGURES:
            line = "| %s (batch %d) | %s | %.3g | %.3g | %.2f |" % (
                row["network"], row["batch"], label, row["ours_" + key], row["torch_" + key],
                row["ours_" + key] / row["torch_" + key])
            if direct:
                line += " %.3g | %.2f |" % (row["direct_" + key],
                                             row["ours_" + key] / row["direct_" + key])
            lines.append(line)
        lines.append("| %s (batch %d) | sgemm GFLOP/s next to our steps; effective / sgemm "
                     "(paired) | %.3g | | %.2f |%s" % (row["network"], row["batch"],
                                                      row["sgemm_gflops"],
                                                      row["effective_over_sgemm"],
                                                      " | |" if direct else ""))
    return "\n".join(lines)


IMPLEMENTATIONS = {"plain": ("baseline", ""), "plain+omp": ("baseline", "openmp=True"),
                   "ours": ("ours", "")}


def run_child(spec, compiledir):
    env = dict(os.environ)
    flags = [f for f in (env.get("THEANO_FLAGS", ""), spec.get("flags", "")) if f]
    env["THEANO_FLAGS"] = ",".join(flags + ["base_compiledir=%s" % compiledir])   # see Live
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


def last_committed_run(network):
    """(file name, effective / sgemm) of the newest JSON in docs/speed/ with a
    side-by-side row for ``network``, or None."""
    folder = os.path.join(PROJECT, "docs", "speed")
    for name in sorted(os.listdir(folder) if os.path.isdir(folder) else [], reverse=True):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(folder, name)) as f:
            rows = json.load(f).get("torch_rows", [])
        for row in rows:
            if row["network"] == network and "effective_over_sgemm" in row:
                return name, row["effective_over_sgemm"]
    return None


def quick(networks, rounds, round_steps):
    """The regression guard (see the module's docstring)."""
    import numpy as np
    import engine  # noqa: F401  (configures Theano)
    from engine import compat, ops
    import models
    import networks as bench_networks
    compat.keep_freed_memory()   # as train_nn.py runs
    sgemm = sgemm_timer()
    for network in networks:
        variant, depth, width = parse_network(network)
        t = time.time()
        step, recipe = bench_networks.paper_training_step(network)
        compile_s = time.time() - t
        nodes = step.maker.fgraph.toposort()
        fused = sum(isinstance(n.op, (ops.Conv2D, ops.Conv2DGrad)) and n.op.prologue is not None
                    for n in nodes)
        convolutions = sum(isinstance(n.op, (ops.Conv2D, ops.Conv2DGrad)) for n in nodes)
        batch = recipe["batch_size"]
        flops = 6 * forward_macs(models.build_model(variant, depth, width)) * batch
        x, y = bench_networks.random_batch(batch)
        step(x, y)
        pairs, times = [], []
        for _ in range(rounds):
            round_times = []
            for _ in range(round_steps):
                t = time.time()
                step(x, y)
                round_times.append(time.time() - t)
            times += round_times
            pairs.append(flops / float(np.median(round_times)) / 1e9 / sgemm())
            time.sleep(0.1)   # spinning BLAS threads leave the cores
        ratio = float(np.median(pairs))
        last = last_committed_run(network)
        print("%s: step %.3f s (%.0f img/s), effective %.2f x sgemm (%d rounds of %d steps, "
              "each paired with an sgemm; %.2f-%.2f); %d of %d convolution ops read through a "
              "batch norm; compiled in %.0f s" % (
                  network, float(np.median(times)), batch / float(np.median(times)), ratio,
                  rounds, round_steps, min(pairs), max(pairs), fused, convolutions, compile_s))
        if last:
            print("  last committed run (docs/speed/%s): %.2f x sgemm; now / then: %.2f"
                  % (last[0], last[1], ratio / last[1]), flush=True)
        else:
            print("  no committed run in docs/speed/ has %s" % network, flush=True)


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
    parser.add_argument("--torch", action="store_true",
                        help="also ours side by side with PyTorch (bench/requirements.txt)")
    parser.add_argument("--only-torch", action="store_true",
                        help="only the side-by-side comparison with PyTorch")
    parser.add_argument("--rounds", type=int, default=6,
                        help="alternating training rounds, ours and PyTorch")
    parser.add_argument("--round-steps", type=int, default=3, help="training steps per round")
    parser.add_argument("--eval-rounds", type=int, default=2)
    parser.add_argument("--direct", action="store_true",
                        help="side by side: also ours with the direct convolutions alone "
                             "(engine.ops.DEFAULT_ALGO='direct'), a third live process")
    parser.add_argument("--quick", action="store_true",
                        help="the regression guard: effective GFLOP/s over sgemm of the "
                             "training step (--networks, default 'normal 18'), beside the last "
                             "committed run's; a few minutes, nothing written")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--live", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.live:
        kind, spec = args.live
        return (live_ours if kind == "ours" else live_torch)(json.loads(spec))
    if args.quick:
        chosen = args.networks if args.networks != ",".join(NETWORKS) else "normal 18"
        return quick([n.strip() for n in chosen.split(",") if n.strip()], args.rounds,
                     args.round_steps)
    if min(args.steps, args.pairs, args.pairs_plain) < 1:
        parser.error("--steps, --pairs and --pairs-plain take a count of at least 1")

    from engine import loop
    machine = loop.machine_description()
    gflops = sgemm_gflops()
    print("%s, %d cores; sgemm (Theano Dot22, OpenBLAS): %.0f GFLOP/s at the start "
          "(%% of sgemm: against sgemm timed right after each step, in pairs)"
          % (machine["cpu"], machine["cores"], gflops), flush=True)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    torch_rows = []
    if args.torch or args.only_torch:
        for network in networks:
            compiledir = tempfile.mkdtemp(prefix="bench-theano-")
            try:
                row = side_by_side(network, args, compiledir)
            finally:
                shutil.rmtree(compiledir, ignore_errors=True)
            torch_rows.append(row)
            print("  %-14s ours / PyTorch %s %s: train %.3g / %.3g img/s (%.2f), eval %.3g / "
                  "%.3g img/s (%.2f), peak %.3g / %.3g GB; effective %.0f GFLOP/s, "
                  "%.2f x sgemm (%.0f GFLOP/s)" % (
                      network, row["torch"], row["onednn"], row["ours_train_img_s"],
                      row["torch_train_img_s"],
                      row["ours_train_img_s"] / row["torch_train_img_s"],
                      row["ours_eval_img_s"], row["torch_eval_img_s"],
                      row["ours_eval_img_s"] / row["torch_eval_img_s"],
                      row["ours_peak_rss_gb"], row["torch_peak_rss_gb"],
                      row["ours_effective_gflops"], row["effective_over_sgemm"],
                      row["sgemm_gflops"]), flush=True)
        print("\n" + torch_table(torch_rows) + "\n", flush=True)
    rows = []
    for network in networks if not args.only_torch else []:
        variant, depth, width = parse_network(network)
        spec = {"variant": variant, "depth": depth, "width": width, "steps": args.steps,
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
    table = "\n".join(lines) if rows else ""
    if rows:
        print("\n" + table)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "speed-%s.json"
                        % datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    with open(path, "w") as f:
        json.dump({"machine": machine, "sgemm_gflops": gflops, "rows": rows,
                   "torch_rows": torch_rows,
                   "torch_table": torch_table(torch_rows) if torch_rows else "",
                   "versions": loop.library_versions(), "table": table,
                   "command": " ".join(sys.argv)}, f, indent=2)
    print("\nwritten: %s" % path)


if __name__ == "__main__":
    sys.exit(main())
