"""Smoke run on the real CIFAR-10 images of ../shared/data, when it exists."""
import json
import os
import subprocess
import sys

import pytest

from conftest import PROJECT_DIR, run_cli

# Every test here runs the programs in subprocesses (or trains whole runs).
pytestmark = pytest.mark.slow

BUILDER = os.path.join(PROJECT_DIR, "..", "shared", "data", "build_cifar10.py")


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    if not os.path.isfile(BUILDER):
        pytest.skip("../shared/data is not on this machine")
    pytest.importorskip("PIL")
    root = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, BUILDER, str(root)], check=True, capture_output=True)
    return root


def test_one_epoch_on_2000_real_images_then_test(real_data, tmp_path):
    run = tmp_path / "run"
    trained = run_cli("train_nn.py", "normal", 1, "--epochs", 1, "--limit", 2000,
                      "--data-dir", real_data, "--out", run)
    assert trained.returncode == 0, trained.stderr
    assert "2000 training / 0 validation images" in trained.stdout
    # The rebuilt files are not byte-identical to the official ones: a warning.
    assert "differ from the official release" in trained.stdout
    # a smoke run publishes nothing: its folder is evaluated
    assert "python test_model.py --run %s" % run in trained.stdout
    tested = run_cli("test_model.py", "--run", run, "--data-dir", real_data)
    assert tested.returncode == 0, tested.stderr
    report = json.loads((run / "weights_final-test.json").read_text())
    assert report["count"] == 10000
    # One epoch on 2,000 images already beats chance (90 % error) clearly.
    assert report["error"] < 85.0
    assert "final test error: %.2f%%" % report["error"] in trained.stdout
