"""The recipes of He et al. 2015 (arXiv 1512.03385) and of KaimingHe/resnet-1k-layers,
and the published numbers of both papers, as their sources state them: written
here from those sources, never read from train_nn.RECIPES or
models.PAPER_TEST_ERROR.

Sources, quoted:

- He et al. 2015 Sec. 4.2 (CIFAR-10): "The network inputs are 32x32 images,
  with the per-pixel mean subtracted"; "We use a weight decay of 0.0001 and
  momentum of 0.9 ... These models are trained with a mini-batch size of 128
  on two GPUs. We start with a learning rate of 0.1, divide it by 10 at 32k
  and 48k iterations, and terminate training at 64k iterations, which is
  determined on a 45k/5k train/val split. We follow the simple data
  augmentation in [24] for training: 4 pixels are padded on each side, and a
  32x32 crop is randomly sampled from the padded image or its horizontal
  flip"; "We present experiments trained on the training set and evaluated on
  the test set"; for n = 18: "we use 0.01 to warm up the training until the
  training error is below 80% (about 400 iterations), and then go back to 0.1
  and continue training"; the 1202-layer network "is trained as described
  above". Table 6: ResNet-20 8.75, -32 7.51, -44 7.17, -56 6.97, -110 6.43
  ("best (mean+-std)": 6.61+-0.16), -1202 7.93.
- He et al. 2016 appendix: "Following [1], for all CIFAR experiments we warm up
  the training by using a smaller learning rate of 0.01 at the beginning 400
  iterations and go back to 0.1 after that". Tables 1-4 (below).
- Caffe's SGD solver (BVLC/caffe docs/tutorial/solver.md): V_{t+1} = mu V_t -
  alpha grad L(W_t), W_{t+1} = W_t + V_{t+1}; the multistep policy lowers the
  rate once the iteration count reaches a step value.
- KaimingHe/resnet-1k-layers README: "th main.lua -netType resnet-pre-act
  -depth 1001 -batchSize 64 -nGPU 2 -nThreads 4 -dataset cifar10 -nEpochs 200";
  "128 (as in [a]) | 4.92 (4.89+/-0.14)", "64 (as in this code) | 4.62
  (4.69+/-0.20)". fb.resnet.torch train.lua, cifar10: ``decay = epoch >= 122
  and 2 or epoch >= 81 and 1 or 0`` (whatever nEpochs is); the rest as
  paper-preresnet (conftest.SOURCES).
"""
import importlib.util
import math
import os

import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T

import models
import train_nn
from conftest import PROJECT_DIR, SOURCES, fb_resnet_torch_lr, write_tiny_cifar10
from engine import updates

CIFAR_TRAIN = 50000


def he2015_lr(iteration, warmup):
    """He et al. 2015's rate at the 0-based ``iteration``."""
    if warmup and iteration < 400:
        return 0.01
    return 0.1 / 10 ** ((iteration >= 32000) + (iteration >= 48000))


HE2015 = {
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "optimizer": "momentum_caffe",   # "momentum", in Caffe
    "weight_decay": 1e-4,
    "decay": "gradient_all",   # Caffe: weight_decay * w on every learnable blob
    "normalisation": "pixel_mean",
    "pad": 4,
    "pad_mode": "zero",
    "val_size": 0,   # the 45k/5k split chose the stop; results train on the training set
    "max_iters": 64000,
    "drop_last": True,   # every iteration a mini-batch of 128
    "dropout": 0.0,
}
SCHEDULES = {"he2015": False, "he2015-warmup": True}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_he2015_recipe_values_are_the_papers(name):
    recipe = train_nn.resolve_recipe(name, "normal")
    for key, value in HE2015.items():
        assert recipe[key] == value, key
    # epochs: enough for 64,000 iterations of floor(50,000 / 128) = 390
    assert recipe["epochs"] == math.ceil(64000 / (CIFAR_TRAIN // 128))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_he2015_learning_rate_of_every_iteration_is_the_papers(name):
    recipe = train_nn.resolve_recipe(name, "normal")
    per_epoch = CIFAR_TRAIN // 128
    rates = {}
    for iteration in range(64000):
        rate = train_nn.learning_rate(recipe, iteration // per_epoch, iteration)
        assert rate == pytest.approx(he2015_lr(iteration, SCHEDULES[name]), rel=1e-9), iteration
        rates[rate] = rates.get(rate, 0) + 1
    assert len(rates) == (4 if SCHEDULES[name] else 3)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_he2015_runs_stop_after_64000_iterations(name):
    recipe = train_nn.resolve_recipe(name, "normal")
    per_epoch = CIFAR_TRAIN // 128
    epochs = train_nn.epochs_to_run(recipe, per_epoch)
    assert (epochs - 1) * per_epoch < 64000 <= epochs * per_epoch


def test_resnet_1k_layers_recipe_is_its_readmes_command_on_fb_resnet_torch():
    recipe = train_nn.resolve_recipe("resnet-1k-layers", "bottleneck")
    source = dict(SOURCES["paper-preresnet"], batch_size=64, epochs=200)
    for key, value in source.items():
        if key != "schedule":
            assert recipe[key] == value, key
    assert (recipe["warmup_iters"], recipe["warmup_epochs"], recipe["max_iters"]) == (0, 0, 0)
    per_epoch = math.ceil(CIFAR_TRAIN / 64)   # fb.resnet.torch keeps the last partial batch
    for epoch in range(1, 201):
        for iteration in ((epoch - 1) * per_epoch, epoch * per_epoch - 1):
            assert train_nn.learning_rate(recipe, epoch - 1, iteration) == pytest.approx(
                fb_resnet_torch_lr(epoch), rel=1e-9), epoch


def test_caffe_momentum_is_caffes_update():
    """Two steps with a change of learning rate in between: V <- mu V - lr g,
    W <- W + V, with g the gradient of 0.5 * sum(W^2) (g = W)."""
    w = theano.shared(np.array([1.0, -2.0], np.float32), name="w")
    rate = theano.shared(np.float32(0.1))
    loss = 0.5 * T.sum(w ** 2)
    step_updates, buffers = updates.momentum_caffe(T.grad(loss, [w]), [w], rate,
                                                   np.float32(0.9))
    step = theano.function([], [], updates=step_updates)
    weights, velocity = np.array([1.0, -2.0]), np.zeros(2)
    for lr in (0.1, 0.01, 0.01):
        rate.set_value(np.float32(lr))
        step()
        velocity = 0.9 * velocity - lr * weights
        weights = weights + velocity
        np.testing.assert_allclose(w.get_value(), weights, rtol=1e-6)
        np.testing.assert_allclose(buffers[0].get_value(), velocity, rtol=1e-6)


@pytest.mark.slow
def test_loop_stops_at_max_iters_inside_an_epoch(tmp_path):
    """200 images in batches of 50 (the last partial one dropped): 4 steps an
    epoch, so 7 iterations are an epoch and 3 steps of the next; the run then
    ends, finished, and its log has both epochs."""
    write_tiny_cifar10(tmp_path / "data")
    data = train_nn.utils.load_dataset("cifar10", str(tmp_path / "data"))
    recipe = train_nn.resolve_recipe("he2015", "normal", {"batch_size": 50, "max_iters": 7})
    info = models.network_info("normal", 1, 1, "paper", "cifar10", unit="original")
    config = {"network": info, "recipe": recipe, "seed": 0, "limit": 0,
              "data_dir": str(tmp_path / "data"), "test_every": 1}
    steps = []
    real_compile = train_nn.compile_training_step

    def counting_compile(net, recipe):
        step, rate, buffers = real_compile(net, recipe)

        def counted(images, labels):
            steps.append(len(labels))
            return step(images, labels)
        return counted, rate, buffers

    train_nn.compile_training_step = counting_compile
    try:
        run = tmp_path / "run"
        os.makedirs(run)
        train_nn.train(config, data, str(run), log=lambda text: None)
    finally:
        train_nn.compile_training_step = real_compile
    assert steps == [50] * 7
    assert config["recipe"]["epochs"] == 2
    log = open(run / "log.csv").read().splitlines()
    assert len(log) == 3 and (run / "weights_final.npz").exists()


# =============================================================================
# The published numbers, as the papers print them.

H16_TABLE2 = {  # ResNet-110, ResNet-164 (CIFAR-10), Table 2
    "original": (6.61, 5.93), "bn-after-add": (8.17, 6.50), "relu-before-add": (7.84, 6.14),
    "relu-preact": (6.71, 5.91), "full-preact": (6.37, 5.46)}
H16_TABLE1 = {  # ResNet-110, original unit, CIFAR-10
    "scaling:0,1": "fail", "scaling:0.5,1": "fail", "scaling:0.5,0.5": 12.35,
    "exclusive-gating:0": "fail", "exclusive-gating:-1": "fail", "exclusive-gating:-2": "fail",
    "exclusive-gating:-3": "fail", "exclusive-gating:-4": "fail", "exclusive-gating:-5": "fail",
    "exclusive-gating:-6": 8.70, "exclusive-gating:-7": 9.81, "shortcut-gating:0": 12.86,
    "shortcut-gating:-6": 6.91, "conv1x1": 12.22, "dropout:0.5": "fail"}
# Table 3 (and 4): (variant, n, unit, dataset, recipe) -> error
H16_TABLE3 = {
    ("bottleneck", 18, "original", "cifar100", "paper"): 25.16,
    ("bottleneck", 18, "full-preact", "cifar100", "paper"): 24.33,
    ("bottleneck", 111, "original", "cifar10", "paper"): 7.61,
    ("bottleneck", 111, "full-preact", "cifar10", "paper"): 4.92,
    ("bottleneck", 111, "original", "cifar100", "paper"): 27.82,
    ("bottleneck", 111, "full-preact", "cifar100", "paper"): 22.71,
    # Table 4's dagger, mini-batch 64 (the released code)
    ("bottleneck", 111, "full-preact", "cifar10", "resnet-1k-layers"): 4.62,
}
H15_TABLE6 = {3: ("he2015", 8.75), 5: ("he2015", 7.51), 7: ("he2015", 7.17),
              9: ("he2015", 6.97), 18: ("he2015-warmup", 6.43), 200: ("he2015-warmup", 7.93)}


def _error(variant, n, unit, dataset="cifar10", recipe="paper", shortcut="identity"):
    info = models.network_info(variant, n, 1, "paper", dataset, unit=unit, shortcut=shortcut)
    return models.paper_error(info, 0.0, recipe)


def test_units_and_shortcuts_have_he2016s_numbers():
    for unit, (resnet110, resnet164) in H16_TABLE2.items():
        assert _error("normal", 18, unit) == resnet110, unit
        assert _error("bottleneck", 18, unit) == resnet164, unit
    for shortcut, error in H16_TABLE1.items():
        assert _error("normal", 18, "original", shortcut=shortcut) == error, shortcut
    for (variant, n, unit, dataset, recipe), error in H16_TABLE3.items():
        assert _error(variant, n, unit, dataset, recipe) == error
    # the recipe decides between the two published numbers of one network
    assert _error("bottleneck", 111, "full-preact", recipe="paper-preresnet") == 4.92


def test_he2015_networks_have_table6s_numbers():
    for n, (recipe, error) in H15_TABLE6.items():
        assert _error("normal", n, "original", recipe=recipe) == error, n
    # ResNet-110's 6.43 is the best of 5 runs; He et al. 2016 report 6.61 (median)
    assert _error("normal", 18, "original", recipe="paper-preresnet") == 6.61


def test_every_published_number_is_in_the_sweeps_table():
    """sweep/table.py finds the same number for a run of each recipe."""
    spec = importlib.util.spec_from_file_location(
        "sweep_table", os.path.join(PROJECT_DIR, "sweep", "table.py"))
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    published = table.read_published()
    assert table.published_row(published, ("normal", 18, 1, "original", "identity"), "cifar10",
                               0.0, "he2015-warmup")["paper"] == 6.43
    assert table.published_row(published, ("normal", 18, 1, "original", "identity"), "cifar10",
                               0.0, "paper-preresnet")["paper"] == 6.61
    assert table.published_row(published, ("bottleneck", 111, 1, "full-preact", "identity"),
                               "cifar10", 0.0, "resnet-1k-layers")["paper"] == 4.62
    assert table.published_row(published, ("normal", 18, 1, "original", "dropout:0.5"),
                               "cifar10", 0.0, "paper-preresnet")["paper"] == "fail"
    assert sorted(table.table_names(published)) == [
        "he2015", "he2016-1001", "he2016-shortcuts", "he2016-units", "papers"]


def test_sweep_runs_each_table_with_its_recipes(tmp_path):
    """`sweep/table.py submit --table he2015` (and the units' table): one run per
    row, with the unit, shortcut and recipe its number was published for."""
    import json
    import subprocess
    import sys
    expected = {
        "he2015": {
            "resnet20-cifar10-he2015-seed0": "normal 3 --unit original --dataset cifar10 "
                                             "--recipe he2015 --seed 0",
            "resnet110-cifar10-he2015-warmup-seed0": "normal 18 --unit original --dataset "
                                                     "cifar10 --recipe he2015-warmup --seed 0",
        },
        "he2016-shortcuts": {
            "resnet110-exclusive-gating-bg-6-cifar10-paper-seed0":
                "normal 18 --unit original --shortcut exclusive-gating:-6 --dataset cifar10 "
                "--recipe paper --seed 0",
            "resnet110-scaling0.5-0.5-cifar10-paper-seed0":
                "normal 18 --unit original --shortcut scaling:0.5,0.5 --dataset cifar10 "
                "--recipe paper --seed 0",
        },
        "he2016-1001": {
            "preresnet1001-cifar10-resnet-1k-layers-seed0":
                "bottleneck 111 --dataset cifar10 --recipe resnet-1k-layers --seed 0",
            "resnet1001-cifar100-paper-seed0":
                "bottleneck 111 --unit original --dataset cifar100 --recipe paper --seed 0",
        },
    }
    counts = {"he2015": 6, "he2016-shortcuts": 16, "he2016-1001": 5, "he2016-units": 12}
    for table, count in counts.items():
        folder = tmp_path / table
        done = subprocess.run([sys.executable, os.path.join(PROJECT_DIR, "sweep", "table.py"),
                               "submit", str(folder), "--table", table, "--seeds", "1",
                               "--dry-run"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        with open(folder / "sweep.json") as f:
            tasks = {t["name"]: " ".join(t["args"]) for t in json.load(f)["tasks"]}
        assert len(tasks) == count, sorted(tasks)
        for name, args in expected.get(table, {}).items():
            assert tasks[name] == args
