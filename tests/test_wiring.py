"""What the training loop really does, step by step, compared with the recipes'
sources: instrumented short runs of tiny networks, and a run that must learn.

Each run goes through ``train_nn.train`` in-process. The instruments wrap,
from the outside, what the loop calls (no hook in the project's code):

- ``train_nn.compile_training_step``: around every step the parameters and
  the momentum buffers before and after it, the learning rate it was given
  and the plain cross-entropy gradient of its batch (an independent Theano
  function of the same network). From these the test solves the source's
  optimiser equations for the learning rate that moved the parameters and the
  weight decay each parameter received, and sees whether the buffers had been
  restarted.
- ``utils.make_batch``: every training batch and what it was made from; the
  test finds, pixel by pixel, each image's crop offset, flip and padding, and
  the normalisation that produced its values.
- ``utils.normalisation_stats``: which images the statistics came from.

The runs start just before the source's first learning-rate change (the
Trainer's progress set to that epoch): the real milestones, not moved ones.
Every trainable parameter is made non-zero first, so that the weight decay of
each (biases and batch-norm shifts start at 0) can be seen.
"""
import json
import math
import os

import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
from lasagne.layers import get_all_params, get_output
from lasagne.objectives import categorical_crossentropy

import models
import train_nn
import utils
from conftest import (DECAY_REACH, MOMENTUM_RESTARTS, SOURCES, coloured_images, pairs,
                      read_log, write_tiny_cifar10)

# Every test here trains (short) runs.
pytestmark = pytest.mark.slow


def quiet(*args):
    pass


# Each run covers three epochs around the source's first learning-rate change
# (1-based epochs): fb.resnet.torch's decay at 81, wide-residual-networks'
# updateLR (and momentum restart) at 60, the old repository's 0.01 -> 0.1 at
# its epoch 10 (0-based), our 11.
RUNS = {
    "paper-preresnet": {"network": ("normal", 1, 1, "paper"), "first_epoch": 80},
    "paper-wrn": {"network": ("wide", 1, 1, "paper"), "first_epoch": 59},
    # 200 tiny images cannot leave a validation split of 5,000
    "seed": {"network": ("normal", 1, 1, "seed"), "first_epoch": 10,
             "overrides": {"val_size": 50}},
}
EPOCHS_RUN = 3


class Instruments:
    """Records what the loop uses; installed with ``monkeypatch``."""

    def __init__(self, monkeypatch, first_epoch):
        self.steps, self.batches, self.stats_calls = [], [], []
        self.trainers, self.validated = [], []
        self.epoch = None
        self._install(monkeypatch, first_epoch)

    def _install(self, monkeypatch, first_epoch):
        real_compile = train_nn.compile_training_step
        real_make_batch = utils.make_batch
        real_stats = utils.normalisation_stats
        real_init = train_nn.Trainer.__init__
        real_run_epoch = train_nn.Trainer.run_epoch
        real_error = train_nn.Trainer.error_percent

        def compile_training_step(net, recipe):
            step, learning_rate, buffers = real_compile(net, recipe)
            return self._instrumented(net, step, learning_rate, buffers), learning_rate, buffers

        def make_batch(images, labels, plan, start, stop, stats, pad, pad_mode):
            out = real_make_batch(images, labels, plan, start, stop, stats, pad, pad_mode)
            self.batches.append({"images": images, "labels": labels,
                                 "picks": plan["order"][start:stop], "stats": stats,
                                 "out": out})
            return out

        def normalisation_stats(kind, images):
            stats = real_stats(kind, images)
            self.stats_calls.append({"kind": kind, "images": images, "stats": stats})
            return stats

        def init(trainer, *args, **kwargs):
            real_init(trainer, *args, **kwargs)
            self.trainers.append(trainer)
            trainer.progress["epoch"] = first_epoch - 1
            trainer.progress["iteration"] = (first_epoch - 1) * len(trainer.batches)
            make_every_parameter_non_zero(trainer.net)

        def run_epoch(trainer, stop):
            self.epoch = trainer.progress["epoch"] + 1  # 1-based, as the sources count
            return real_run_epoch(trainer, stop)

        def error_percent(trainer, label, images, labels, stop=None):
            if images is trainer.val_x:
                self.validated.append(images)
            return real_error(trainer, label, images, labels, stop)

        monkeypatch.setattr(train_nn, "compile_training_step", compile_training_step)
        monkeypatch.setattr(utils, "make_batch", make_batch)
        monkeypatch.setattr(utils, "normalisation_stats", normalisation_stats)
        monkeypatch.setattr(train_nn.Trainer, "__init__", init)
        monkeypatch.setattr(train_nn.Trainer, "run_epoch", run_epoch)
        monkeypatch.setattr(train_nn.Trainer, "error_percent", error_percent)

    def _instrumented(self, net, step, learning_rate, buffers):
        params = get_all_params(net.output, trainable=True)
        by_name = {b.name: b for b in buffers}
        assert sorted(by_name) == sorted(p.name + ".momentum" for p in params)
        paired = [by_name[p.name + ".momentum"] for p in params]
        labels = T.ivector("labels")
        loss = categorical_crossentropy(get_output(net.output), labels).mean()
        # no_default_updates: the batch-norm averages are the step's to update
        gradient = theano.function([net.input_var, labels], T.grad(loss, params),
                                   no_default_updates=True)

        def instrumented_step(images, labels):
            record = {"epoch": self.epoch, "given_lr": float(learning_rate.get_value()),
                      "names": [p.name for p in params],
                      "p0": [p.get_value() for p in params],
                      "b0": [b.get_value() for b in paired],
                      "g": gradient(images, labels)}
            result = step(images, labels)
            record["p1"] = [p.get_value() for p in params]
            record["b1"] = [b.get_value() for b in paired]
            self.steps.append(record)
            return result
        return instrumented_step


def make_every_parameter_non_zero(net):
    rng = np.random.default_rng(7)
    for param in get_all_params(net.output, trainable=True):
        value = param.get_value()
        kind = param.name.rsplit(".", 1)[1]
        if kind in ("b", "beta"):
            value = rng.normal(0, 0.3, value.shape)
        elif kind == "gamma":
            value = rng.uniform(0.5, 1.5, value.shape)
        param.set_value(value.astype(param.dtype))


# -----------------------------------------------------------------------------
# The optimisers' equations, as the sources write them, solved for what the
# step used. ``g`` is the loss gradient, ``k`` a parameter's decay factor.


def _dot(a, b):
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def solve_torch_sgd(record, momentum):
    """torch/optim sgd.lua, nesterov, dampening 0: ``dfdx:add(wd, x)``;
    buffer ``state.dfdx:mul(mom):add(1, dfdx)`` (a copy of dfdx the first
    time, the same as from zero); ``dfdx:add(mom, state.dfdx)``;
    ``x:add(-clr, dfdx)``. Returns the learning rate, each parameter's decay
    factor and what the equations leave unexplained (relative, all parameters
    together)."""
    decay, num, den = {}, 0.0, 0.0
    unexplained = Residual()
    for name, p0, p1, b0, b1, g in pairs(record["names"], record["p0"], record["p1"],
                                         record["b0"], record["b1"], record["g"]):
        d = b1 - momentum * b0  # gradient plus decay
        decay[name] = _dot(d - g, p0) / _dot(p0, p0)
        unexplained.add(d - g - decay[name] * p0, d)
        direction = d + momentum * b1
        num += _dot(p0 - p1, direction)
        den += _dot(direction, direction)
    lr = num / den
    for p0, p1, b0, b1 in pairs(record["p0"], record["p1"], record["b0"], record["b1"]):
        unexplained.add(p0 - p1 - lr * (b1 - momentum * b0 + momentum * b1), p0 - p1)
    return lr, decay, unexplained.value()


def solve_lasagne_nesterov(record, momentum):
    """lasagne.updates.nesterov_momentum: ``v <- momentum * v - lr * d``,
    ``p <- p + momentum * v - lr * d`` with ``d = g + k * p``. Each parameter's
    ``lr * d`` is split into ``lr * g`` and ``lr * k * p`` by least squares."""
    decay, rates = {}, []
    unexplained = Residual()
    for name, p0, p1, b0, b1, g in pairs(record["names"], record["p0"], record["p1"],
                                         record["b0"], record["b1"], record["g"]):
        lr_d = momentum * b0 - b1
        a = np.stack([g.ravel(), p0.ravel()], axis=1).astype(np.float64)
        (rate, rate_k), *_ = np.linalg.lstsq(a, lr_d.ravel().astype(np.float64), rcond=None)
        if _dot(g, g) > 1e-6 * _dot(p0, p0):  # a learning rate only where there is a gradient
            rates.append(rate)
        decay[name] = rate_k / rate
        unexplained.add(lr_d - rate * g - rate_k * p0, lr_d)
        unexplained.add(p1 - p0 - momentum * b1 + lr_d, p1 - p0)
    return float(np.median(rates)), decay, unexplained.value()


class Residual:
    """sqrt(sum |unexplained|^2 / sum |explained|^2) over all parameters (some,
    such as the old graphs' biases before a batch norm, barely move at all)."""

    def __init__(self):
        self.left = self.scale = 0.0

    def add(self, left, scale):
        self.left += _dot(left, left)
        self.scale += _dot(scale, scale)

    def value(self):
        return math.sqrt(self.left / self.scale)


SOLVERS = {"nesterov_torch": solve_torch_sgd, "nesterov_lasagne": solve_lasagne_nesterov}


# -----------------------------------------------------------------------------
# Augmentation, read back from the pixels.

EDGE = 4  # the sources pad by 4: every crop keeps the centre 24x24 of its image


def decode_augmentation(image, source, pad=EDGE):
    """(dy, dx, flipped, padding) that turn ``source`` (a normalised image) into
    ``image``: a 32x32 crop at offset (dy, dx) of the image padded by ``pad``,
    mirrored left-right when flipped; padding is 'zero', 'reflect' (mirrored
    without repeating the border pixel: numpy's 'reflect', Torch's
    SpatialReflectionPadding), 'none' (the crop is the image itself) or None
    when no such transformation explains the pixels."""
    inner = 32 - 2 * pad
    windows = np.lib.stride_tricks.sliding_window_view(source, (inner, inner), axis=(1, 2))
    best = None
    for flipped in (False, True):
        centre = image[:, pad:32 - pad, pad:32 - pad]
        if flipped:
            centre = centre[:, :, ::-1]
        error = np.abs(windows - centre[:, None, None]).max(axis=(0, 3, 4))
        dy, dx = np.unravel_index(np.argmin(error), error.shape)
        if best is None or error[dy, dx] < best[0]:
            best = (error[dy, dx], int(dy), int(dx), flipped)
    error, dy, dx, flipped = best
    if error > 1e-4:
        return None
    found = []
    for mode in ("zero", "reflect"):
        padded = np.pad(source, ((0, 0), (pad, pad), (pad, pad)),
                        mode="constant" if mode == "zero" else "reflect")
        crop = padded[:, dy:dy + 32, dx:dx + 32]
        if np.allclose(crop[:, :, ::-1] if flipped else crop, image, atol=1e-4):
            found.append(mode)
    padding = "none" if len(found) == 2 else found[0] if found else None
    return dy, dx, flipped, padding


def source_statistics(kind, images):
    """The normalisation the sources apply, from ``images`` (float64): per
    channel mean and standard deviation (fb.resnet.torch datasets/cifar10.lua
    meanstd, "computed from entire CIFAR-10 training set") or the mean image
    (the old repository's pixel mean of its training part)."""
    x = images.astype(np.float64)
    if kind == "channel_mean_std":
        return x.mean(axis=(0, 2, 3))[:, None, None], x.std(axis=(0, 2, 3))[:, None, None]
    return x.mean(axis=0), np.ones((1, 1, 1))


# -----------------------------------------------------------------------------
# The runs


def tiny_config(family, data_dir, overrides=None, network=None):
    variant, depth, width, arch = network or RUNS[family]["network"]
    return {"network": models.network_info(variant, depth, width, arch, "cifar10"),
            "recipe": train_nn.resolve_recipe(family, variant, overrides),
            "seed": 0, "limit": 0, "data_dir": str(data_dir), "test_every": 0}


@pytest.fixture(scope="module", params=sorted(RUNS))
def run(request, tmp_path_factory):
    family = request.param
    spec = RUNS[family]
    root = tmp_path_factory.mktemp(family)
    write_tiny_cifar10(root / "data")  # 200 training images, 100 test images
    data = utils.load_dataset("cifar10", str(root / "data"), log=quiet)
    overrides = dict(spec.get("overrides", {}),
                     epochs=spec["first_epoch"] - 1 + EPOCHS_RUN)
    config = tiny_config(family, root / "data", overrides)
    os.makedirs(root / "run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        instruments = Instruments(monkeypatch, spec["first_epoch"])
        train_nn.train(config, data, str(root / "run"), log=quiet)
    solve = SOLVERS[SOURCES[family]["optimizer"]]
    for record in instruments.steps:
        record["lr"], record["decay"], record["residual"] = solve(
            record, SOURCES[family]["momentum"])
        record["restarted"] = all((b == 0).all() for b in record["b0"])
    return {"family": family, "source": SOURCES[family], "steps": instruments.steps,
            "batches": instruments.batches, "stats_calls": instruments.stats_calls,
            "data": data, "log": read_log(root / "run"),
            "epochs": list(range(spec["first_epoch"], spec["first_epoch"] + EPOCHS_RUN))}


def batches_of_each_epoch(run):
    """{1-based epoch: [the positions in the training images of each batch]}:
    batches are made in the order the steps take them."""
    epochs = {}
    for step, batch in pairs(run["steps"], run["batches"]):
        epochs.setdefault(step["epoch"], []).append(batch["picks"])
    return epochs


def check_drop_last(run, drop_last, batch_size):
    """Every epoch has the batches ``drop_last`` asks for on a training set that
    leaves a partial one: only whole batches, each image at most once, or
    every image exactly once with the partial batch last."""
    count = len(run["batches"][0]["images"])
    assert count % batch_size, "the run must leave a partial batch to tell the two apart"
    whole = [batch_size] * (count // batch_size)
    for epoch, picks in batches_of_each_epoch(run).items():
        seen = np.concatenate(picks)
        assert len(set(seen.tolist())) == len(seen), epoch
        if drop_last:
            assert [len(p) for p in picks] == whole, epoch
        else:
            assert [len(p) for p in picks] == whole + [count % batch_size], epoch
            assert sorted(seen.tolist()) == list(range(count)), epoch


def test_the_run_went_through_its_epochs_and_steps(run):
    epochs = [record["epoch"] for record in run["steps"]]
    assert sorted(set(epochs)) == run["epochs"]
    assert len(run["steps"]) == len(run["batches"]) >= len(run["epochs"])
    assert [int(row["epoch"]) for row in run["log"]] == run["epochs"]


def test_every_step_moves_the_parameters_by_the_sources_optimiser(run):
    """The update of every parameter fits the source's equations (Torch's
    Nesterov SGD or Lasagne's) with one learning rate and one decay factor per
    parameter."""
    for record in run["steps"]:
        assert record["residual"] < 2e-3, record["epoch"]


def test_every_step_uses_the_sources_learning_rate(run):
    schedule = run["source"]["schedule"]
    used = [(r["epoch"], round(r["lr"], 6)) for r in run["steps"]]
    expected = [(r["epoch"], round(schedule(r["epoch"]), 6)) for r in run["steps"]]
    assert used == expected
    for record in run["steps"]:
        assert record["given_lr"] == pytest.approx(schedule(record["epoch"]), rel=1e-6)


def test_momentum_restarts_exactly_where_the_source_rebuilds_its_state(run):
    """At the run's first step the buffers are new; afterwards only at the
    first step of an epoch in which the source rebuilds its optimiser state."""
    restarts = MOMENTUM_RESTARTS[run["family"]]
    seen = []
    for i, record in enumerate(run["steps"]):
        first_of_epoch = i == 0 or run["steps"][i - 1]["epoch"] != record["epoch"]
        seen.append(record["restarted"])
        expected = i == 0 or (first_of_epoch and record["epoch"] in restarts)
        assert record["restarted"] == expected, (i, record["epoch"])
    assert seen.count(True) == 1 + len(restarts & set(run["epochs"][1:]))


def check_decay(steps, reach):
    """Every step's decay factor of each parameter is ``reach``'s for its kind
    (W, b, gamma, beta), and every kind is there."""
    for record in steps:
        kinds = set()
        for name, factor in record["decay"].items():
            kind = name.rsplit(".", 1)[1]
            kinds.add(kind)
            assert factor == pytest.approx(reach[kind], rel=0.02, abs=2e-6), (record["epoch"], name)
        assert kinds == set(reach)


def test_weight_decay_reaches_the_parameters_the_source_decays(run):
    check_decay(run["steps"], DECAY_REACH[run["family"]])


def check_batches(batches, normalisation, pad, pad_mode):
    """Each training image is its source image normalised as ``normalisation``
    computes it from the training images, padded by ``pad`` (``pad_mode``),
    cropped at an offset in 0..2*pad (all of them seen) and mirrored
    left-right in about half of the cases, per image."""
    mean, std = source_statistics(normalisation, batches[0]["images"])
    decoded = []
    for batch in batches:
        images, labels = batch["out"]
        np.testing.assert_array_equal(labels, batch["labels"][batch["picks"]])
        originals = (batch["images"][batch["picks"]] - mean) / std
        assert images.shape == originals.shape
        found = [decode_augmentation(image, original, pad)
                 for image, original in pairs(images, originals)]
        assert None not in found, "an image that no crop, flip and padding of its source explains"
        flips = [flip for _, _, flip, _ in found]
        assert 0 < sum(flips) < len(flips)  # per image, not one coin per batch
        decoded += found
    offsets = {dy for dy, _, _, _ in decoded} | {dx for _, dx, _, _ in decoded}
    assert offsets == set(range(2 * pad + 1))
    paddings = {padding for _, _, _, padding in decoded}
    assert paddings - {"none"} == {pad_mode}
    flipped = np.mean([flip for _, _, flip, _ in decoded])
    assert 0.4 < flipped < 0.6, flipped


def test_batches_are_padded_cropped_and_flipped_as_the_source_does(run):
    source = run["source"]
    check_batches(run["batches"], source["normalisation"], source["pad"], source["pad_mode"])


def test_the_last_partial_batch_is_dropped_or_kept_as_the_source_does(run):
    """fb.resnet.torch keeps the last partial batch, wide-residual-networks
    drops it (SOURCES); 200 images in batches of 128 leave one of 72."""
    if "drop_last" not in run["source"]:
        pytest.skip("the old repository's description does not say what it did")
    check_drop_last(run, run["source"]["drop_last"], run["source"]["batch_size"])


def test_normalisation_comes_from_the_training_images_used(run):
    calls = run["stats_calls"]
    assert len(calls) == 1
    kind, images = calls[0]["kind"], calls[0]["images"]
    assert kind == run["source"]["normalisation"]
    trained_on = run["batches"][0]["images"]
    assert all(batch["images"] is trained_on for batch in run["batches"])
    np.testing.assert_array_equal(images, trained_on)
    assert not np.array_equal(images, run["data"]["test_x"][:len(images)])
    picked = np.concatenate([batch["picks"] for batch in run["batches"]])
    assert set(picked) <= set(range(len(trained_on)))
    mean, std = source_statistics(kind, trained_on)
    for batch in run["batches"]:
        assert batch["stats"] is calls[0]["stats"]
        np.testing.assert_allclose(batch["stats"]["mean"], mean, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(batch["stats"]["std"], std, rtol=1e-5)


def test_log_csv_reports_the_learning_rate_the_steps_used(run):
    last_of_epoch = {record["epoch"]: record["lr"] for record in run["steps"]}
    for row in run["log"]:
        epoch = int(row["epoch"])
        assert float(row["lr"]) == pytest.approx(last_of_epoch[epoch], rel=1e-3)
        assert float(row["lr"]) == pytest.approx(run["source"]["schedule"](epoch), rel=1e-6)


# -----------------------------------------------------------------------------
# The command line: every recipe flag reaches the loop. Two runs through
# train_nn.main, instrumented as above, each with every recipe value set on
# the command line away from its recipe's own; what each flag means is written
# here from the flags given (never read from train_nn.RECIPES). The data: 200
# tiny images, --val-size 25 (and --limit 190 in the first run), batches of 30.

FLAG_RUNS = {
    "paper-recipe-changed": {
        "argv": ["normal", "1", "--seed", "3", "--epochs", "2", "--batch-size", "30",
                 "--limit", "190", "--val-size", "25", "--test-every", "0",
                 "--optimizer", "nesterov_lasagne", "--decay", "l2_loss_regularizable",
                 "--momentum", "0.8", "--weight-decay", "3e-4", "--normalisation", "pixel_mean",
                 "--pad", "2", "--pad-mode", "reflect", "--drop-last", "yes",
                 "--lr", "0.05", "--lr-milestones", "1", "--lr-factor", "0.5",
                 "--reset-momentum-at-milestones", "yes", "--warmup-iters", "2",
                 "--warmup-lr", "0.02", "--publish", "best_val"],
        "limit": 190, "training_images": 165, "drop_last": True, "batch_size": 30,
        # two warm-up iterations at 0.02, then 0.05; x0.5 from (0-based) epoch 1
        "lr": {1: [0.02, 0.02, 0.05, 0.05, 0.05], 2: [0.025] * 5},
        # (epoch, step in the epoch) whose buffers start from zero
        "restarts": {(1, 0), (2, 0)},
        "optimizer": "nesterov_lasagne", "momentum": 0.8,
        # loss + wd * sum(w^2) over W and gamma: their gradients gain 2 * wd * w
        "decay": {"W": 6e-4, "gamma": 6e-4, "b": 0.0, "beta": 0.0},
        "normalisation": "pixel_mean", "pad": 2, "pad_mode": "reflect",
        "published": "weights_best.npz",
    },
    "seed-recipe-changed": {
        "argv": ["normal", "1", "--recipe", "seed", "--seed", "3", "--epochs", "2",
                 "--batch-size", "30", "--val-size", "25", "--test-every", "0",
                 "--optimizer", "nesterov_torch", "--decay", "gradient_all",
                 "--momentum", "0.85", "--weight-decay", "2e-4",
                 "--normalisation", "channel_mean_std", "--pad", "3", "--drop-last", "no",
                 "--warmup-epochs", "1", "--warmup-lr", "0.03", "--lr", "0.07",
                 "--publish", "final"],
        "limit": 200, "training_images": 175, "drop_last": False, "batch_size": 30,
        "lr": {1: [0.03] * 6, 2: [0.07] * 6},  # the warm-up epoch, then --lr
        "restarts": {(1, 0)},
        "optimizer": "nesterov_torch", "momentum": 0.85,
        "decay": {"W": 2e-4, "gamma": 2e-4, "b": 2e-4, "beta": 2e-4},
        "normalisation": "channel_mean_std", "pad": 3, "pad_mode": "zero",
        "published": "weights_final.npz",
    },
}


@pytest.fixture(scope="module", params=sorted(FLAG_RUNS))
def flag_run(request, tmp_path_factory):
    expected = FLAG_RUNS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    write_tiny_cifar10(root / "data")
    run_dir = root / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        instruments = Instruments(monkeypatch, first_epoch=1)
        status = train_nn.main(expected["argv"] + ["--data-dir", str(root / "data"),
                                                   "--out", str(run_dir)])
    assert status == 0
    solve = SOLVERS[expected["optimizer"]]
    for record in instruments.steps:
        record["lr"], record["decay"], record["residual"] = solve(record, expected["momentum"])
        record["restarted"] = all((b == 0).all() for b in record["b0"])
    trainer, = instruments.trainers
    return {"expected": expected, "steps": instruments.steps, "batches": instruments.batches,
            "stats_calls": instruments.stats_calls, "trainer": trainer,
            "validated": instruments.validated, "run_dir": run_dir, "data_dir": root / "data",
            "data": utils.load_dataset("cifar10", str(root / "data"), log=quiet),
            "output": (run_dir / "output.log").read_text()}


def test_optimiser_and_momentum_flags_reach_every_step(flag_run):
    """--optimizer and --momentum: every step fits that optimiser's equations
    with that momentum."""
    assert len(flag_run["steps"]) == sum(len(v) for v in flag_run["expected"]["lr"].values())
    for record in flag_run["steps"]:
        assert record["residual"] < 2e-3, record["epoch"]


def test_learning_rate_flags_reach_every_step(flag_run):
    """--lr, --lr-milestones, --lr-factor and the --warmup-* flags."""
    used = {}
    for record in flag_run["steps"]:
        used.setdefault(record["epoch"], []).append(record["lr"])
    for epoch, rates in flag_run["expected"]["lr"].items():
        assert used[epoch] == pytest.approx(rates, rel=1e-3), epoch
    assert sorted(used) == sorted(flag_run["expected"]["lr"])


def test_momentum_restart_flag_reaches_the_loop(flag_run):
    """--reset-momentum-at-milestones: the buffers start from zero at the
    first step of the run and, with the flag, at a milestone's first step."""
    restarted, position = set(), {}
    for record in flag_run["steps"]:
        step = position[record["epoch"]] = position.get(record["epoch"], -1) + 1
        if record["restarted"]:
            restarted.add((record["epoch"], step))
    assert restarted == flag_run["expected"]["restarts"]


def test_weight_decay_flags_reach_every_parameter(flag_run):
    """--decay and --weight-decay."""
    check_decay(flag_run["steps"], flag_run["expected"]["decay"])


def test_batch_flags_reach_every_batch(flag_run):
    """--normalisation, --pad, --pad-mode and --drop-last, read back from the
    batches' pixels."""
    expected = flag_run["expected"]
    assert [call["kind"] for call in flag_run["stats_calls"]] == [expected["normalisation"]]
    assert len(flag_run["batches"][0]["images"]) == expected["training_images"]
    check_batches(flag_run["batches"], expected["normalisation"], expected["pad"],
                  expected["pad_mode"])
    check_drop_last(flag_run, expected["drop_last"], expected["batch_size"])


def test_publish_flag_reaches_the_choice_of_weights(flag_run):
    """--publish: the weights the run names as its result (a shortened run
    publishes nothing to data/weights/) and those test_model.py --run takes."""
    import test_model
    chosen = str(flag_run["run_dir"] / flag_run["expected"]["published"])
    assert "weights: %s (a shortened run" % chosen in flag_run["output"]
    assert test_model.run_weights(str(flag_run["run_dir"])) == chosen


def test_config_json_records_the_command_given(flag_run):
    """The command line main() was given (not the calling process's argv:
    sweep/table.py report reads the overrides from it)."""
    config = json.loads((flag_run["run_dir"] / "config.json").read_text())
    assert config["command"] == " ".join(
        ["python", "train_nn.py"] + flag_run["expected"]["argv"] +
        ["--data-dir", str(flag_run["data_dir"]), "--out", str(flag_run["run_dir"])])


# -----------------------------------------------------------------------------
# The training / validation split


def image_rows(images):
    """Each image as bytes (the tiny images are all different)."""
    return [image.tobytes() for image in images]


def test_training_and_validation_images_split_the_limited_set(flag_run):
    """Disjoint, together the first --limit images, each in one of them once;
    the validation images are the ones the loop evaluates."""
    expected, trainer = flag_run["expected"], flag_run["trainer"]
    limited = image_rows(flag_run["data"]["train_x"][:expected["limit"]])
    assert len(set(limited)) == len(limited)
    train, val = image_rows(trainer.train_x), image_rows(trainer.val_x)
    assert len(train) == expected["training_images"] and len(val) == 25
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(limited)
    assert flag_run["batches"][0]["images"] is trainer.train_x
    assert len(flag_run["validated"]) == 2  # once per epoch
    assert all(images is trainer.val_x for images in flag_run["validated"])
    # the labels travel with their images
    by_image = dict(pairs(image_rows(flag_run["data"]["train_x"]),
                          flag_run["data"]["train_y"].tolist()))
    assert [by_image[row] for row in val] == trainer.val_y.tolist()


def test_the_same_seed_gives_the_same_split(flag_run, tmp_path):
    """A run started again (or resumed) with its seed gets its split back;
    another seed draws another."""
    trainer = flag_run["trainer"]

    def split(seed):
        config = dict(trainer.config, seed=seed)
        again = train_nn.Trainer(config, flag_run["data"], str(tmp_path), quiet)
        return image_rows(again.train_x), image_rows(again.val_x)

    assert split(trainer.config["seed"]) == (image_rows(trainer.train_x),
                                             image_rows(trainer.val_x))
    other_train, other_val = split(trainer.config["seed"] + 1)
    assert set(other_val) != set(image_rows(trainer.val_x))
    assert sorted(other_train + other_val) == sorted(image_rows(trainer.train_x) +
                                                     image_rows(trainer.val_x))


# -----------------------------------------------------------------------------
# Learning


def test_a_short_run_learns_the_learnable_data(tmp_path):
    """Three short epochs of the paper recipe on noisy images whose colour is
    their class: the training loss falls every epoch, to well under half, and
    the test error ends far below chance (90 %). The learning rate is 0.02:
    0.1 is for batches of 128, and on 400 images in batches of 20 it bounces
    (losses 1.18, 0.57, 0.63 with seed 0)."""
    write_tiny_cifar10(tmp_path / "data", per_batch=80, test_count=200, images=coloured_images)
    data = utils.load_dataset("cifar10", str(tmp_path / "data"), log=quiet)
    config = tiny_config("paper-preresnet", tmp_path / "data",
                         {"epochs": 3, "batch_size": 20, "lr": 0.02}, ("normal", 1, 1, "paper"))
    os.makedirs(tmp_path / "run")
    last = train_nn.train(config, data, str(tmp_path / "run"), log=quiet)
    rows = read_log(tmp_path / "run")
    losses = [float(row["train_loss"]) for row in rows]
    assert len(losses) == 3
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.4 * losses[0], losses
    assert float(rows[-1]["train_error"]) < 0.5 * float(rows[0]["train_error"]), rows
    assert last["test_error"] < 20.0, last
