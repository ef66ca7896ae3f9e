"""train_nn.py then test_model.py, as a user runs them, on tiny CIFAR files."""
import json
import pickle

import numpy as np
import pytest

import models
import utils
from conftest import (FINE_NAMES, SHORT_RUN, RunsCode, confusion_of, make_images, pairs,
                      read_log, reference_probabilities, run_cli, without_seconds,
                      write_tiny_cifar100)

# Every test here runs the programs in subprocesses (or trains whole runs).
pytestmark = pytest.mark.slow

TRAIN = "train_nn.py"
TEST = "test_model.py"


@pytest.fixture
def trained(short_run):
    """The session's small paper-recipe run (conftest.short_run): normal n=1,
    2 epochs on 200 images. Read-only."""
    return short_run


def test_training_prints_network_and_epochs(trained):
    out = trained["result"].stdout
    assert "PreResNet-8: 77,850 trainable parameters" in out
    assert "recipe paper-preresnet" in out
    epoch_lines = [l for l in out.splitlines() if l.split()[:1] in (["1"], ["2"])]
    assert len(epoch_lines) == 2


def test_run_folder_holds_config_log_curves_and_weights(trained):
    run = trained["run"]
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["epochs"] == 2 and config["recipe"]["batch_size"] == 50
    assert config["recipe"]["lr_milestones"] == [80, 121]
    assert config["source"]["versions"]["theano"] == "1.0.5"
    assert config["source"]["versions"]["theano_flags"]["floatX"] == "float32"
    assert config["network"]["name"] == "preresnet8"
    rows = read_log(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_error", "val_error",
                            "test_error", "seconds"}
    # fb.resnet.torch's 0.1 in epochs 1 and 2, as the steps used it (tests/test_wiring.py
    # checks every step), and errors on the 100 test images: a whole number of
    # images each (57 % may be written 56.99999999999999)
    assert [float(r["lr"]) for r in rows] == [0.1, 0.1]
    for row in rows:
        wrong = float(row["test_error"]) / 100 * len(trained["test_labels"])
        assert wrong == pytest.approx(round(wrong), abs=1e-6), row
    assert rows[0]["val_error"] == ""  # paper recipe: no validation split
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final = utils.read_weights(str(run / "weights_final.npz"))
    assert final["network"]["name"] == "preresnet8"
    assert final["stats"]["kind"] == "channel_mean_std"
    # a shortened recipe (2 epochs of batch 50): nothing published to data/weights/
    assert not (trained["data"] / "weights").exists()
    assert "not published to data/weights/" in trained["result"].stdout
    assert not (run / "weights_best.npz").exists()


def test_test_model_reproduces_the_final_test_error(trained, tmp_path):
    result = run_cli(TEST, "--run", trained["run"], "--data-dir", trained["data"],
                     "--out", tmp_path / "report.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    final_error = float(read_log(trained["run"])[-1]["test_error"])
    assert report["error"] == pytest.approx(final_error, abs=1e-9)
    assert report["count"] == 100
    assert np.sum(report["confusion"]) == 100
    assert len(report["per_class_accuracy"]) == 10
    assert "test error: %.2f %%" % final_error in result.stdout
    assert "confusion matrix" in result.stdout


def test_same_seed_gives_the_same_numbers(trained, tmp_path):
    again = tmp_path / "again"
    result = run_cli(TRAIN, *SHORT_RUN, "--data-dir", trained["data"], "--out", again)
    assert result.returncode == 0, result.stderr
    assert without_seconds(read_log(again)) == without_seconds(read_log(trained["run"]))
    first = utils.read_weights(str(trained["run"] / "weights_final.npz"))["values"]
    second = utils.read_weights(str(again / "weights_final.npz"))["values"]
    for a, b in pairs(first, second):
        np.testing.assert_array_equal(a, b)


def test_seed_recipe_keeps_best_on_validation(tiny_data, tmp_path):
    run = tmp_path / "seed-run"
    result = run_cli(TRAIN, "normal", 1, "--arch", "seed", "--recipe", "seed",
                     "--epochs", 2, "--val-size", 50, "--batch-size", 30,
                     "--test-every", 0, "--data-dir", tiny_data, "--out", run)
    assert result.returncode == 0, result.stderr
    assert "150 training / 50 validation images" in result.stdout
    rows = read_log(run)
    assert all(r["val_error"] != "" for r in rows)
    assert rows[0]["test_error"] == "" and rows[1]["test_error"] != ""  # --test-every 0
    best_epoch = min(rows, key=lambda r: float(r["val_error"]))["epoch"]
    assert "at epoch %s" % best_epoch in result.stdout
    best = utils.read_weights(str(run / "weights_best.npz"))
    assert best["stats"]["kind"] == "pixel_mean"
    # the recipe publishes the best-on-validation weights: test_model.py --run takes them
    tested = run_cli(TEST, "--run", run, "--data-dir", tiny_data)
    assert tested.returncode == 0, tested.stderr
    assert "weights: %s" % (run / "weights_best.npz") in tested.stdout


def test_weights_for_another_network_name_the_first_mismatch(trained):
    result = run_cli(TEST, "wide", 1, 2, "--weights", trained["run"] / "weights_final.npz",
                     "--data-dir", trained["data"])
    assert result.returncode == 1
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "made for preresnet8" in message and "wrn10-2" in message
    assert "stage1.unit1.conv1.W" in message and "(32, 16, 3, 3)" in message


def test_missing_weights_say_how_to_make_them(tiny_data):
    result = run_cli(TEST, "bottleneck", 2, "--data-dir", tiny_data)
    assert result.returncode == 1
    assert "python train_nn.py bottleneck 2" in result.stderr


@pytest.mark.parametrize("script,args,message", [
    (TRAIN, ["resnet", "18"], "invalid choice"),
    (TRAIN, ["normal", "x"], "invalid int value"),
    (TRAIN, ["normal", "0"], "at least 1"),
    (TRAIN, ["normal", "18", "4"], "wide networks only"),
    (TRAIN, ["wide", "2"], "need WIDTH"),
    (TRAIN, ["normal"], "required"),
    (TRAIN, ["normal", "1", "--epochs", "0"], "--epochs"),
    (TRAIN, ["normal", "1", "--dropout", "0.3"], "dropout"),
    (TRAIN, ["--resume", "/nonexistent/run"], "no such folder"),
    (TEST, ["bottleneck", "-1"], "at least 1"),
    (TEST, ["normal", "18", "2"], "wide networks only"),
])
def test_bad_command_lines_get_usage_and_exit_2(script, args, message):
    result = run_cli(script, *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_folder_without_checkpoint_is_a_usage_error(tmp_path):
    result = run_cli(TRAIN, "--resume", tmp_path)
    assert result.returncode == 2
    assert "holds no checkpoint.npz" in result.stderr


def _batch(**changes):
    batch = {"data": np.zeros((40, 3072), np.uint8), "labels": [0] * 40}
    batch.update(changes)
    return pickle.dumps(batch, protocol=2)


BAD_FILES = {
    "truncated": (lambda witness: _batch()[:-100], "truncated"),
    "wrong shape": (lambda witness: _batch(data=np.zeros((40, 32, 32, 3), np.uint8)),
                    "shape (N, 3072)"),
    "wrong dtype": (lambda witness: _batch(data=np.zeros((40, 3072), np.int64)), "uint8"),
    "label out of range": (lambda witness: _batch(labels=[0] * 39 + [12]), "0..9"),
    "runs code": (lambda witness: _batch(data=RunsCode("touch %s" % witness)), "refused"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_data_file_stops_before_anything_is_written(tiny_data, tmp_path, case):
    make, words = BAD_FILES[case]
    witness = tmp_path / "pwned"
    with open(tiny_data / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        f.write(make(witness))
    run = tmp_path / "never"
    result = run_cli(TRAIN, "normal", 1, "--epochs", 1, "--data-dir", tiny_data, "--out", run)
    assert result.returncode == 1
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    line = [l for l in result.stderr.splitlines() if l.startswith("error:")][0]
    assert "data_batch_2" in line and words in line
    assert not run.exists() and not witness.exists()
    assert not (tiny_data / "weights").exists()


# -- CIFAR-100 -------------------------------------------------------------------


def test_cifar100_trains_and_tests_end_to_end(tmp_path):
    """train_nn.py and test_model.py --dataset cifar100 on a tiny CIFAR-100 in
    the official layout (train, test, meta; fine and coarse labels): 100
    outputs, the fine labels and their names, and an evaluation that is the
    numpy forward pass's."""
    data, run = tmp_path / "data", tmp_path / "run"
    write_tiny_cifar100(data)  # 300 training, 100 test images
    trained = run_cli(TRAIN, "normal", 1, "--dataset", "cifar100", "--epochs", 2,
                      "--batch-size", 50, "--data-dir", data, "--out", run)
    assert trained.returncode == 0, trained.stderr
    # CIFAR-10's PreResNet-8 (77,850) with a classifier of 100: + 90 x (64 + 1)
    assert "PreResNet-8: 83,700 trainable parameters" in trained.stdout
    assert "300 training / 0 validation images" in trained.stdout
    config = json.loads((run / "config.json").read_text())
    assert (config["network"]["name"], config["network"]["dataset"],
            config["network"]["num_classes"]) == ("preresnet8-cifar100", "cifar100", 100)
    assert config["source"]["data"]["folder"] == str(data / "cifar-100-python")
    rows = read_log(run)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    final = [line for line in trained.stdout.splitlines() if line.startswith("final test error")]
    assert len(final) == 1 and "paper" not in final[0]  # the papers have no PreResNet-8

    report_path = tmp_path / "report.json"
    tested = run_cli(TEST, "--run", run, "--data-dir", data, "--batch-size", 30,
                     "--out", report_path)
    assert tested.returncode == 0, tested.stderr
    assert "CIFAR-100 test set (100 images)" in tested.stdout
    assert "confusion matrix" not in tested.stdout  # 100 classes: the JSON holds it
    report = json.loads(report_path.read_text())
    images, labels = make_images(100, 99, num_classes=100)  # the tiny test file
    predicted = reference_probabilities(run / "weights_final.npz", images, "normal",
                                        1).argmax(axis=1)
    assert report["label_names"] == FINE_NAMES
    assert list(report["per_class_accuracy"]) == FINE_NAMES
    assert report["confusion"] == confusion_of(labels, predicted, 100)  # rows: fine labels
    error = 100.0 * float(np.mean(predicted != labels))
    assert report["error"] == pytest.approx(error, abs=1e-9)
    assert float(rows[-1]["test_error"]) == pytest.approx(error, abs=1e-9)


def test_cifar100_networks_are_compared_with_the_papers_cifar100_numbers(tmp_path):
    """test_model.py prints the paper's CIFAR-100 error beside a CIFAR-100
    network's: Zagoruyko & Komodakis 2016 (arXiv 1605.07146), WRN-16-4: 24.03 %
    on CIFAR-100 (5.02 % on CIFAR-10); He et al. 2016 (arXiv 1603.05027),
    pre-activation ResNet-164: 24.33 % on CIFAR-100 (5.46 % on CIFAR-10)."""
    write_tiny_cifar100(tmp_path / "data")
    info = models.network_info("wide", 2, 4, "paper", "cifar100")
    net = models.Network(info)
    images, _ = make_images(100, 1, num_classes=100)
    path = tmp_path / "wrn16-4-cifar100.npz"
    models.save_weights(str(path), net, utils.normalisation_stats("channel_mean_std", images))
    tested = run_cli(TEST, "--weights", path, "--data-dir", tmp_path / "data",
                     "--out", tmp_path / "report.json")
    assert tested.returncode == 0, tested.stderr
    assert "WRN-16-4 on the CIFAR-100 test set" in tested.stdout
    assert "(paper: 24.03 %)" in tested.stdout
    assert json.loads((tmp_path / "report.json").read_text())["paper_error"] == 24.03
    for network, (cifar10, cifar100) in {("bottleneck", 18, 1): (5.46, 24.33),
                                         ("wide", 2, 4): (5.02, 24.03)}.items():
        assert [models.paper_error(models.network_info(*network, "paper", dataset), 0.0)
                for dataset in ("cifar10", "cifar100")] == [cifar10, cifar100]
