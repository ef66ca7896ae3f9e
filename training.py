"""Recipes, optimisers, the training loop with exact resume, and evaluation.

``train_nn.py`` and ``test_model.py`` are thin command-line programs over the
functions here. Sections: recipes (data, with their sources), learning-rate
schedule, updates, compiled functions, batches, evaluation, checkpoints, and
the training loop.
"""
import json
import math
import os
import platform
import queue
import re
import shutil
import signal
import sys
import threading
import time
from collections import OrderedDict

import numpy as np

from engine import layers  # first: importing the engine configures Theano
import theano
import theano.tensor as T
import lasagne
from lasagne.layers import get_all_params, get_output, count_params
from lasagne.objectives import categorical_crossentropy
from lasagne.regularization import l2, regularize_network_params

import models
import utils
from utils import UserError

# =============================================================================
# Recipes: every hyperparameter of a run, with where it comes from.
# Epochs are counted from 0 here; "lr_milestones" are the 0-based epochs at
# whose start the learning rate is multiplied by "lr_factor".

RECIPES = {
    "paper-preresnet": {
        "source": "He et al. 2016 (arXiv 1603.05027) as run by the authors' code: "
                  "fb.resnet.torch train.lua/opts.lua with resnet-pre-act.lua "
                  "(KaimingHe/resnet-1k-layers)",
        "epochs": 164,
        "batch_size": 128,
        "lr": 0.1,
        # Torch counts epochs from 1 and decays when epoch >= 81 and >= 122.
        "lr_milestones": [80, 121],
        "lr_factor": 0.1,
        # Optional warm-up (He et al. 2016 Sec. 4.1 use 0.01 for 400 iterations
        # on ResNet-1001): off by default, --warmup-iters 400 turns it on.
        "warmup_iters": 0,
        "warmup_epochs": 0,
        "warmup_lr": 0.01,
        "momentum": 0.9,
        # optim.sgd with nesterov=true, dampening=0.
        "optimizer": "nesterov_torch",
        "reset_momentum_at_milestones": False,
        "weight_decay": 1e-4,
        # optim.sgd adds weightDecay * w to the gradient of every parameter,
        # batch-norm scale and shift and the classifier's bias included.
        "decay": "gradient_all",
        "normalisation": "channel_mean_std",
        "pad": 4,
        "pad_mode": "zero",  # t.RandomCrop(32, 4): zero padding
        "val_size": 0,  # all 50,000 images; the final epoch's test error is reported
        "drop_last": False,  # fb.resnet.torch's loader keeps the last partial batch
        "dropout": 0.0,
        "publish": "final",
    },
    "paper-wrn": {
        "source": "Zagoruyko & Komodakis 2016 (arXiv 1605.07146) as run by the "
                  "authors' code: szagoruyko/wide-residual-networks train.lua and "
                  "scripts/train_cifar.sh",
        "epochs": 200,
        "batch_size": 128,
        "lr": 0.1,
        # epoch_step={60,120,160}: train.lua decays at the start of its (1-based)
        # epochs 60, 120 and 160, i.e. before 0-based epochs 59, 119 and 159.
        "lr_milestones": [59, 119, 159],
        "lr_factor": 0.2,
        "warmup_iters": 0,
        "warmup_epochs": 0,
        "warmup_lr": 0.01,
        "momentum": 0.9,
        "optimizer": "nesterov_torch",
        # updateLR() rebuilds optimState from opt: the momentum buffers restart.
        "reset_momentum_at_milestones": True,
        "weight_decay": 5e-4,
        "decay": "gradient_all",
        "normalisation": "channel_mean_std",  # meanstd, the README's final numbers
        "pad": 4,
        "pad_mode": "reflect",  # randomcrop_type=reflection
        "val_size": 0,
        "drop_last": True,  # "remove last element so that all minibatches have equal size"
        "dropout": 0.0,  # 0.3 for the "-dropout" rows: --dropout 0.3
        "publish": "final",
    },
    "seed": {
        "source": "the old Lasagne repository's train_nn.py "
                  "(../shared/reference/old-repository.md)",
        "epochs": 200,
        "batch_size": 64,
        "lr": 0.1,
        "lr_milestones": [80, 120],
        "lr_factor": 0.1,
        "warmup_iters": 0,
        "warmup_epochs": 10,  # lr 0.01 for epochs 0-9
        "warmup_lr": 0.01,
        "momentum": 0.9,
        "optimizer": "nesterov_lasagne",
        "reset_momentum_at_milestones": False,
        "weight_decay": 1e-4,
        # loss + 1e-4 * sum(w**2) over regularizable parameters: an effective
        # decay of 2e-4 on conv/dense weights and batch-norm gamma.
        "decay": "l2_loss_regularizable",
        "normalisation": "pixel_mean",
        "pad": 4,
        "pad_mode": "zero",
        "val_size": 5000,
        "drop_last": True,
        "dropout": 0.0,
        "publish": "best_val",  # it saved the best-on-validation parameters
    },
}

CHOICES = {
    "optimizer": ("nesterov_torch", "nesterov_lasagne"),
    "decay": ("gradient_all", "l2_loss_regularizable"),
    "normalisation": ("channel_mean_std", "pixel_mean"),
    "pad_mode": ("zero", "reflect"),
    "publish": ("final", "best_val"),
}

# Published CIFAR test error (%), for the curves and the summary line.
PAPER_TEST_ERROR = {
    ("preresnet110", "cifar10", False): 6.37,
    ("preresnet164", "cifar10", False): 5.46,
    ("preresnet164", "cifar100", False): 24.33,
    ("wrn16-4", "cifar10", False): 5.02,
    ("wrn16-4", "cifar10", True): 5.24,
    ("wrn16-4", "cifar100", False): 24.03,
    ("wrn28-10", "cifar10", False): 4.00,
    ("wrn28-10", "cifar10", True): 3.89,
    ("wrn28-10", "cifar100", False): 19.25,
}


def paper_error(network_info, dropout):
    base = network_info["name"].replace("-cifar100", "")
    return PAPER_TEST_ERROR.get((base, network_info["dataset"], dropout > 0))


def resolve_recipe(name, variant, overrides=None):
    """The recipe a run uses: ``paper`` means the family's paper recipe; then
    any override (a dict of recipe keys) replaces the recipe's value."""
    if name == "paper":
        name = "paper-wrn" if variant == "wide" else "paper-preresnet"
    if name not in RECIPES:
        raise UserError("unknown recipe %r: choose paper, %s" % (name, ", ".join(RECIPES)))
    recipe = dict(RECIPES[name], name=name)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in recipe:
            raise ValueError("not a recipe key: %r" % key)
        if key in CHOICES and value not in CHOICES[key]:
            raise UserError("%s must be one of %s" % (key, ", ".join(CHOICES[key])))
        recipe[key] = value
    return recipe


def learning_rate(recipe, epoch, iteration):
    """Learning rate of the step at 0-based ``epoch`` and global ``iteration``."""
    if epoch < recipe["warmup_epochs"] or iteration < recipe["warmup_iters"]:
        return recipe["warmup_lr"]
    drops = sum(epoch >= m for m in recipe["lr_milestones"])
    return recipe["lr"] * recipe["lr_factor"] ** drops


# =============================================================================
# Updates


def nesterov_torch(grads, params, learning_rate, momentum):
    """Torch's ``optim.sgd`` with ``nesterov=true, dampening=0``.

    ``v <- momentum * v + g``, then ``p <- p - lr * (g + momentum * v)``. The
    buffer holds gradients, not steps, so a new learning rate applies at once
    (Lasagne's velocity carries the old rate for a while).

    Returns
    -------
    (OrderedDict, list)
        The updates, and the momentum buffers (the optimiser's state).
    """
    updates, buffers = OrderedDict(), []
    for param, grad in zip(params, grads):
        value = param.get_value(borrow=True)
        buffer = theano.shared(np.zeros(value.shape, value.dtype),
                               broadcastable=param.broadcastable,
                               name="%s.momentum" % param.name)
        new_buffer = momentum * buffer + grad
        updates[buffer] = new_buffer
        updates[param] = param - learning_rate * (grad + momentum * new_buffer)
        buffers.append(buffer)
    return updates, buffers


def nesterov_lasagne(grads, params, learning_rate, momentum):
    """``lasagne.updates.nesterov_momentum``, as the old repository used it."""
    updates = lasagne.updates.nesterov_momentum(grads, params, learning_rate, momentum)
    buffers = [var for var in updates if var not in params]
    for buffer, param in zip(buffers, params):
        buffer.name = "%s.momentum" % param.name
    return updates, buffers


def gradients_with_decay(loss, network, params, recipe):
    """Gradients of ``loss`` plus the recipe's weight decay.

    ``gradient_all`` (Torch's optim.sgd): ``weight_decay * w`` added to the
    gradient of every trainable parameter. ``l2_loss_regularizable`` (the old
    repository): ``weight_decay * sum(w**2)`` added to the loss over the
    parameters Lasagne tags regularizable, so the gradient gains
    ``2 * weight_decay * w`` on those only (Lasagne's ``l2`` is the plain sum
    of squares, without the 1/2).
    """
    decay = np.float32(recipe["weight_decay"])
    if recipe["decay"] == "l2_loss_regularizable":
        return T.grad(loss + decay * regularize_network_params(network, l2), params)
    return [g + decay * p for g, p in zip(T.grad(loss, params), params)]


OPTIMIZERS = {"nesterov_torch": nesterov_torch, "nesterov_lasagne": nesterov_lasagne}


# =============================================================================
# The network and its compiled functions


def network_info(variant, depth, width, arch, dataset, dropout=0.0):
    """What identifies a network (and its weights files). ValueError if it
    cannot be built."""
    num_classes = utils.DATASETS[dataset]["num_classes"]
    models.check_arguments(variant, depth, width, num_classes, dropout, arch)
    return {"name": models.network_name(variant, depth, width, arch, num_classes),
            "display": models.display_name(variant, depth, width, arch),
            "variant": variant, "depth": depth, "width": width, "arch": arch,
            "dataset": dataset, "num_classes": num_classes, "dropout": dropout}


class Network:
    """A built network with its compiled functions.

    ``train_step(x, y) -> (mean cross-entropy, misclassified count)`` updates
    the parameters, the batch-norm averages and the optimiser state;
    ``predict(x) -> class probabilities`` uses the running averages.
    """

    def __init__(self, info, recipe=None, seed=0):
        # Lasagne draws initial weights and dropout seeds from this generator.
        lasagne.random.set_rng(np.random.RandomState(seed))
        self.info = info
        self.input_var = T.tensor4("images")
        self.target_var = T.ivector("labels")
        self.output = models.build_model(
            info["variant"], info["depth"], info["width"], info["num_classes"],
            info.get("dropout", 0.0), self.input_var, info["arch"])
        self.params = get_all_params(self.output)
        self.trainable_count = count_params(self.output, trainable=True)
        self.optimizer_state = []
        self.learning_rate = theano.shared(np.float32(0), name="learning_rate")
        self.recipe = recipe
        self._train_fn = self._predict_fn = None

    # -- compiled functions
    def compile_train(self):
        recipe = self.recipe
        prediction = get_output(self.output)
        loss = categorical_crossentropy(prediction, self.target_var).mean()
        errors = T.sum(T.neq(T.argmax(prediction, axis=1), self.target_var))
        params = get_all_params(self.output, trainable=True)
        grads = gradients_with_decay(loss, self.output, params, recipe)
        updates, self.optimizer_state = OPTIMIZERS[recipe["optimizer"]](
            grads, params, self.learning_rate, np.float32(recipe["momentum"]))
        self._train_fn = theano.function([self.input_var, self.target_var],
                                         [loss, errors], updates=updates)

    def compile_predict(self):
        prediction = get_output(self.output, deterministic=True)
        self._predict_fn = theano.function([self.input_var], prediction)

    def train_step(self, images, labels):
        loss, errors = self._train_fn(images, labels)
        return float(loss), int(errors)

    def predict(self, images):
        if self._predict_fn is None:
            self.compile_predict()
        return self._predict_fn(images)

    # -- state
    def param_names(self):
        return ["%s %s" % (p.name, p.get_value(borrow=True).shape) for p in self.params]

    def param_values(self):
        return [p.get_value() for p in self.params]

    def set_param_values(self, values, source, source_network):
        """Load ``values`` (in ``self.params`` order) after checking every shape."""
        expected = [(p.name, p.get_value(borrow=True).shape) for p in self.params]
        utils.check_parameters(expected, [v.shape for v in values], source,
                               source_network, self.info["name"])
        for param, value in zip(self.params, values):
            param.set_value(np.asarray(value, dtype=param.dtype))

    def random_state_vars(self):
        """Shared variables holding the dropout layers' random-stream states."""
        return [state for layer in lasagne.layers.get_all_layers(self.output)
                if hasattr(layer, "_srng")
                for state, *_ in layer._srng.state_updates]


def save_weights(path, net, stats):
    utils.write_npz(path, utils.weights_arrays(
        net.info, net.param_names(), net.param_values(), stats))


def load_weights(path, net):
    """Load a weights file of this project into ``net``; returns its
    normalisation statistics and the network it was made for."""
    weights = utils.read_weights(path)
    net.set_param_values(weights["values"], path, weights["network"].get("name", "?"))
    return weights["stats"], weights["network"]


# =============================================================================
# Batches: built in a worker thread while the compiled step runs


def batch_positions(count, batch_size, drop_last):
    """Start and end positions of the batches of an epoch."""
    stops = count - count % batch_size if drop_last else count
    return [(start, min(start + batch_size, count)) for start in range(0, stops, batch_size)]


def make_batch(images, labels, plan, start, stop, stats, recipe):
    picks = plan["order"][start:stop]
    batch = utils.normalise(images[picks], stats)
    batch = utils.crop_and_flip(batch, plan["dy"][start:stop], plan["dx"][start:stop],
                                plan["flip"][start:stop], recipe["pad"], recipe["pad_mode"])
    return batch, labels[picks]


class Prefetcher:
    """Produce ``make(i)`` for each i in ``indices`` in a worker thread, at most
    ``depth`` ahead. The results come in order and do not depend on timing."""

    _DONE = object()

    def __init__(self, make, indices, depth=3):
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make, indices), daemon=True)
        self._thread.start()

    def _run(self, make, indices):
        try:
            for i in indices:
                if not self._put(make(i)):
                    return
            self._put(self._DONE)
        except BaseException as error:  # surfaced in the consumer
            self._put(error)

    def _put(self, item):
        """Queue ``item`` unless the consumer has stopped; never blocks for good."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self._stop.set()
        self._thread.join()


# =============================================================================
# Evaluation


def predict_labels(net, images, stats, batch_size=500):
    """Predicted class of every image, evaluated in batches (``stats`` is the
    normalisation the weights were trained with)."""
    predictions = [np.argmax(net.predict(utils.normalise(images[i:i + batch_size], stats)),
                             axis=1)
                   for i in range(0, len(images), batch_size)]
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)


def classification_report(labels, predictions, label_names):
    """Error %, per-class accuracy % and the confusion matrix
    (rows: true class, columns: predicted class)."""
    k = len(label_names)
    confusion = np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)
    per_class = 100.0 * np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return {"count": int(len(labels)),
            "error": 100.0 * float(np.mean(labels != predictions)) if len(labels) else None,
            "per_class_accuracy": OrderedDict(zip(label_names, per_class.tolist())),
            "confusion": confusion.tolist(),
            "label_names": list(label_names)}


def error_percent(net, images, labels, stats):
    if len(images) == 0:
        return None
    return 100.0 * float(np.mean(predict_labels(net, images, stats) != labels))


# =============================================================================
# Progress display


class Progress:
    """A one-line progress display on stderr, redrawn at most twice a second
    (only when stderr is a terminal: logs stay clean)."""

    def __init__(self, label, total):
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty()
        self.start = self.last = time.time()

    def update(self, done, text=""):
        now = time.time()
        if not self.enabled or (now - self.last < 0.5 and done < self.total):
            return
        self.last = now
        width = 24
        filled = int(width * done / max(self.total, 1))
        sys.stderr.write("\r%s [%s%s] %d/%d %s %.0fs " % (
            self.label, "=" * filled, " " * (width - filled), done, self.total, text,
            now - self.start))
        sys.stderr.flush()

    def clear(self):
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# =============================================================================
# Checkpoints: everything needed to continue a run bit for bit

CHECKPOINT_FORMAT = "preresnet-checkpoint-1"
CHECKPOINT_NAME = "checkpoint.npz"
LOG_COLUMNS = ["epoch", "lr", "train_loss", "train_error", "val_error", "test_error",
               "seconds"]


def save_checkpoint(run_dir, net, stats, config, progress, best):
    """Write ``checkpoint.npz`` atomically.

    ``progress`` is JSON-able: the epoch being run, the iteration within it,
    the global iteration, the running sums of the epoch so far and the metric
    history. Shuffling and augmentation are drawn from (seed, epoch) (see
    utils.epoch_plan), so the seed, the epoch and the iteration are their state.
    """
    progress = dict(progress, lr=float(net.learning_rate.get_value()))
    arrays = {"format": np.array(CHECKPOINT_FORMAT),
              "config": np.array(json.dumps(config, sort_keys=True)),
              "progress": np.array(json.dumps(progress, sort_keys=True)),
              "param_names": np.array(net.param_names()),
              "norm_kind": np.array(stats["kind"]),
              "norm_mean": stats["mean"], "norm_std": stats["std"]}
    groups = {"param": net.params, "optimizer": net.optimizer_state,
              "random": net.random_state_vars()}
    for prefix, variables in groups.items():
        for i, var in enumerate(variables):
            arrays["%s_%03d" % (prefix, i)] = var.get_value()
    for i, value in enumerate(best["values"] if best else []):
        arrays["best_%03d" % i] = value
    arrays["best"] = np.array(json.dumps({k: v for k, v in (best or {}).items()
                                          if k != "values"}))
    utils.write_npz(os.path.join(run_dir, CHECKPOINT_NAME), arrays)


def read_checkpoint(run_dir):
    path = os.path.join(run_dir, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        raise UserError("%s holds no %s: not a run folder of train_nn.py, or the run "
                        "stopped before its first checkpoint" % (run_dir, CHECKPOINT_NAME))
    arrays = utils.read_npz(path, what="checkpoint")
    if str(arrays.get("format", "")) != CHECKPOINT_FORMAT:
        raise UserError("%s: not a checkpoint of this project" % path)
    return path, arrays


def restore_checkpoint(arrays, path, net):
    """Put the checkpoint's parameters, optimiser and random states into ``net``."""
    def group(prefix):
        count = sum(1 for k in arrays if re.fullmatch(prefix + r"_\d{3}", k))
        return [arrays["%s_%03d" % (prefix, i)] for i in range(count)]

    net.set_param_values(group("param"), path, json.loads(str(arrays["config"]))
                         ["network"]["name"])
    for prefix, variables in (("optimizer", net.optimizer_state),
                              ("random", net.random_state_vars())):
        values = group(prefix)
        if len(values) != len(variables):
            raise UserError("%s: %d %s arrays for %d in the network; the checkpoint "
                            "belongs to another program version" % (path, len(values),
                                                                     prefix, len(variables)))
        for var, value in zip(variables, values):
            var.set_value(value)
    best = json.loads(str(arrays["best"]))
    if best:
        best["values"] = group("best")
    stats = {"kind": str(arrays["norm_kind"]), "mean": arrays["norm_mean"],
             "std": arrays["norm_std"]}
    return json.loads(str(arrays["progress"])), best or None, stats


# =============================================================================
# The training loop


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signum)
        self.exit_code = 128 + signum


class _StopRequests:
    """SIGINT / SIGTERM set a flag the loop checks after each step, so the step
    in progress finishes and the run can save; a second signal stops at once."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        sys.stderr.write("\n%s received: finishing this step, then saving (press "
                         "Ctrl-C again to stop without saving)\n"
                         % signal.Signals(signum).name)

    def check(self):
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


def compute_threads():
    """Threads of ops.py's C ops (OpenMP), recorded with each run. Their results
    do not depend on it (sums in a fixed order)."""
    # libgomp's default: the CPUs this process may run on (a container's cpuset
    # can allow fewer than os.cpu_count())
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


def library_versions():
    """Versions of everything that decides a run's numbers."""
    import matplotlib
    import scipy
    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "theano": theano.__version__,
            "lasagne": getattr(lasagne, "__version__", "unknown"),
            "matplotlib": matplotlib.__version__,
            "theano_flags": {"floatX": theano.config.floatX,
                             "device": theano.config.device,
                             "blas.ldflags": theano.config.blas.ldflags,
                             "openmp": theano.config.openmp},
            "omp_threads": compute_threads(),
            "c_ops": layers.c_ops_apply(T.fvector())}


def split_data(data, recipe, limit, seed):
    """Training images actually used (the first ``limit``), and the
    validation split the recipe asks for, drawn with the run's seed."""
    images, labels = data["train_x"], data["train_y"]
    if limit:
        images, labels = images[:limit], labels[:limit]
    val_size = recipe["val_size"]
    if val_size >= len(images):
        raise UserError("--val-size %d leaves no training images out of %d; "
                        "lower --val-size or raise --limit" % (val_size, len(images)))
    if val_size:
        order = np.random.default_rng([seed, 1]).permutation(len(images))
        train, val = order[val_size:], order[:val_size]
        return images[train], labels[train], images[val], labels[val]
    return images, labels, images[:0], labels[:0]


def train(config, data, run_dir, resume=False, log=print):
    """Run (or continue) a training run described by ``config`` in ``run_dir``.

    ``config`` holds ``network`` (see network_info), ``recipe`` (resolved),
    ``seed``, ``limit``, ``data_dir`` and ``test_every``; ``data`` is
    utils.load_dataset's result. Returns the last history row. Raises
    Interrupted after saving when SIGINT/SIGTERM arrive.
    """
    return Trainer(config, data, run_dir, log).run(resume)


class Trainer:
    """One training run: the network, the data it sees, its progress and its
    folder. ``progress`` (JSON-able) and ``best`` are what a checkpoint keeps
    besides the network's variables."""

    def __init__(self, config, data, run_dir, log):
        self.config, self.recipe, self.run_dir, self.log = (
            config, config["recipe"], run_dir, log)
        self.train_x, self.train_y, self.val_x, self.val_y = split_data(
            data, self.recipe, config["limit"], config["seed"])
        self.test_x, self.test_y = data["test_x"], data["test_y"]
        self.batches = batch_positions(len(self.train_x), self.recipe["batch_size"],
                                       self.recipe["drop_last"])
        if not self.batches:
            raise UserError("%d training images make no batch of %d; lower --batch-size"
                            % (len(self.train_x), self.recipe["batch_size"]))
        self.net = Network(config["network"], self.recipe, config["seed"])
        self.paper = paper_error(config["network"], self.recipe["dropout"])
        self.progress = {"epoch": 0, "iteration_in_epoch": 0, "iteration": 0,
                         "loss_sum": 0.0, "error_count": 0, "seen": 0, "seconds": 0.0,
                         "history": []}
        self.best = None
        self.stats = None

    def run(self, resume):
        recipe, info, log = self.recipe, self.config["network"], self.log
        log("%s: %s trainable parameters"
            % (info["display"], format(self.net.trainable_count, ",")))
        log("recipe %s: %d epochs, batch %d, lr %g (x%g at epochs %s), weight decay %g, "
            "%d training / %d validation images" % (
                recipe["name"], recipe["epochs"], recipe["batch_size"], recipe["lr"],
                recipe["lr_factor"], ",".join(str(m) for m in recipe["lr_milestones"]) or "-",
                recipe["weight_decay"], len(self.train_x), len(self.val_x)))
        log("compiling the training step (minutes the first time for a deep network; "
            "Theano caches the C code)...")
        started = time.time()
        self.net.compile_train()  # the evaluation function compiles at the first test
        log("compiled in %.0f s" % (time.time() - started))
        if resume:
            path, arrays = read_checkpoint(self.run_dir)
            self.progress, self.best, self.stats = restore_checkpoint(arrays, path, self.net)
            log("resuming %s at epoch %d, iteration %d" % (
                self.run_dir, self.progress["epoch"] + 1, self.progress["iteration_in_epoch"]))
        else:
            self.stats = utils.normalisation_stats(recipe["normalisation"], self.train_x)
        log("%5s %9s %10s %9s %9s %9s %8s" % ("epoch", "lr", "train loss", "train err",
                                              "val err", "test err", "seconds"))
        with _StopRequests() as stop:
            try:
                while self.progress["epoch"] < recipe["epochs"]:
                    self.run_epoch(stop)
            except Interrupted:
                self.checkpoint()
                log("saved %s at epoch %d, iteration %d; resume with:\n  python train_nn.py "
                    "--resume %s" % (os.path.join(self.run_dir, CHECKPOINT_NAME),
                                     self.progress["epoch"] + 1,
                                     self.progress["iteration_in_epoch"], self.run_dir))
                raise
        return self.finish()

    def checkpoint(self):
        try:
            save_checkpoint(self.run_dir, self.net, self.stats, self.config, self.progress,
                            self.best)
        except UserError as error:
            if not os.path.isfile(os.path.join(self.run_dir, CHECKPOINT_NAME)):
                raise
            raise UserError("%s; free space (or fix permissions), then continue from it "
                            "with: python train_nn.py --resume %s" % (error, self.run_dir))

    def run_epoch(self, stop):
        """Train (the rest of) an epoch, evaluate, log, checkpoint."""
        recipe, progress, net = self.recipe, self.progress, self.net
        epoch, first = progress["epoch"], progress["iteration_in_epoch"]
        plan = utils.epoch_plan(self.config["seed"], epoch, len(self.train_x), recipe["pad"])
        if first == 0 and recipe["reset_momentum_at_milestones"] and \
                epoch in recipe["lr_milestones"]:
            for buffer in net.optimizer_state:
                buffer.set_value(np.zeros_like(buffer.get_value()))
        bar = Progress("epoch %d" % (epoch + 1), len(self.batches))
        started = time.time()

        def make(i):
            return make_batch(self.train_x, self.train_y, plan, *self.batches[i],
                              self.stats, recipe)

        loader = Prefetcher(make, range(first, len(self.batches)))
        try:
            for i, (images, labels) in zip(range(first, len(self.batches)), loader):
                lr = np.float32(learning_rate(recipe, epoch, progress["iteration"]))
                if net.learning_rate.get_value() != lr:
                    net.learning_rate.set_value(lr)
                loss, errors = net.train_step(images, labels)
                if not math.isfinite(loss):
                    kept = ("the checkpoint of epoch %d in %s is intact" % (epoch, self.run_dir)
                            if epoch else "no checkpoint was written yet")
                    raise UserError("the training loss became %s at epoch %d, iteration %d; "
                                    "stopped (%s): lower --lr or check the data"
                                    % (loss, epoch + 1, i, kept))
                progress["loss_sum"] += loss * len(labels)
                progress["error_count"] += errors
                progress["seen"] += len(labels)
                progress["iteration"] += 1
                progress["iteration_in_epoch"] = i + 1
                bar.update(i + 1, "loss %.3f err %.1f%%" % (
                    progress["loss_sum"] / progress["seen"],
                    100.0 * progress["error_count"] / progress["seen"]))
                stop.check()
            row = self.evaluate(epoch)
            stop.check()  # an interrupted evaluation is redone on resume
        except Interrupted:
            progress["seconds"] += time.time() - started
            raise
        finally:
            loader.close()
            bar.clear()
        row["seconds"] = round(progress["seconds"] + time.time() - started, 2)
        self.log("%5d %9.5f %10.4f %8.2f%% %9s %9s %8.1f" % (
            row["epoch"], row["lr"], row["train_loss"], row["train_error"],
            _percent(row["val_error"]), _percent(row["test_error"]), row["seconds"]))
        if row["val_error"] is not None and (self.best is None
                                             or row["val_error"] < self.best["val_error"]):
            self.best = {"epoch": row["epoch"], "val_error": row["val_error"],
                         "values": net.param_values()}
            save_weights(os.path.join(self.run_dir, "weights_best.npz"), net, self.stats)
        progress["history"].append(row)
        progress.update(epoch=epoch + 1, iteration_in_epoch=0, loss_sum=0.0, error_count=0,
                        seen=0, seconds=0.0)
        utils.write_history_csv(os.path.join(self.run_dir, "log.csv"), progress["history"],
                                LOG_COLUMNS)
        utils.plot_curves(os.path.join(self.run_dir, "curves.png"), progress["history"],
                          "%s, recipe %s" % (net.info["display"], recipe["name"]), self.paper)
        self.checkpoint()

    def evaluate(self, epoch):
        """The epoch's log row: its training figures, validation and test error
        (the test set every ``test_every`` epochs and at the last)."""
        progress, recipe = self.progress, self.recipe
        test_every = self.config.get("test_every", 1)
        tested = epoch + 1 == recipe["epochs"] or (test_every and (epoch + 1) % test_every == 0)
        return {"epoch": epoch + 1,
                "lr": learning_rate(recipe, epoch, progress["iteration"] - 1),
                "train_loss": progress["loss_sum"] / progress["seen"],
                "train_error": 100.0 * progress["error_count"] / progress["seen"],
                "val_error": error_percent(self.net, self.val_x, self.val_y, self.stats),
                "test_error": (error_percent(self.net, self.test_x, self.test_y, self.stats)
                               if tested else None)}

    def finish(self):
        """Save the final weights and publish the recipe's choice to data/weights/."""
        net, info, best = self.net, self.config["network"], self.best
        final_path = os.path.join(self.run_dir, "weights_final.npz")
        save_weights(final_path, net, self.stats)
        last = self.progress["history"][-1]
        paper_text = " (paper: %.2f %%)" % self.paper if self.paper is not None else ""
        self.log("final test error: %s%s" % (_percent(last["test_error"]), paper_text))
        published = final_path
        if best is not None:
            final_values = net.param_values()
            net.set_param_values(best["values"], "best weights", info["name"])
            best_test = error_percent(net, self.test_x, self.test_y, self.stats)
            self.log("best validation error %.2f %% at epoch %d; its test error: %s"
                     % (best["val_error"], best["epoch"], _percent(best_test)))
            if self.recipe["publish"] == "best_val":
                published = os.path.join(self.run_dir, "weights_best.npz")
            else:
                net.set_param_values(final_values, "final weights", info["name"])
        target = utils.published_weights_path(self.config["data_dir"], info["name"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(published, "rb") as source:   # streamed: WRN-28-10's file is 146 MB
            utils.atomic_write(target, lambda f: shutil.copyfileobj(source, f))
        self.log("weights: %s (also %s, where test_model.py looks)" % (published, target))
        return last


def _percent(value):
    return "-" if value is None else "%.2f%%" % value


# =============================================================================
# Command-line helpers shared by train_nn.py and test_model.py


def add_network_arguments(parser, optional=False):
    """TYPE DEPTH [WIDTH], --arch and --dataset."""
    nargs = "?" if optional else None
    parser.add_argument("type", metavar="TYPE", nargs=nargs, choices=list(models.FAMILIES),
                        help="network family: normal (PreResNet 6n+2), bottleneck "
                             "(PreResNet 9n+2) or wide (WRN-(6n+4)-k)")
    parser.add_argument("depth", metavar="DEPTH", nargs=nargs, type=int,
                        help="n, residual units per stage (18: PreResNet-110/164)")
    parser.add_argument("width", metavar="WIDTH", nargs="?", type=int,
                        help="k, the widening factor (wide networks only)")
    parser.add_argument("--arch", choices=list(models.ARCHITECTURES), default=None,
                        help="paper: the papers' networks (default); seed: the old "
                             "repository's graphs")
    parser.add_argument("--dataset", choices=list(utils.DATASETS), default=None,
                        help="cifar10 (default) or cifar100")


def check_network_arguments(parser, args):
    """Usage errors (exit code 2) for a TYPE/DEPTH/WIDTH that cannot be built."""
    if args.type is None or args.depth is None:
        parser.error("TYPE and DEPTH are required, e.g. `normal 18`")
    if args.depth < 1:
        parser.error("DEPTH (units per stage) must be at least 1, got %d" % args.depth)
    if args.type == "wide" and args.width is None:
        parser.error("wide networks need WIDTH, e.g. `wide 2 4` for WRN-16-4")
    if args.type != "wide" and args.width is not None:
        parser.error("WIDTH applies to wide networks only; `%s %d` takes none"
                     % (args.type, args.depth))
    if args.width is not None and args.width < 1:
        parser.error("WIDTH must be at least 1, got %d" % args.width)


def machine_description():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "host": platform.node(),
            "system": platform.platform()}
