"""Shared fixtures: tiny CIFAR-format folders written by the tests themselves,
and a helper that runs the command-line programs as a user would."""
import csv
import os
import pickle
import shutil
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


# Ten colours far apart (the RGB cube's corners, grey, orange): an image's
# class is its colour under strong noise, which crops and flips keep.
PALETTE = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0),
                    (255, 0, 255), (0, 255, 255), (255, 255, 255), (128, 128, 128),
                    (255, 128, 0)])


def coloured_images(count, seed):
    """Images a network learns in a few epochs (tests/test_wiring.py's
    learning check, networks that must predict more than one class)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(PALETTE), count)
    images = PALETTE[labels][:, :, None, None] + rng.normal(0, 60, (count, 3, 32, 32))
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


# CIFAR-100 as https://www.cs.toronto.edu/~kriz/cifar.html describes its python
# version: cifar-100-python/ holding `train` and `test` (dicts with 'data',
# 'fine_labels', 'coarse_labels', 'filenames', 'batch_label') and `meta`
# ('fine_label_names', 100, and 'coarse_label_names', 20). Synthetic names, so
# that they cannot be mistaken for a fallback.
FINE_NAMES = ["fine-%02d" % i for i in range(100)]
COARSE_NAMES = ["coarse-%02d" % i for i in range(20)]


def write_tiny_cifar100(root, train_count=300, test_count=100, seed=0):
    """A CIFAR-100 folder in the official layout; the coarse label of an image
    (fine // 5) differs from its fine one, so a reader of the wrong key shows."""
    folder = os.path.join(str(root), "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    for name, count, offset in (("train", train_count, 1), ("test", test_count, 99)):
        images, labels = make_images(count, seed + offset, num_classes=100)
        batch = {"batch_label": "tiny %s" % name, "fine_labels": [int(v) for v in labels],
                 "coarse_labels": [int(v) // 5 for v in labels],
                 "data": images.reshape(count, -1),
                 "filenames": ["img_%d.png" % i for i in range(count)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(os.path.join(folder, "meta"), "wb") as f:
        pickle.dump({"fine_label_names": FINE_NAMES, "coarse_label_names": COARSE_NAMES}, f,
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


class RunsCode:
    """Unpickling this calls ``os.system(command)``: what a malicious data or
    weights file would do (the tests check that nothing runs)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def python2_string(data):
    """``data`` as Python 2's pickle protocol 0 writes a str: S'...' holding
    repr's escapes."""
    escapes = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    text = "".join(escapes.get(chr(byte)) or (chr(byte) if 32 <= byte < 127 else "\\x%02x" % byte)
                   for byte in data)
    return ("S'%s'\n" % text).encode("ascii")


def python2_pickle(arrays):
    """The bytes Python 2.7's cPickle.dump(list, f) wrote for a list of numpy
    (1.x) float32 arrays, as the old repository saved its weights: protocol 0,
    each array rebuilt by numpy.core.multiarray._reconstruct and set from a
    (version, shape, dtype, fortran, raw bytes as a Python 2 str) state."""
    text = [b"(lp0\n"]
    for array in arrays:
        array = np.ascontiguousarray(array, dtype="<f4")
        text += [b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntS'b'\ntR(I1\n(",
                 b"".join(b"I%d\n" % n for n in array.shape),
                 b"tcnumpy\ndtype\n(S'f4'\nI0\nI1\ntR(I3\nS'<'\nNNNI-1\nI-1\nI0\ntbI00\n",
                 python2_string(array.tobytes()), b"tba"]
    return b"".join(text + [b"."])


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


# =============================================================================
# An independent forward pass: the papers' networks in numpy, in inference mode
# (batch norm with the running averages), from the parameters of a weights
# file read by name. Written from the architecture (He et al. 2016, Fig. 4(e)
# and resnet-pre-act.lua / fb.resnet.torch models/preresnet.lua; Zagoruyko &
# Komodakis 2016, Table 1 and models/wide-resnet.lua), never by walking
# Lasagne's graph, so that an evaluation bug in the project cannot be copied
# into the reference.

# torch/nn SpatialBatchNormalization's default eps, which the authors' models
# use (the running average is of the unbiased variance; inference divides by
# sqrt(running_var + eps)).
BN_EPSILON = 1e-5
STAGE_PLANES = (16, 32, 64)  # the three stages' planes (times k in WRN, 4x out in bottlenecks)


def read_weights_by_name(path):
    """``({name: float64 array}, mean, std)`` of a weights file of this
    project, read with numpy alone: arrays ``param_000``..., their names (with
    shapes) in ``param_names``, the input normalisation in ``norm_mean`` and
    ``norm_std``."""
    with np.load(str(path), allow_pickle=False) as arrays:
        names = [str(text).split(" (")[0] for text in arrays["param_names"]]
        params = {name: arrays["param_%03d" % i].astype(np.float64)
                  for i, name in enumerate(names)}
        assert len(params) == len(names), "a parameter name given twice"
        return params, arrays["norm_mean"].astype(np.float64), \
            arrays["norm_std"].astype(np.float64)


class ReferenceNetwork:
    """A paper network (``variant``, n = ``depth``, k = ``width``) computed in
    numpy from ``params`` (by name). ``batch_statistics=True`` normalises
    with each call's batch instead of the running averages (what an
    evaluation bug would do; the tests use it to show their power)."""

    def __init__(self, params, variant, depth, width=1, batch_statistics=False):
        self.params, self.used = params, set()
        self.variant, self.depth, self.width = variant, depth, width
        self.batch_statistics = batch_statistics

    def take(self, name, shape):
        value = self.params[name]
        assert value.shape == tuple(shape), (name, value.shape, shape)
        self.used.add(name)
        return value

    def conv(self, x, name, out_channels, size, stride):
        """Cross-correlation with size // 2 zeros on each side, every
        ``stride``-th output (cuDNN's and Torch's SpatialConvolution)."""
        w = self.take(name + ".W", (out_channels, x.shape[1], size, size))
        pad = size // 2
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(2, 3))
        windows = windows[:, :, ::stride, ::stride]
        return np.einsum("ncijuv,ocuv->noij", windows, w, optimize=True)

    def bn_relu(self, x, name):
        channels = (x.shape[1],)
        gamma, beta = self.take(name + ".gamma", channels), self.take(name + ".beta", channels)
        mean, var = self.take(name + ".mean", channels), self.take(name + ".var", channels)
        if self.batch_statistics:
            mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        scale = gamma / np.sqrt(var + BN_EPSILON)
        y = (x - mean[:, None, None]) * scale[:, None, None] + beta[:, None, None]
        return np.maximum(y, 0)

    def unit(self, x, name, out_channels, stride, first):
        """A full pre-activation unit; the very first one reads the stem's
        BN-ReLU ('no_preact' / the stem's activation shared in wide-resnet.lua)."""
        activated = x if first else self.bn_relu(x, name + ".pre.bn")
        if self.variant == "bottleneck":
            planes = out_channels // 4
            # resnet-pre-act.lua: the stride on the first 1x1
            h = self.conv(activated, name + ".conv1", planes, 1, stride)
            h = self.conv(self.bn_relu(h, name + ".conv1.bn"), name + ".conv2", planes, 3, 1)
            h = self.conv(self.bn_relu(h, name + ".conv2.bn"), name + ".conv3", out_channels,
                          1, 1)
        else:  # basic (wide): the stride on the first 3x3; dropout is off at test time
            h = self.conv(activated, name + ".conv1", out_channels, 3, stride)
            h = self.conv(self.bn_relu(h, name + ".conv1.bn"), name + ".conv2", out_channels,
                          3, 1)
        if stride != 1 or x.shape[1] != out_channels:
            shortcut = self.conv(activated, name + ".projection", out_channels, 1, stride)
        else:
            shortcut = x
        return h + shortcut

    def probabilities(self, images, mean, std):
        """Class probabilities of uint8 ``images`` normalised as ``(x - mean) / std``."""
        x = (images.astype(np.float64) - mean) / std
        x = self.bn_relu(self.conv(x, "stem.conv", 16, 3, 1), "stem.bn")
        first = True
        for stage, planes in enumerate(STAGE_PLANES):
            out = planes * (4 if self.variant == "bottleneck" else self.width)
            for index in range(self.depth):
                x = self.unit(x, "stage%d.unit%d" % (stage + 1, index + 1), out,
                              2 if stage > 0 and index == 0 else 1, first)
                first = False
        features = self.bn_relu(x, "head.bn").mean(axis=(2, 3))
        classes = self.params["head.dense.b"].shape[0]
        logits = (features @ self.take("head.dense.W", (features.shape[1], classes))
                  + self.take("head.dense.b", (classes,)))
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def reference_probabilities(path, images, variant, depth, width=1, batch_size=20,
                            batch_statistics=False):
    """The numpy forward pass of the weights file ``path`` on ``images``, in
    batches (only batch statistics depend on them); checks that it used every
    parameter of the file."""
    params, mean, std = read_weights_by_name(path)
    network = ReferenceNetwork(params, variant, depth, width, batch_statistics)
    out = np.concatenate([network.probabilities(images[start:start + batch_size], mean, std)
                          for start in range(0, len(images), batch_size)])
    assert network.used == set(params), sorted(set(params) - network.used)
    return out


def confusion_of(labels, predictions, classes):
    """Rows: true class, columns: predicted class."""
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    return confusion.tolist()


# =============================================================================
# Runs shared across test modules, each made once per session. They are
# read-only: a test that changes a run or its data folder works on a copy.

# The paper recipe shortened to 2 epochs of batch 50 on the tiny CIFAR-10 (200
# training images, 4 steps an epoch): a shortened run, never published.
SHORT_RUN = ["normal", 1, "--epochs", 2, "--batch-size", 50]


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    """``train_nn.py normal 1 --epochs 2 --batch-size 50``, run once: the
    folders, the program's output and the 100 test images. Evaluate it with
    ``test_model.py --run RUN --out SOMEWHERE_ELSE`` (the default report goes
    into the run folder)."""
    root = tmp_path_factory.mktemp("short-run")
    data, run = root / "data", root / "run"
    write_tiny_cifar10(data)
    result = run_cli("train_nn.py", *SHORT_RUN, "--data-dir", data, "--out", run)
    assert result.returncode == 0, result.stderr
    images, labels = make_images(100, 99)  # write_tiny_cifar10's test_batch
    return {"data": data, "run": run, "result": result, "test_images": images,
            "test_labels": labels}


def copy_run(run, target):
    """A copy of a run folder to change."""
    shutil.copytree(str(run), str(target))
    return target


@pytest.fixture(scope="session")
def best_not_last_run(tmp_path_factory):
    """A full run of the seed recipe (a validation split, best-on-validation
    bookkeeping) whose best validation epoch is not its last, made in-process
    through ``train_nn.main``. The recipe itself is shortened for the run (2
    epochs of batch 30, 50 validation images, publishing the final weights),
    so that it is a full-recipe run that publishes; the validation errors the
    loop is given are scripted (10 % after epoch 1, 30 % after epoch 2), so
    that epoch 1 is the best; the test set is evaluated at the last epoch only
    (``--test-every 0``). Everything else is the program's.

    Recorded from outside: the parameters after each checkpoint, those the
    network held during each evaluation made by ``finish`` and after it, and
    every error the loop computed ``(label, error, during finish)``."""
    import train_nn
    root = tmp_path_factory.mktemp("best-not-last")
    data, run = root / "data", root / "run"
    write_tiny_cifar10(data)
    scripted = [10.0, 30.0]
    seen = {"checkpoints": [], "evaluated_in_finish": [], "after_finish": None,
            "errors": [], "validation": [], "finishing": False}
    real_error = train_nn.Trainer.error_percent
    real_checkpoint = train_nn.Trainer.checkpoint
    real_finish = train_nn.Trainer.finish

    def error_percent(trainer, label, images, labels, stop=None):
        error = real_error(trainer, label, images, labels, stop)
        seen["errors"].append((label, error, seen["finishing"]))
        if seen["finishing"]:
            seen["evaluated_in_finish"].append(trainer.net.param_values())
        elif images is trainer.val_x:
            seen["validation"].append(error)
            return scripted[len(seen["validation"]) - 1]
        return error

    def checkpoint(trainer):
        real_checkpoint(trainer)
        seen["checkpoints"].append(trainer.net.param_values())

    def finish(trainer):
        seen["finishing"] = True
        try:
            last = real_finish(trainer)
        finally:
            seen["finishing"] = False
        seen["after_finish"] = trainer.net.param_values()
        return last

    with pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in {"epochs": 2, "batch_size": 30, "val_size": 50,
                           "publish": "final"}.items():
            monkeypatch.setitem(train_nn.RECIPES["seed"], key, value)
        monkeypatch.setattr(train_nn.Trainer, "error_percent", error_percent)
        monkeypatch.setattr(train_nn.Trainer, "checkpoint", checkpoint)
        monkeypatch.setattr(train_nn.Trainer, "finish", finish)
        status = train_nn.main(["normal", "1", "--recipe", "seed", "--test-every", "0",
                                "--data-dir", str(data), "--out", str(run)])
    assert status == 0
    assert len(seen["validation"]) == 2, seen["errors"]
    images, labels = make_images(100, 99)
    return dict(seen, data=data, run=run, test_images=images, test_labels=labels,
                output=(run / "output.log").read_text(),
                published=data / "weights" / "preresnet8" / "seed.npz")


def pytest_configure(config):
    # Theano 1.0.5 uses numpy aliases deprecated since numpy 1.20.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:theano.*")
    config.addinivalue_line("markers", "slow: runs the programs in subprocesses or trains "
                                       "whole runs (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs pygpu and a visible NVIDIA GPU "
                            "(tests/test_gpu.py); skipped with the reason elsewhere")
