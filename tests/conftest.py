"""Shared fixtures: tiny CIFAR-format folders written by the tests themselves,
and a helper that runs the command-line programs as a user would."""
import csv
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT_DIR)

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]


def make_images(count, seed, num_classes=10):
    """Images whose colour depends on the class, so a network can learn them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count)
    base = (labels[:, None] * 25 + np.arange(3)[None, :] * 40) % 256
    images = base[:, :, None, None] + rng.normal(0, 30, (count, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_batch(path, images, labels, label_key="labels", protocol=2):
    """A batch file the way the official ones are laid out."""
    batch = {"batch_label": "tiny batch", label_key: [int(v) for v in labels],
             "data": images.reshape(len(images), -1),
             "filenames": ["img_%d.png" % i for i in range(len(images))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def write_tiny_cifar10(root, per_batch=40, test_count=100, seed=0, images=make_images):
    """A CIFAR-10 folder of ``images(count, seed)`` (make_images by default)."""
    folder = os.path.join(str(root), "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for i in range(1, 6):
        write_batch(os.path.join(folder, "data_batch_%d" % i), *images(per_batch, seed + i))
    write_batch(os.path.join(folder, "test_batch"), *images(test_count, seed + 99))
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": LABEL_NAMES, "num_cases_per_batch": per_batch}, f,
                    protocol=2)
    return folder


@pytest.fixture
def tiny_data(tmp_path):
    """A fresh tiny CIFAR-10 data folder (5 x 40 training, 100 test images)."""
    write_tiny_cifar10(tmp_path / "data")
    return tmp_path / "data"


def run_cli(*args, timeout=900, **kwargs):
    """Run train_nn.py / test_model.py in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable] + [str(a) for a in args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as f:
        return list(csv.DictReader(f))


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def pairs(*sequences):
    """``zip`` that fails on sequences of different lengths, so that a
    comparison in a loop cannot pass by comparing nothing (``zip(strict=True)``
    needs Python 3.10; the gpu image runs 3.8)."""
    sequences = [list(s) for s in sequences]
    lengths = [len(s) for s in sequences]
    assert len(set(lengths)) == 1, "sequences of different lengths: %s" % lengths
    return zip(*sequences)


# =============================================================================
# The recipes as the authors' code (and the old repository) run them, written
# from those sources for tests/test_sources.py and tests/test_wiring.py; never
# read from train_nn.RECIPES. Sources: fb.resnet.torch (opts.lua, train.lua,
# dataloader.lua, datasets/cifar10.lua, datasets/transforms.lua),
# KaimingHe/resnet-1k-layers (README.md), szagoruyko/wide-residual-networks
# (train.lua, scripts/train_cifar.sh, augmentation.lua, README.md), torch/optim
# sgd.lua, docs/old-repository.md.

# Learning-rate schedules, as each source computes them (1-based epochs).


def fb_resnet_torch_lr(epoch):
    """fb.resnet.torch train.lua, Trainer:learningRate, cifar10 and cifar100:
    ``decay = epoch >= 122 and 2 or epoch >= 81 and 1 or 0``,
    ``return self.opt.LR * math.pow(0.1, decay)``; opts.lua: ``-LR 0.1``."""
    decay = 2 if epoch >= 122 else 1 if epoch >= 81 else 0
    return 0.1 * 0.1 ** decay


def wrn_lr(epoch):
    """wide-residual-networks train.lua: ``for epoch=1,opt.max_epoch``, and
    ``if tablex.find(opt.epoch_step, epoch) then updateLR()`` where updateLR sets
    ``opt.learningRate * opt.learningRateDecayRatio`` before the epoch trains;
    scripts/train_cifar.sh: learningRate=0.1, epoch_step={60,120,160},
    learningRateDecayRatio=0.2."""
    rate = 0.1
    for e in range(1, epoch + 1):
        if e in (60, 120, 160):
            rate *= 0.2
    return rate


def seed_lr(epoch):
    """docs/old-repository.md: "lr 0.01 for epochs 0-9, 0.1 from 10, 0.01 from
    80, 0.001 from 120" (0-based there)."""
    e = epoch - 1
    return 0.01 if e < 10 else 0.1 if e < 80 else 0.01 if e < 120 else 0.001


# Epochs at whose start the momentum buffers restart (1-based).
# fb.resnet.torch train.lua: one optimState for the whole run; each epoch only
# sets ``self.optimState.learningRate = self:learningRate(epoch)``: never.
# wide-residual-networks train.lua: updateLR() does ``optimState =
# tablex.deepcopy(opt)``, a table without optim.sgd's ``state.dfdx``: the
# buffer starts again from the next gradient at each epoch_step.
# The old repository: one Lasagne update dictionary for the run: never.
MOMENTUM_RESTARTS = {"paper-preresnet": set(), "paper-wrn": {60, 120, 160}, "seed": set()}

SOURCES = {
    "paper-preresnet": {
        "schedule": fb_resnet_torch_lr,
        # opts.lua: ``opt.nEpochs = opt.nEpochs == 0 and 164`` for cifar10 and
        # cifar100 (He et al. 2016: 64k iterations of 128 images, 164 epochs).
        "epochs": 164,
        # He et al. 2016 Sec. 4 and resnet-1k-layers README: "results in the
        # paper were obtained with a mini-batch size of 128" (its command line
        # uses 64 to fit ResNet-1001 into memory).
        "batch_size": 128,
        # opts.lua: -momentum 0.9, -weightDecay 1e-4.
        "momentum": 0.9,
        "weight_decay": 1e-4,
        # train.lua: optim.sgd with ``nesterov = true, dampening = 0.0``.
        "optimizer": "nesterov_torch",
        # datasets/cifar10.lua preprocess: ColorNormalize(meanstd) "Computed
        # from entire CIFAR-10 training set", HorizontalFlip(0.5),
        # RandomCrop(32, 4); transforms.lua RandomCrop: ``temp:zero()``.
        "normalisation": "channel_mean_std",
        "pad": 4,
        "pad_mode": "zero",
        # dataloader.lua: ``math.ceil(self.__size / self.batchSize)`` batches,
        # the last ``math.min(batchSize, size - idx + 1)`` images.
        "drop_last": False,
        "val_size": 0,  # trains on the whole training set (the test set is "val")
        "dropout": 0.0,
    },
    "paper-wrn": {
        "schedule": wrn_lr,
        "epochs": 200,  # train_cifar.sh: max_epoch=200
        "batch_size": 128,  # train.lua: batchSize = 128
        "momentum": 0.9,  # train.lua: momentum = 0.9
        "weight_decay": 5e-4,  # train.lua: weightDecay = 0.0005
        # train_cifar.sh: nesterov=true; train.lua: dampening = 0, optimMethod sgd.
        "optimizer": "nesterov_torch",
        # README: the final CIFAR numbers use "meanstd normalization (as in
        # fb.resnet.torch)".
        "normalisation": "channel_mean_std",
        # train.lua: randomcrop = 4; train_cifar.sh: randomcrop_type=reflection
        # (augmentation.lua: nn.SpatialReflectionPadding(pad,pad,pad,pad)).
        "pad": 4,
        "pad_mode": "reflect",
        # train.lua train(): ``indices[#indices] = nil`` "remove last element so
        # that all minibatches have equal size".
        "drop_last": True,
        "val_size": 0,
        # train.lua: dropout = 0; the "-dropout" rows set dropout=0.3.
        "dropout": 0.0,
    },
    "seed": {
        "schedule": seed_lr,
        # docs/old-repository.md "Its training and testing".
        "epochs": 200,
        "batch_size": 64,  # (its README: 48 for ResNet-164, for memory)
        "momentum": 0.9,
        "weight_decay": 1e-4,  # in the loss, 1e-4 * sum(w**2)
        "optimizer": "nesterov_lasagne",
        "normalisation": "pixel_mean",
        "pad": 4,
        "pad_mode": "zero",
        "val_size": 5000,
        "dropout": 0.0,  # "Its dropout line was commented out in the final version"
        # (whether it dropped a last partial batch, the description does not say)
    },
}

# Which parameters the weight decay reaches, and the factor their gradient gains.
# fb.resnet.torch / wide-residual-networks: ``model:getParameters()`` flattens
# every parameter into the one vector optim.sgd receives, and sgd.lua does
# ``dfdx:add(wd, x)`` on all of it: convolution and linear weights, the linear
# bias, batch-norm scale and shift alike.
# The old repository: ``1e-4 * sum(w**2)`` over Lasagne's regularizable
# parameters (W and batch-norm gamma), so their gradient gains 2e-4 * w, and
# biases and beta none.
DECAY_REACH = {
    "paper-preresnet": {"W": 1e-4, "b": 1e-4, "gamma": 1e-4, "beta": 1e-4},
    "paper-wrn": {"W": 5e-4, "b": 5e-4, "gamma": 5e-4, "beta": 5e-4},
    "seed": {"W": 2e-4, "gamma": 2e-4, "b": 0.0, "beta": 0.0},
}


def outputs_per_thread_count(script, tmp_path, thread_counts):
    """Run ``python -c script OUT.npz`` once per OMP_NUM_THREADS value; return,
    for each, the arrays it saved (in name order)."""
    results = []
    for threads in thread_counts:
        path = tmp_path / ("threads%s.npz" % threads)
        done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=PROJECT_DIR,
                              env=dict(os.environ, OMP_NUM_THREADS=threads),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        with np.load(path) as arrays:
            results.append([arrays[name] for name in sorted(arrays.files)])
    return results


def pytest_configure(config):
    # Theano 1.0.5 uses numpy aliases deprecated since numpy 1.20.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:theano.*")
    config.addinivalue_line("markers", "slow: runs the programs in subprocesses or trains "
                                       "whole runs (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs pygpu and a visible NVIDIA GPU "
                            "(tests/test_gpu.py); skipped with the reason elsewhere")
