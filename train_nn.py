"""Train a pre-activation ResNet or Wide ResNet on CIFAR-10/100.

    python train_nn.py normal 18              # PreResNet-110 (6n+2), paper recipe
    python train_nn.py bottleneck 18          # PreResNet-164 (9n+2)
    python train_nn.py wide 2 4               # WRN-16-4 (6n+4, k=4)
    python train_nn.py wide 2 4 --dropout 0.3
    python train_nn.py bottleneck 111         # PreResNet-1001
    python train_nn.py normal 3 --unit original --recipe he2015   # ResNet-20 (He et al. 2015)
    python train_nn.py normal 18 --arch seed --recipe seed     # the old repository
    python train_nn.py normal 1 --epochs 1 --limit 2000        # a smoke run
    python train_nn.py --resume runs/preresnet110-paper-preresnet-20261128-170000

This file is the recipes (data, each citing its source) and the training loop.
Every recipe value can be overridden (see --help). A run folder holds the
resolved config (config.json), the per-epoch log (log.csv, output.log), the
curves (curves.png), a checkpoint after every epoch (checkpoint.npz), the
weights (weights_final.npz, weights_best.npz with a validation split) and how
the run ended (summary.json). A full-recipe run also publishes its recipe's
weights as <data folder>/weights/<network>/<recipe>.npz, where test_model.py
looks, never over another run's; every place a run writes is checked before
it compiles, so that it cannot fail at its end.
"""
import argparse
import datetime
import json
import math
import os
import shlex
import shutil
import sys
import time

import numpy as np

import engine  # noqa: F401  (configures Theano before it is imported)
from engine import loop, updates
from engine.loop import Interrupted
import theano
import theano.tensor as T
from lasagne.layers import get_all_params, get_output
from lasagne.objectives import categorical_crossentropy

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
        "lr_milestone_iters": [],
        "max_iters": 0,
        # He et al. 2016's appendix warms every CIFAR run up at 0.01 for 400
        # iterations "following [1]"; fb.resnet.torch's train.lua has no
        # warm-up, and the code decides: off (--warmup-iters 400 turns it on;
        # he2015-warmup is the papers' own schedule).
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
        "lr_milestone_iters": [],
        "max_iters": 0,
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
        "source": "the old Lasagne repository's train_nn.py (docs/old-repository.md)",
        "epochs": 200,
        "batch_size": 64,
        "lr": 0.1,
        "lr_milestones": [80, 120],
        "lr_factor": 0.1,
        "lr_milestone_iters": [],
        "max_iters": 0,
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


# He et al. 2015 (arXiv 1512.03385) Sec. 4.2, CIFAR-10: "We use a weight decay
# of 0.0001 and momentum of 0.9 ... These models are trained with a mini-batch
# size of 128 on two GPUs. We start with a learning rate of 0.1, divide it by
# 10 at 32k and 48k iterations, and terminate training at 64k iterations, which
# is determined on a 45k/5k train/val split. We follow the simple data
# augmentation in [24] for training: 4 pixels are padded on each side, and a
# 32x32 crop is randomly sampled from the padded image or its horizontal flip";
# "The network inputs are 32x32 images, with the per-pixel mean subtracted";
# "We present experiments trained on the training set and evaluated on the test
# set". No code was published; the experiments ran in Caffe (resnet-1k-layers'
# README: "The experiments in the paper were conducted in Caffe").
RECIPES["he2015"] = {
    "source": "He et al. 2015 (arXiv 1512.03385) Sec. 4.2 (the CIFAR-10 ResNets of Table 6)",
    # 64k iterations of 390 batches: epoch 165 stops after its 40th iteration.
    "epochs": 165,
    "batch_size": 128,
    "lr": 0.1,
    "lr_milestones": [],
    # "divide it by 10 at 32k and 48k iterations": the 32,001st step (0-based
    # iteration 32000) is the first at 0.01, as Caffe's multistep policy does.
    "lr_milestone_iters": [32000, 48000],
    "lr_factor": 0.1,
    "max_iters": 64000,
    "warmup_iters": 0,
    "warmup_epochs": 0,
    "warmup_lr": 0.01,
    "momentum": 0.9,
    # "momentum of 0.9", not Nesterov's: Caffe's SGD solver.
    "optimizer": "momentum_caffe",
    "reset_momentum_at_milestones": False,
    "weight_decay": 1e-4,
    # Caffe adds weight_decay * w to the gradient of every learnable blob
    # (decay_mult 1 unless a prototxt says otherwise; none was published).
    "decay": "gradient_all",
    "normalisation": "pixel_mean",
    "pad": 4,
    "pad_mode": "zero",
    # The 45k/5k split only chose the stopping point (64k iterations); the
    # reported networks are "trained on the training set": all 50,000.
    "val_size": 0,
    # Every iteration is a mini-batch of 128, as in Caffe's data layer; the 80
    # images an epoch leaves over change from epoch to epoch.
    "drop_last": True,
    "dropout": 0.0,
    "publish": "final",
}
# ResNet-110 (and the 1202-layer net "trained as described above"): "we use
# 0.01 to warm up the training until the training error is below 80% (about
# 400 iterations), and then go back to 0.1" (He et al. 2015 Sec. 4.2); He et
# al. 2016's appendix does it "for all CIFAR experiments ... at the beginning
# 400 iterations": 400 fixed iterations, the rest as he2015.
RECIPES["he2015-warmup"] = dict(
    RECIPES["he2015"],
    source="He et al. 2015 (arXiv 1512.03385) Sec. 4.2, with the 0.01 warm-up of its "
           "110- and 1202-layer nets; He et al. 2016 (arXiv 1603.05027) appendix",
    warmup_iters=400)
# PreResNet-1001 as KaimingHe/resnet-1k-layers trains it (its README: `th
# main.lua -netType resnet-pre-act -depth 1001 -batchSize 64 -nGPU 2 -nThreads 4
# -dataset cifar10 -nEpochs 200`, "we simply reduced the mini-batch size to
# 64"): fb.resnet.torch with two options changed. Its train.lua decays the
# learning rate for cifar10 when epoch >= 81 and >= 122 whatever nEpochs is,
# so the last 79 of the 200 epochs run at 0.001.
RECIPES["resnet-1k-layers"] = dict(
    RECIPES["paper-preresnet"],
    source="KaimingHe/resnet-1k-layers README (batch 64, 200 epochs) on fb.resnet.torch "
           "train.lua/opts.lua",
    epochs=200,
    batch_size=64)

CHOICES = {
    "optimizer": tuple(updates.OPTIMIZERS),
    "decay": updates.DECAY_MODES,
    "normalisation": ("channel_mean_std", "pixel_mean"),
    "pad_mode": ("zero", "reflect"),
    "publish": ("final", "best_val"),
}


# =============================================================================
# Recipe resolution and the learning-rate schedule


def resolve_recipe(name, variant, overrides=None):
    """The recipe a run uses: ``paper`` means the variant's paper recipe; then
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
    """Learning rate of the step at 0-based ``epoch`` and 0-based global
    ``iteration``: the warm-up's, else ``lr`` times ``lr_factor`` once per
    milestone reached (epochs in ``lr_milestones``, iterations in
    ``lr_milestone_iters``)."""
    if epoch < recipe["warmup_epochs"] or iteration < recipe["warmup_iters"]:
        return recipe["warmup_lr"]
    drops = (sum(epoch >= m for m in recipe["lr_milestones"]) +
             sum(iteration >= m for m in recipe["lr_milestone_iters"]))
    return recipe["lr"] * recipe["lr_factor"] ** drops


def epochs_to_run(recipe, batches_per_epoch):
    """The epochs a run trains: ``epochs``, or fewer where ``max_iters`` ends
    it sooner (its last epoch then stops after the max_iters-th iteration)."""
    if not recipe["max_iters"]:
        return recipe["epochs"]
    return min(recipe["epochs"], -(-recipe["max_iters"] // batches_per_epoch))


# =============================================================================
# The training step


def compile_training_step(net, recipe):
    """Compile one step of ``recipe``'s optimiser for ``net`` (a models.Network).

    Returns
    -------
    (function, TensorSharedVariable, list)
        ``step(images, labels) -> (mean cross-entropy, misclassified count)``,
        which updates the parameters, the batch-norm averages and the
        optimiser's state; the learning rate it reads; the momentum buffers.
    """
    target_var = T.ivector("labels")
    prediction = get_output(net.output)
    loss = categorical_crossentropy(prediction, target_var).mean()
    errors = T.sum(T.neq(T.argmax(prediction, axis=1), target_var))
    params = get_all_params(net.output, trainable=True)
    grads = updates.gradients_with_decay(loss, net.output, params, recipe["weight_decay"],
                                         recipe["decay"])
    learning_rate = theano.shared(np.float32(0), name="learning_rate")
    step_updates, buffers = updates.OPTIMIZERS[recipe["optimizer"]](
        grads, params, learning_rate, np.float32(recipe["momentum"]))
    with theano.configparser.change_flags(cycle_detection=cycle_detection(len(params))):
        step = theano.function([net.input_var, target_var], [loss, errors],
                               updates=step_updates)
    return step, learning_rate, buffers


# Theano's in-place pass, with its default 'regular' cycle detection, rebuilds
# its map of destroyed variables after every replacement: its time grows with
# the square of the graph, over 20 minutes of PreResNet-1001's compile (3,000
# parameter arrays). 'fast' leaves most updates out of place (PreResNet-164:
# 298 in-place nodes instead of 1,429), so smaller networks keep the default.
FAST_CYCLE_DETECTION_FROM = 1000   # trainable arrays (PreResNet-164: 494, -1001: 3,005)


def cycle_detection(parameter_arrays):
    """Theano's cycle_detection for compiling a step with that many parameters."""
    if parameter_arrays >= FAST_CYCLE_DETECTION_FROM:
        return "fast"
    return theano.config.cycle_detection


# =============================================================================
# Checkpoints: a weights file plus everything needed to continue bit for bit

CHECKPOINT_NAME = "checkpoint.npz"
SUMMARY_NAME = "summary.json"
EVAL_BATCH = 500  # images per evaluation batch (memory only: same results for any size)
LOG_COLUMNS = ["epoch", "lr", "train_loss", "train_error", "val_error", "test_error",
               "seconds"]
# What a run writes into its folder (and test_model.py's *-test.json reports):
# a new run never starts in a folder holding any of them, except the two a
# start leaves before its first checkpoint, which the same command may reuse.
RUN_FILES = ("config.json", "output.log", "log.csv", "curves.png", CHECKPOINT_NAME,
             "weights_final.npz", "weights_best.npz", SUMMARY_NAME)
STARTUP_FILES = ("config.json", "output.log")


def run_files_in(folder):
    """The run files (``RUN_FILES``, ``*-test.json``) in ``folder``, sorted."""
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder)
                  if name in RUN_FILES or name.endswith("-test.json"))


def read_checkpoint(run_dir):
    """The checkpoint of ``run_dir`` as ``utils.read_weights`` reads it."""
    path = os.path.join(run_dir, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        raise UserError("%s holds no %s: not a run folder of train_nn.py, or the run "
                        "stopped before its first checkpoint" % (run_dir, CHECKPOINT_NAME))
    checkpoint = utils.read_weights(path, "checkpoint", utils.damaged_checkpoint_advice(run_dir))
    if "progress" not in checkpoint["records"] or "config" not in checkpoint["records"]:
        raise UserError("%s: a weights file, not a checkpoint of this project" % path)
    return checkpoint


# =============================================================================
# The training loop


def train(config, data, run_dir, resume=False, log=print, warn=None):
    """Run (or continue) a training run described by ``config`` in ``run_dir``.

    ``config`` holds ``network`` (see models.network_info), ``recipe``
    (resolved), ``seed``, ``limit``, ``data_dir`` and ``test_every``; ``data``
    is utils.load_dataset's result. Returns the last history row. Raises
    engine.loop.Interrupted after saving when SIGINT/SIGTERM arrive.
    """
    return Trainer(config, data, run_dir, log, warn).run(resume)


class Trainer:
    """One training run: the network, the data it sees, its progress and its
    folder. ``progress`` (JSON-able) and ``best`` are what a checkpoint keeps
    besides the network's variables."""

    def __init__(self, config, data, run_dir, log, warn=None):
        self.config, self.recipe, self.run_dir, self.log = (
            config, config["recipe"], run_dir, log)
        self.warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        self.train_x, self.train_y, self.val_x, self.val_y = utils.split_training_data(
            data, self.recipe["val_size"], config["limit"], config["seed"])
        self.test_x, self.test_y = data["test_x"], data["test_y"]
        self.batches = utils.batch_positions(len(self.train_x), self.recipe["batch_size"],
                                             self.recipe["drop_last"])
        if not self.batches:
            raise UserError("%d training images make no batch of %d; lower --batch-size"
                            % (len(self.train_x), self.recipe["batch_size"]))
        # A run that max_iters ends early has fewer epochs (config.json says so).
        self.recipe["epochs"] = epochs_to_run(self.recipe, len(self.batches))
        self.net = models.Network(config["network"], config["seed"])
        self.step = self.learning_rate = None
        self.optimizer_state = []
        self.paper = models.paper_error(config["network"], self.recipe["dropout"],
                                        self.recipe["name"])
        self.progress = {"epoch": 0, "iteration_in_epoch": 0, "iteration": 0, "lr": None,
                         "loss_sum": 0.0, "error_count": 0, "seen": 0, "seconds": 0.0,
                         "history": []}
        self.best = None
        self.stats = None

    def run(self, resume, stop=None):
        """Compile, restore the checkpoint if ``resume``, train the epochs left
        and finish (``finish``). ``stop`` (an engine.loop.StopRequests) decides
        what SIGINT and SIGTERM do: while compiling and finishing they stop the
        program at once (``loop.Stopped``); while training the step finishes,
        the checkpoint is saved and ``Interrupted`` is raised."""
        if stop is None:
            with loop.StopRequests(notify=self.warn, at_once=True) as stop:
                return self.run(resume, stop)
        recipe, info, log = self.recipe, self.config["network"], self.log
        log("%s: %s trainable parameters"
            % (info["display"], format(self.net.trainable_count, ",")))
        warmup = ["%d %s at %g" % (recipe[key], unit, recipe["warmup_lr"])
                  for key, unit in (("warmup_epochs", "epochs"), ("warmup_iters", "iterations"))
                  if recipe[key]]
        log("recipe %s: %s, batch %d, lr %g%s (x%g at %s), weight decay %g, "
            "%d training / %d validation images" % (
                recipe["name"], "%d epochs" % recipe["epochs"] + (
                    " (%d iterations)" % recipe["max_iters"] if recipe["max_iters"] else ""),
                recipe["batch_size"], recipe["lr"],
                " after %s" % " and ".join(warmup) if warmup else "", recipe["lr_factor"],
                _milestone_text(recipe), recipe["weight_decay"], len(self.train_x),
                len(self.val_x)))
        log("compiling the training step (minutes the first time for a deep network; "
            "Theano caches the C code)...")
        stop.at_once, stop.doing = True, "compiling the training step"
        started = time.time()
        # the evaluation function compiles at the first test
        self.step, self.learning_rate, self.optimizer_state = compile_training_step(
            self.net, recipe)
        log("compiled in %.0f s" % (time.time() - started))
        if resume:
            stop.doing = "reading the checkpoint"
            self.restore(read_checkpoint(self.run_dir))
            log("resuming %s at epoch %d, iteration %d" % (
                self.run_dir, self.progress["epoch"] + 1, self.progress["iteration_in_epoch"]))
        else:
            self.stats = utils.normalisation_stats(recipe["normalisation"], self.train_x)
        log("%5s %9s %10s %9s %9s %9s %8s %9s" % ("epoch", "lr", "train loss", "train err",
                                                  "val err", "test err", "seconds",
                                                  "run left"))
        stop.at_once, stop.doing = False, "training"
        try:
            while self.progress["epoch"] < recipe["epochs"]:
                self.run_epoch(stop)
        except Interrupted as interruption:
            self.checkpoint()
            where = "epoch %d, iteration %d" % (self.progress["epoch"] + 1,
                                                self.progress["iteration_in_epoch"])
            log("saved %s at %s; resume with:\n  python train_nn.py --resume %s"
                % (os.path.join(self.run_dir, CHECKPOINT_NAME), where, self.run_dir))
            self.write_summary("stopped", "%s at %s" % (interruption.name, where))
            raise
        except UserError as error:
            if os.path.isfile(os.path.join(self.run_dir, CHECKPOINT_NAME)):
                self.write_summary("failed", str(error))
            raise
        stop.at_once, stop.doing = True, "finishing the run"
        if stop.signum is not None:  # it came while the last checkpoint was written
            raise loop.Stopped(stop.signum, stop.doing)
        return self.finish()

    def checkpoint(self):
        """Write checkpoint.npz atomically: the weights file of the network as it
        is, plus the optimiser's buffers, the dropout streams' states, the best
        weights so far and the loop's ``progress`` (JSON-able: the epoch being
        run, the iteration within it, the global iteration, the learning rate the
        last step used, the epoch's running sums and the metric history).
        Shuffling and augmentation are drawn from (seed, epoch)
        (utils.epoch_plan), so these are all the loop's state."""
        groups = {"optimizer": [v.get_value() for v in self.optimizer_state],
                  "random": [v.get_value() for v in self.net.random_state_vars()],
                  "best": self.best["values"] if self.best else []}
        records = {"config": self.config, "progress": self.progress, "run": self.run_record(),
                   "best": {k: v for k, v in (self.best or {}).items() if k != "values"}}
        try:
            models.save_weights(os.path.join(self.run_dir, CHECKPOINT_NAME), self.net,
                                self.stats, groups, records)
        except UserError as error:
            if not os.path.isfile(os.path.join(self.run_dir, CHECKPOINT_NAME)):
                raise
            raise UserError("%s; free space (or fix permissions), then continue from it "
                            "with: python train_nn.py --resume %s" % (error, self.run_dir))

    def restore(self, checkpoint):
        """Put a checkpoint's parameters, optimiser and random states and the
        loop's progress back."""
        path = os.path.join(self.run_dir, CHECKPOINT_NAME)
        self.net.set_param_values(checkpoint["values"], path,
                                  checkpoint["network"].get("name", "?"))
        for group, variables in (("optimizer", self.optimizer_state),
                                 ("random", self.net.random_state_vars())):
            values = checkpoint["groups"].get(group, [])
            if len(values) != len(variables):
                raise UserError("%s: %d %s arrays for %d in the network; the checkpoint "
                                "belongs to another program version"
                                % (path, len(values), group, len(variables)))
            for index, (var, value) in enumerate(zip(variables, values)):
                current = var.get_value(borrow=True)
                if value.shape != current.shape or value.dtype != current.dtype:
                    raise UserError("%s: %s array %d is %s %s, the network's %s %s; the "
                                    "checkpoint belongs to another program version" % (
                                        path, group, index, value.dtype, value.shape,
                                        current.dtype, current.shape))
                var.set_value(value)
        records = checkpoint["records"]
        best = records.get("best") or None
        if best:
            best["values"] = checkpoint["groups"].get("best", [])
        self.progress, self.best, self.stats = records["progress"], best, checkpoint["stats"]

    def run_epoch(self, stop):
        """Train (the rest of) an epoch, evaluate, log, checkpoint."""
        recipe, progress, net = self.recipe, self.progress, self.net
        epoch, first = progress["epoch"], progress["iteration_in_epoch"]
        plan = utils.epoch_plan(self.config["seed"], epoch, len(self.train_x), recipe["pad"])
        if first == 0 and recipe["reset_momentum_at_milestones"] and \
                epoch in recipe["lr_milestones"]:
            for buffer in self.optimizer_state:
                buffer.set_value(np.zeros_like(buffer.get_value()))
        bar = loop.Progress("epoch %d" % (epoch + 1), len(self.batches), log=self.log,
                            loops_after=recipe["epochs"] - epoch - 1)
        started = time.time()

        def make(i):
            return utils.make_batch(self.train_x, self.train_y, plan, *self.batches[i],
                                    self.stats, recipe["pad"], recipe["pad_mode"])

        last = len(self.batches)
        if recipe["max_iters"]:   # the run's last epoch may stop early
            last = min(last, first + recipe["max_iters"] - progress["iteration"])
        loader = loop.Prefetcher(make, range(first, last))
        try:
            for i, (images, labels) in zip(range(first, last), loader):
                rate = learning_rate(recipe, epoch, progress["iteration"])
                lr = np.float32(rate)
                if self.learning_rate.get_value() != lr:
                    self.learning_rate.set_value(lr)
                progress["lr"] = utils.significant(rate, 10)  # log.csv: the last step's
                loss, errors = self.step(images, labels)
                loss, errors = float(loss), int(errors)
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
            bar.clear()
            row = self.evaluate(epoch, stop)  # an interrupted evaluation is redone on resume
        except Interrupted:
            progress["seconds"] += time.time() - started
            raise
        finally:
            loader.close()
            bar.clear()
        row["seconds"] = round(progress["seconds"] + time.time() - started, 2)
        timed = [r["seconds"] for r in progress["history"][-4:]] + [row["seconds"]]
        left = (recipe["epochs"] - epoch - 1) * sum(timed) / len(timed)
        self.log("%5d %9.5f %10.4f %8.2f%% %9s %9s %8.1f %9s" % (
            row["epoch"], row["lr"], row["train_loss"], row["train_error"],
            _percent(row["val_error"]), _percent(row["test_error"]), row["seconds"],
            loop.format_duration(left) if left else "-"))
        if row["val_error"] is not None and (self.best is None
                                             or row["val_error"] < self.best["val_error"]):
            self.best = {"epoch": row["epoch"], "val_error": row["val_error"],
                         "values": net.param_values()}
            models.save_weights(os.path.join(self.run_dir, "weights_best.npz"), net,
                                self.stats, records={"run": self.run_record()})
        progress["history"].append(row)
        progress.update(epoch=epoch + 1, iteration_in_epoch=0, loss_sum=0.0, error_count=0,
                        seen=0, seconds=0.0)
        utils.write_history_csv(os.path.join(self.run_dir, "log.csv"), progress["history"],
                                LOG_COLUMNS)
        title = "%s on %s, recipe %s" % (net.info["display"], utils.DATASETS[
            net.info["dataset"]]["display"], recipe["name"])
        changes = self.run_record()["changes"]  # --limit, --epochs, ...: all it differs in
        if changes:
            shortened = "shortened: " + ", ".join(changes)
            title += ("\n" if len(title) + len(shortened) > 90 else ", ") + shortened
        drops = [m + 1 for m in recipe["lr_milestones"]] + [
            m // len(self.batches) + 1 for m in recipe["lr_milestone_iters"]]
        utils.plot_curves(os.path.join(self.run_dir, "curves.png"), progress["history"], title,
                          self.paper if self.paper != models.FAILED else None, sorted(drops))
        self.checkpoint()

    def evaluate(self, epoch, stop):
        """The epoch's log row: its training figures, validation and test error
        (the test set every ``test_every`` epochs and at the last), with
        progress shown and SIGINT/SIGTERM honoured between batches."""
        progress, recipe = self.progress, self.recipe
        test_every = self.config.get("test_every", 1)
        tested = epoch + 1 == recipe["epochs"] or (test_every and (epoch + 1) % test_every == 0)
        return {"epoch": epoch + 1,
                "lr": progress["lr"],
                # the mean of float32 losses, and counts: no more digits than measured
                "train_loss": utils.significant(progress["loss_sum"] / progress["seen"], 7),
                "train_error": utils.percent(progress["error_count"], progress["seen"]),
                "val_error": self.error_percent("validation", self.val_x, self.val_y, stop),
                "test_error": (self.error_percent("test", self.test_x, self.test_y, stop)
                               if tested else None)}

    def error_percent(self, label, images, labels, stop=None):
        """Error in % of the network on ``images`` (None for none), with progress."""
        if len(images) == 0:
            return None
        batches = -(-len(images) // EVAL_BATCH)
        bar = loop.Progress(label, batches, log=self.log)

        def done(count):
            bar.update(count)
            if stop is not None:
                stop.check()
        try:
            predictions = models.predict_labels(self.net, images, self.stats, EVAL_BATCH,
                                                on_batch=done)
        finally:
            bar.clear()
        return utils.percent(int(np.sum(predictions != labels)), len(labels))

    def finish(self):
        """Save the final weights, evaluate the best ones (with a validation
        split), publish the recipe's choice (``publish``) and record how the
        run ended (summary.json). A publication that fails is a UserError that
        names the command that publishes the weights later."""
        net, info, best = self.net, self.config["network"], self.best
        final_path = os.path.join(self.run_dir, "weights_final.npz")
        models.save_weights(final_path, net, self.stats, records={"run": self.run_record()})
        last = self.progress["history"][-1]
        paper_text = (" (paper: %s)" % models.format_paper_error(self.paper)
                      if self.paper is not None else "")
        self.log("final test error: %s%s" % (_percent(last["test_error"]), paper_text))
        chosen = final_path
        if best is not None:
            final_values = net.param_values()
            net.set_param_values(best["values"], "best weights", info["name"])
            best["test_error"] = self.error_percent("test (best weights)", self.test_x,
                                                    self.test_y)
            self.log("best validation error %.2f %% at epoch %d; its test error: %s"
                     % (best["val_error"], best["epoch"], _percent(best["test_error"])))
            if self.recipe["publish"] == "best_val":
                chosen = os.path.join(self.run_dir, "weights_best.npz")
            else:
                net.set_param_values(final_values, "final weights", info["name"])
        try:
            target, why = publish(self.config, self.run_dir, chosen, self.run_record(),
                                  self.log)
        except UserError as error:
            later = publish_command(self.run_dir)
            self.write_summary("finished", _all_epochs(self.recipe["epochs"]),
                               published=None, not_published="could not publish: %s" % error,
                               publish_with=later)
            raise UserError("the run finished, but could not publish its weights (%s); they "
                            "are in %s; once that is fixed, publish them with: %s"
                            % (error, chosen, later))
        self.write_summary("finished", _all_epochs(self.recipe["epochs"]),
                           published=target, not_published=why)
        return last

    def write_summary(self, status, how, **outcome):
        """summary.json: how the run ended (``status`` finished, stopped or
        failed, and ``how``), when, after how long, its final and best errors
        and what became of its weights (``outcome``: ``published``,
        ``not_published``, ``publish_with``). Best effort: a record that cannot
        be written (a full disk) never hides the error that ended the run."""
        history, best = self.progress["history"], self.best
        ended = datetime.datetime.now().astimezone()
        started = (self.config.get("source") or {}).get("started")
        wall = ((ended - datetime.datetime.fromisoformat(started)).total_seconds()
                if started else None)
        final = os.path.join(self.run_dir, "weights_final.npz")
        summary = {
            "status": status, "how": how, "started": started,
            "ended": ended.isoformat(timespec="seconds"),
            "wall_seconds": round(wall, 1) if wall is not None else None,
            "wall_clock": loop.format_duration(wall) if wall is not None else None,
            "training_seconds": round(sum(row["seconds"] for row in history)
                                      + self.progress["seconds"], 2),
            "epochs_done": self.progress["epoch"], "epochs": self.recipe["epochs"],
            "final": history[-1] if history else None,
            "best": ({k: best.get(k) for k in ("epoch", "val_error", "test_error")}
                     if best else None),
            "weights": final if os.path.isfile(final) else None,
            "published": None, "not_published": None, "publish_with": None}
        summary.update(outcome)
        try:
            utils.write_json(os.path.join(self.run_dir, SUMMARY_NAME), summary)
        except UserError:
            return
        if status == "finished":
            self.log("summary: %s" % os.path.join(self.run_dir, SUMMARY_NAME))

    def run_record(self):
        """What a weights file says about the run that made it."""
        named = RECIPES[self.recipe["name"]]
        changes = ["--%s %s" % (key.replace("_", "-"), value)
                   for key, value in sorted(self.recipe.items())
                   if key in named and key not in ("source", "dropout") and named[key] != value]
        if self.config["limit"]:
            changes.insert(0, "--limit %d" % self.config["limit"])
        return {"run_dir": os.path.abspath(self.run_dir), "recipe": self.recipe["name"],
                "epochs": self.progress["epoch"], "of_epochs": self.recipe["epochs"],
                "seed": self.config["seed"], "full_recipe": not changes, "changes": changes,
                "source": self.config.get("source")}


def _all_epochs(count):
    return "all %d epochs" % count if count > 1 else "its one epoch"


def publish_command(run_dir):
    return "python train_nn.py --resume %s" % shlex.quote(run_dir)


def published_path(config):
    """Where a full-recipe run of ``config`` publishes its weights."""
    recipe = config["recipe"]
    return utils.published_weights_path(config["data_dir"], config["network"]["name"],
                                        recipe["name"], recipe["dropout"])


def publish(config, run_dir, weights, record, log):
    """Copy ``weights`` to <data folder>/weights/<network>/<recipe>.npz, where
    test_model.py looks, unless this run is shortened or that file holds
    another run's weights (then say so).

    Returns
    -------
    (str or None, str or None)
        The file published, or None and why not. Raises UserError when the
        file cannot be written.
    """
    target = published_path(config)
    how = "evaluate them with: python test_model.py --run %s" % run_dir
    if not record["full_recipe"]:
        why = "a shortened run: %s" % ", ".join(record["changes"])
        log("weights: %s (%s; not published to data/weights/); %s" % (weights, why, how))
        return None, why
    if os.path.exists(target):
        other = _run_of(target)
        if other != record["run_dir"]:
            why = "%s already holds the weights of run %s" % (target, other or "unknown")
            log("weights: %s; not published: %s (kept; copy this run's file there yourself "
                "to replace them); %s" % (weights, why, how))
            return None, why
    folder = os.path.dirname(target)
    problem = utils.unwritable(folder)
    if problem:
        raise UserError(problem)
    os.makedirs(folder, exist_ok=True)
    with open(weights, "rb") as source:   # streamed: WRN-28-10's file is 146 MB
        utils.atomic_write(target, lambda f: shutil.copyfileobj(source, f))
    log("weights: %s (published as %s, where test_model.py looks)" % (weights, target))
    return target, None


def _run_of(weights_path):
    """The run folder a weights file says it came from, or None."""
    try:
        return utils.read_weights(weights_path)["records"].get("run", {}).get("run_dir")
    except UserError:
        return None


def _percent(value):
    return "-" if value is None else "%.2f%%" % value


def _milestone_text(recipe):
    """'epochs 80,121', 'iterations 32000,48000' or '-'."""
    parts = ["%s %s" % (unit, ",".join(str(m) for m in recipe[key]))
             for unit, key in (("epochs", "lr_milestones"), ("iterations", "lr_milestone_iters"))
             if recipe[key]]
    return " and ".join(parts) or "-"


# =============================================================================
# The command line

# How each recipe key is read from the command line, and what it means.
RECIPE_FLAGS = {
    "epochs": (int, "N", "epochs to train"),
    "batch_size": (int, "B", "images per training batch"),
    "lr": (float, "LR", "learning rate after the warm-up"),
    "lr_milestones": (None, "E1,E2", "multiply the learning rate by --lr-factor from these "
                                     "0-based epochs on (80,121: from epochs 81 and 122 of "
                                     "the log); 'none' for none"),
    "lr_factor": (float, "F", "learning-rate factor at each milestone"),
    "lr_milestone_iters": (None, "I1,I2", "multiply the learning rate by --lr-factor from "
                                          "these 0-based iterations on (He et al. 2015: "
                                          "32000,48000); 'none' for none"),
    "max_iters": (int, "N", "stop after N iterations, within an epoch if need be (He et "
                            "al. 2015: 64000); 0: after --epochs"),
    "warmup_iters": (int, "N", "iterations at --warmup-lr first (He et al. 2015 use 400 "
                               "for ResNet-110, He et al. 2016 for every CIFAR net)"),
    "warmup_epochs": (int, "N", "epochs at --warmup-lr first"),
    "warmup_lr": (float, "LR", "learning rate of the warm-up"),
    "momentum": (float, "M", "momentum"),
    "optimizer": (None, None, "Nesterov SGD as Torch's optim.sgd or as Lasagne computes it"),
    "reset_momentum_at_milestones": (None, "yes|no", "restart the momentum buffers at each "
                                                     "milestone (WRN's train.lua)"),
    "weight_decay": (float, "WD", "weight decay"),
    "decay": (None, None, "gradient_all: wd * w added to every gradient (Torch); "
                          "l2_loss_regularizable: wd * sum(w^2) added to the loss over "
                          "weights and gamma (Lasagne)"),
    "normalisation": (None, None, "per-channel mean and std, or the mean image"),
    "pad": (int, "P", "pixels of padding before the random 32x32 crop"),
    "pad_mode": (None, None, "padding of the crop"),
    "val_size": (int, "N", "training images held out for validation"),
    "drop_last": (None, "yes|no", "drop the last partial batch of an epoch"),
    "dropout": (float, "P", "dropout between a wide unit's convolutions (WRN: 0.3)"),
    "publish": (None, None, "which weights go to data/weights/: the final or the "
                            "best-on-validation ones"),
}
MIN_VALUES = {"epochs": 1, "batch_size": 1}
USAGE = ("train_nn.py VARIANT DEPTH [WIDTH] [--recipe R] [--data-dir D] [options]\n"
         "       train_nn.py --resume RUN_DIR [--data-dir D] [--test-every K]")


def milestones(text, unit="epochs", example="80,121"):
    """'80,121' -> [80, 121]; '' or 'none' -> []; refused unless increasing."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated %s, e.g. %s"
                                         % (unit, example))
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("%s are counted from 0" % unit)
    if any(b <= a for a, b in zip(values, values[1:])):
        raise argparse.ArgumentTypeError("milestones must increase, e.g. %s" % example)
    return values


def iteration_milestones(text):
    """'32000,48000' -> [32000, 48000], as ``milestones``."""
    return milestones(text, "iterations", "32000,48000")


def yes_no(text):
    if text.lower() in ("1", "yes", "true", "on"):
        return True
    if text.lower() in ("0", "no", "false", "off"):
        return False
    raise argparse.ArgumentTypeError("expected yes or no")


def _recipe_defaults(key):
    """'paper-preresnet 164, paper-wrn 200, seed 200' (one value if all agree)."""
    def show(value):
        if isinstance(value, list):
            return ",".join(str(v) for v in value) or "none"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)
    values = [(name, show(recipe[key])) for name, recipe in RECIPES.items()]
    if len({v for _, v in values}) == 1:
        return values[0][1]
    return ", ".join("%s %s" % pair for pair in values)


def build_parser():
    parser = models.UsageParser(
        usage=USAGE, description=__doc__.split("\n\n")[0],
        epilog="examples:\n" + __doc__.split("\n\n")[1] + "\n\nRecipes: paper (the "
               "variant's paper recipe: paper-preresnet or paper-wrn) and seed (the old "
               "repository's); every recipe value can be overridden below.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    models.add_network_arguments(parser, optional=True)
    parser.add_argument("--recipe", default=None,
                        help="paper (default: paper-preresnet or paper-wrn), seed, "
                             "he2015, he2015-warmup (He et al. 2015's CIFAR ResNets), "
                             "resnet-1k-layers (PreResNet-1001 as its authors' code trains "
                             "it)")
    parser.add_argument("--data-dir", metavar="D",
                        help="folder holding cifar-10-batches-py/ (default: data/; "
                             "downloaded there when missing)")
    parser.add_argument("--out", metavar="RUN_DIR",
                        help="run folder (default: runs/<network>-<recipe>-<time>)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of initialisation, split, shuffling, augmentation "
                             "and dropout (default: 0)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="train on the first N training images (smoke runs; such a "
                             "run's weights are not published to data/weights/)")
    parser.add_argument("--test-every", type=int, default=None, metavar="K",
                        help="test-set error every K epochs and at the last (0: last only; "
                             "default: 1); reported, never used to select a model")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its checkpoint, exactly "
                             "as configured (only --data-dir and --test-every may change)")
    recipe = parser.add_argument_group("recipe values (default: the recipe's)")
    for key, (kind, metavar, text) in RECIPE_FLAGS.items():
        flag = "--" + key.replace("_", "-")
        text = "%s (%s)" % (text, _recipe_defaults(key))
        if key in CHOICES:
            recipe.add_argument(flag, choices=CHOICES[key], help=text)
        elif key == "lr_milestones":
            recipe.add_argument(flag, type=milestones, metavar=metavar, help=text)
        elif key == "lr_milestone_iters":
            recipe.add_argument(flag, type=iteration_milestones, metavar=metavar, help=text)
        elif kind is None:
            recipe.add_argument(flag, type=yes_no, metavar=metavar, help=text)
        else:
            recipe.add_argument(flag, type=kind, metavar=metavar, help=text)
    return parser


def recipe_overrides(args):
    return {key: getattr(args, key) for key in RECIPE_FLAGS}


def new_run(parser, args):
    models.check_network_arguments(parser, args)
    overrides = recipe_overrides(args)
    for key, minimum in MIN_VALUES.items():
        if overrides[key] is not None and overrides[key] < minimum:
            parser.error("--%s must be at least %d" % (key.replace("_", "-"), minimum))
    for key, value in overrides.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            parser.error("--%s must not be negative" % key.replace("_", "-"))
    for flag, value in (("--limit", args.limit), ("--test-every", args.test_every)):
        if value is not None and value < 0:
            parser.error("%s must not be negative" % flag)
    try:
        recipe = resolve_recipe(args.recipe or "paper", args.variant, overrides)
        info = models.network_info(args.variant, args.depth, args.width or 1,
                                   args.arch or "paper", args.dataset or "cifar10",
                                   recipe["dropout"], args.unit or models.DEFAULT_UNIT,
                                   args.shortcut or models.IDENTITY)
    except (ValueError, UserError) as error:
        parser.error(str(error))
    run_dir = args.out or os.path.join(
        utils.PROJECT_DIR, "runs", "%s-%s-%s" % (
            info["name"], recipe["name"], datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
    found = run_files_in(run_dir)
    if CHECKPOINT_NAME in found:
        parser.error("%s already holds a run; continue it with --resume %s, or choose "
                     "another --out" % (run_dir, run_dir))
    if set(found) - set(STARTUP_FILES):
        # a finished run whose checkpoint was deleted, or another program's results
        parser.error("%s holds a run's files (%s): choose another --out (nothing there is "
                     "replaced)" % (run_dir, ", ".join(found)))
    config = {"network": info, "recipe": recipe, "seed": args.seed or 0,
              "limit": args.limit or 0,
              "data_dir": os.path.abspath(args.data_dir or utils.DEFAULT_DATA_DIR),
              "test_every": 1 if args.test_every is None else args.test_every}
    return config, run_dir


def resumed_run(parser, args):
    """The config and progress of the run in ``args.resume``. Only --data-dir
    (where the same data lies) and --test-every (what is reported) may change;
    every other setting is the run's own."""
    given = ["--" + key.replace("_", "-") for key, value in recipe_overrides(args).items()
             if value is not None]
    given += [flag for flag, value in (("--out", args.out), ("--limit", args.limit),
                                       ("--arch", args.arch), ("--dataset", args.dataset),
                                       ("--unit", args.unit), ("--shortcut", args.shortcut),
                                       ("--seed", args.seed), ("--recipe", args.recipe))
              if value is not None]
    if given:
        parser.error("--resume continues a run exactly as it was configured; it takes "
                     "no %s (only --data-dir and --test-every)" % ", ".join(given))
    records = read_checkpoint(args.resume)["records"]
    config, progress = records["config"], records["progress"]
    info = config["network"]
    if args.variant is not None and (args.variant, args.depth, args.width or 1) != (
            info["variant"], info["depth"], info["width"]):
        parser.error("%s holds a %s run, not `%s %s%s`" % (
            args.resume, info["display"], args.variant, args.depth,
            " %d" % args.width if args.width else ""))
    if args.data_dir:
        config["data_dir"] = os.path.abspath(args.data_dir)
    if args.test_every is not None:
        if args.test_every < 0:
            parser.error("--test-every must not be negative")
        config["test_every"] = args.test_every
    return config, progress


class RunLog:
    """What the program prints, also appended to the run folder's output.log
    once the folder exists (earlier lines are kept until then)."""

    def __init__(self):
        self.file, self.pending = None, []

    def __call__(self, text):
        print(text, flush=True)
        self._keep(text)

    def error(self, text):
        print(text, file=sys.stderr, flush=True)
        self._keep(text)

    def _keep(self, text):
        if self.file is None:
            self.pending.append(text)
        else:
            self.file.write(text + "\n")
            self.file.flush()

    def attach(self, path):
        if self.file is not None:
            return
        self.file = open(path, "a")
        for text in self.pending:
            self.file.write(text + "\n")
        self.file.flush()
        self.pending = []

    def close(self):
        if self.file is not None:
            self.file.close()


def provenance(data):
    """What config.json records beside the settings: the code's commit, the
    data's folder and whether its files are the official ones, the time."""
    return {"code": loop.git_state(utils.PROJECT_DIR),
            "data": {"folder": data["folder"], "official": not data["unofficial_files"],
                     "unofficial_files": data["unofficial_files"]},
            "versions": loop.library_versions(), "machine": loop.machine_description(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def limit_to_data(config, count, log):
    """A --limit of the whole training set or more trains on all of it: the
    very run made without --limit (so a full-recipe one, published as such)."""
    limit = config["limit"]
    if limit and limit >= count:
        log("note: --limit %d is %s the %s training images: training on all of them, as "
            "without --limit" % (limit, "more than" if limit > count else "all of",
                                 format(count, ",")))
        config["limit"] = 0


def check_places_to_write(trainer, resume):
    """Before anything is compiled: UserError unless the run folder and, for
    a full-recipe run, the folder it publishes to can be written, with room
    for its files, so that a run of days cannot fail at its end."""
    run_dir, config = trainer.run_dir, trainer.config
    problem = utils.unwritable(run_dir)
    if problem:
        raise UserError("cannot %s the run folder %s: %s; %s" % (
            "write in" if resume else "create", run_dir, problem,
            "make it writable and resume again" if resume else "choose another --out"))
    # Room: the checkpoint (every parameter, the momentum buffers and, with a
    # validation split, the best weights) twice while it is replaced, the
    # final (and best) weights, the logs and curves; one weights file where
    # it publishes.
    weights_bytes = sum(p.get_value(borrow=True).nbytes for p in trainer.net.params)
    best_bytes = weights_bytes if config["recipe"]["val_size"] else 0
    checkpoint_bytes = weights_bytes + 4 * trainer.net.trainable_count + best_bytes
    needs = {}
    free, device = utils.free_bytes(run_dir)
    needs[device] = [free, 2 * checkpoint_bytes + weights_bytes + best_bytes + 2 ** 18,
                     run_dir, "--out"]
    if trainer.run_record()["full_recipe"]:
        target = published_path(config)
        problem = utils.unwritable(os.path.dirname(target))
        if problem:
            raise UserError("%s: this full-recipe run could not publish its weights to %s "
                            "when it ends; make that folder writable, or give a --data-dir "
                            "you can write to (a folder holding a link to %s/ will do)"
                            % (problem, target, utils.DATASETS[
                                config["network"]["dataset"]]["folder"]))
        free, device = utils.free_bytes(os.path.dirname(target))
        needs.setdefault(device, [free, 0, os.path.dirname(target), "--data-dir"])
        needs[device][1] += weights_bytes
    for free, need, folder, flag in needs.values():
        if need > free:
            raise UserError("the disk holding %s has %.1f MB free; this run writes up to "
                            "%.1f MB there (its checkpoint, twice while it is replaced, and "
                            "its weights): free some space, or choose another %s" % (
                                folder, free / 1e6, need / 1e6, flag))


def update_summary(run_dir, **changes):
    path = os.path.join(run_dir, SUMMARY_NAME)
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        summary = {"status": "finished"}
    summary.update(changes)
    utils.write_json(path, summary)


def complete_finished_run(config, run_dir, log, attach):
    """--resume of a run whose epochs are all done: do what its end could not
    (write weights_final.npz from the last checkpoint, publish the weights: a
    full disk, a folder that could not be written, a stop while finishing),
    or say there is nothing to do. ``attach()`` opens output.log first."""
    recipe = config["recipe"]
    final = os.path.join(run_dir, "weights_final.npz")
    done = False
    if not os.path.isfile(final):
        attach()
        checkpoint = read_checkpoint(run_dir)
        utils.write_weights(final, checkpoint["network"], checkpoint["names"],
                            checkpoint["values"], checkpoint["stats"],
                            records={"run": checkpoint["records"]["run"]})
        log("wrote %s from the last checkpoint" % final)
        update_summary(run_dir, weights=final)
        done = True
    best = os.path.join(run_dir, "weights_best.npz")
    chosen = best if recipe["publish"] == "best_val" and os.path.isfile(best) else final
    record = utils.read_npz_record(chosen, "run") or {}
    target = published_path(config)
    if record.get("full_recipe") and not os.path.exists(target):
        attach()
        try:
            published, _ = publish(config, run_dir, chosen, record, log)
        except UserError as error:
            raise UserError("could not publish the weights of %s (%s); once that is fixed, "
                            "run this again" % (run_dir, error))
        update_summary(run_dir, published=published, not_published=None, publish_with=None)
        return 0
    if not done:
        log("%s already finished %s; nothing to do" % (run_dir, _all_epochs(recipe["epochs"])))
    return 0


def stopped_advice(stopped, args, argv, run_dir):
    """The line that says what to do after a stop at once (``loop.Stopped``)."""
    if run_dir and os.path.isfile(os.path.join(run_dir, CHECKPOINT_NAME)):
        return ("%s received while %s; the checkpoint is intact: continue with: python "
                "train_nn.py --resume %s" % (stopped.name, stopped.doing, shlex.quote(run_dir)))
    command = ["python", "train_nn.py"] + argv
    if not args.out and run_dir and os.path.isdir(run_dir):
        command += ["--out", run_dir]  # the folder it made, not a new one
    return ("%s received while %s, before the first checkpoint: nothing to resume; start "
            "again with the same command: %s"
            % (stopped.name, stopped.doing, " ".join(shlex.quote(a) for a in command)))


def main(argv=None):
    engine.compat.keep_freed_memory()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    log = RunLog()
    engine.compat.compile_lock_waits.say = log.error  # in output.log too
    run_dir = None
    try:
        with loop.StopRequests(notify=log.error, at_once=True, doing="starting") as stop:
            try:
                engine.compat.check_compiler()
            except engine.compat.MissingCompiler as error:
                raise UserError(str(error))
            if args.resume:
                if not os.path.isdir(args.resume):
                    parser.error("--resume %s: no such folder" % args.resume)
                try:
                    config, progress = resumed_run(parser, args)
                except utils.DamagedFile:
                    raise
                except UserError as error:
                    parser.error(str(error))
                run_dir = args.resume
                if progress["epoch"] >= config["recipe"]["epochs"]:
                    stop.doing = "finishing the run"
                    return complete_finished_run(config, run_dir, log, lambda: log.attach(
                        os.path.join(run_dir, "output.log")))
            else:
                config, run_dir = new_run(parser, args)
            # Data, settings and every place the run writes first: a bad file
            # or value, or a folder that cannot be written, stops the run
            # before anything is compiled or written.
            stop.doing = "loading the data"
            data = utils.load_dataset(config["network"]["dataset"], config["data_dir"],
                                      log=log)
            if not args.resume:
                limit_to_data(config, len(data["train_x"]), log)
            stop.doing = "building the network"
            trainer = Trainer(config, data, run_dir, log, warn=log.error)
            check_places_to_write(trainer, bool(args.resume))
            reused = not args.resume and bool(run_files_in(run_dir))
            if not args.resume:
                try:
                    os.makedirs(run_dir, exist_ok=True)
                except OSError as error:
                    raise UserError("cannot create the run folder %s: %s; choose another "
                                    "--out" % (run_dir, error.strerror or error))
                config["source"] = provenance(data)
                utils.write_json(os.path.join(run_dir, "config.json"), dict(
                    config, command=" ".join(shlex.quote(a) for a in
                                             ["python", "train_nn.py"] + argv)))
            log.attach(os.path.join(run_dir, "output.log"))
            log("run folder: %s%s" % (run_dir, " (again: its last start ended before its "
                                               "first checkpoint)" if reused else ""))
            trainer.run(resume=bool(args.resume), stop=stop)
            return 0
    except UserError as error:
        log.error("error: %s" % error)
        return 1
    except loop.Stopped as stopped:
        log.error(stopped_advice(stopped, args, argv, run_dir))
        return stopped.exit_code
    except Interrupted as interruption:
        return interruption.exit_code
    except KeyboardInterrupt:
        log.error("\ninterrupted; the last checkpoint (if any) is intact")
        return 130
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
