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


def write_tiny_cifar10(root, per_batch=40, test_count=100, seed=0):
    folder = os.path.join(str(root), "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for i in range(1, 6):
        write_batch(os.path.join(folder, "data_batch_%d" % i),
                    *make_images(per_batch, seed + i))
    write_batch(os.path.join(folder, "test_batch"), *make_images(test_count, seed + 99))
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


def pytest_configure(config):
    # Theano 1.0.5 uses numpy aliases deprecated since numpy 1.20.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:theano.*")
    config.addinivalue_line("markers", "slow: runs the programs in subprocesses or trains "
                                       "whole runs (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs pygpu and a visible NVIDIA GPU "
                            "(tests/test_gpu.py); skipped with the reason elsewhere")
