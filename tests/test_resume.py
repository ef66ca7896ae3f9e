"""Long runs survive interruption and bad input: exact resume, safe files."""
import gc
import gzip
import json
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest

import models
import train_nn
import utils
from conftest import (PROJECT_DIR, SHORT_RUN, RunsCode, copy_run, pairs, read_log, run_cli,
                      without_seconds, write_tiny_cifar10)
from utils import UserError

# Every test here runs the programs in subprocesses (or trains whole runs).
pytestmark = pytest.mark.slow

TRAIN = "train_nn.py"
TEST = "test_model.py"

INTERRUPT = os.path.join("tests", "interrupt_run.py")


def interrupted_run(args, at, signals="SIGINT"):
    """train_nn.py with ``args``, sent ``signals`` (comma-separated) right
    after its ``at``-th step."""
    return subprocess.run([sys.executable, INTERRUPT, str(at), signals] +
                          [str(a) for a in args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=900)


def checkpoint_progress(run):
    return json.loads(str(utils.read_npz(str(run / "checkpoint.npz"))["progress"]))


def final_weights(run):
    return utils.read_weights(str(run / "weights_final.npz"))["values"]


def assert_same_run(run, reference):
    assert without_seconds(read_log(run)) == without_seconds(read_log(reference))
    for a, b in pairs(final_weights(run), final_weights(reference)):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-data")
    write_tiny_cifar10(root)
    return root


# Wide, with dropout (whose random-stream state must survive), the WRN recipe
# (momentum restarts at each milestone) with milestones inside the short run.
WIDE = ["wide", 1, 1, "--dropout", 0.3, "--epochs", 3, "--batch-size", 50,
        "--lr-milestones", "1,2"]


@pytest.fixture(scope="module")
def wide_reference(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("wide") / "reference"
    # three threads: a count no other run here uses, whatever the machine's cores
    result = run_cli(TRAIN, *WIDE, "--data-dir", data, "--out", run,
                     env=dict(os.environ, OMP_NUM_THREADS="3"))
    assert result.returncode == 0, result.stderr
    return run


# mid-epoch 2, resumed with one thread (the reference ran with three, the
# interrupted part with the default: the C ops give the same bits for any
# thread count); exactly at the end of epoch 2
@pytest.mark.parametrize("at,threads", [(6, "1"), (8, None)])
def test_run_stopped_by_sigint_resumes_bit_for_bit(data, wide_reference, tmp_path, at, threads):
    run = tmp_path / "run"
    stopped = interrupted_run(WIDE + ["--data-dir", data, "--out", run], at)
    assert stopped.returncode == 130, stopped.stderr
    assert "resume with" in stopped.stdout and "--resume %s" % run in stopped.stdout
    progress = json.loads(str(utils.read_npz(str(run / "checkpoint.npz"))["progress"]))
    assert progress["iteration"] == at
    assert not (run / "weights_final.npz").exists()
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = threads
    resumed = run_cli(TRAIN, "--resume", run, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_same_run(run, wide_reference)


def test_sigterm_from_outside_saves_and_resumes(short_run, tmp_path):
    """SIGTERM sent by another process while the run waits after its fifth
    step (the first of epoch 2), so that it lands mid-run on any machine; the
    run saves, exits with 143 and, resumed, ends as the shared run did."""
    reference, run = short_run["run"], tmp_path / "run"
    process = subprocess.Popen([sys.executable, INTERRUPT, "5", "wait"] +
                               [str(a) for a in SHORT_RUN] +
                               ["--data-dir", str(short_run["data"]), "--out", str(run)],
                               cwd=PROJECT_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if line.startswith("waiting after step 5"):
            break
    process.send_signal(signal.SIGTERM)
    process.stdin.write("go on\n")
    process.stdin.flush()
    out, err = process.communicate(timeout=600)
    assert process.returncode == 143, err
    assert "SIGTERM received" in err
    progress = checkpoint_progress(run)
    assert (progress["epoch"], progress["iteration_in_epoch"]) == (1, 1)
    resumed = run_cli(TRAIN, "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, reference)

    # A finished run: nothing to do, nothing touched.
    before = (run / "checkpoint.npz").stat().st_mtime_ns
    again = run_cli(TRAIN, "--resume", run)
    assert again.returncode == 0
    assert "already finished all 2 epochs; nothing to do" in again.stdout
    assert (run / "checkpoint.npz").stat().st_mtime_ns == before


def test_a_second_ctrl_c_stops_at_once_and_writes_nothing(short_run, tmp_path):
    """Two SIGINTs after the sixth step (in epoch 2): exit 130 without saving;
    the checkpoint is still epoch 1's, and resuming from it ends as the
    shared run did."""
    run = tmp_path / "run"
    stopped = interrupted_run(SHORT_RUN + ["--data-dir", short_run["data"], "--out", run], 6,
                              "SIGINT,SIGINT")
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "interrupted; the last checkpoint (if any) is intact" in stopped.stderr
    assert "resume with" not in stopped.stdout
    progress = checkpoint_progress(run)
    assert (progress["epoch"], progress["iteration_in_epoch"], progress["iteration"]) == (1, 0, 4)
    assert len(read_log(run)) == 1
    assert not (run / "weights_final.npz").exists()
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    resumed = run_cli(TRAIN, "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, short_run["run"])


def damage_checkpoint(run, change):
    """Rewrite the run's checkpoint with ``change(arrays)`` applied, set back
    to the end of epoch 1 so that there is something to resume."""
    path = run / "checkpoint.npz"
    with np.load(str(path), allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    progress = json.loads(str(arrays["progress"]))
    progress.update(epoch=1, iteration=4, history=progress["history"][:1])
    arrays["progress"] = np.array(json.dumps(progress))
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path.read_bytes()


def without_last(group):
    def change(arrays):
        del arrays[max(key for key in arrays if key.startswith(group + "_"))]
    return change


CHECKPOINT_DAMAGE = {
    "optimiser-array-missing": (without_last("optimizer"), "optimizer"),
    "random-array-too-many": (
        lambda arrays: arrays.update(random_000=np.zeros((4, 6), np.int32)), "random"),
    "optimiser-array-of-another-shape": (
        lambda arrays: arrays.update(optimizer_000=np.zeros((3, 3, 3, 3), np.float32)),
        "optimizer array 0"),
    "optimiser-array-in-float64": (
        lambda arrays: arrays.update(optimizer_000=arrays["optimizer_000"].astype(np.float64)),
        "optimizer array 0"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_DAMAGE))
def test_resume_refuses_a_checkpoint_whose_optimiser_or_random_arrays_do_not_fit(
        short_run, tmp_path, case):
    """One line naming the checkpoint and the group, exit 1, before any step
    (never Theano's traceback at the first step); the checkpoint stays as it
    was and no weights are written."""
    change, words = CHECKPOINT_DAMAGE[case]
    run = copy_run(short_run["run"], tmp_path / "run")
    os.remove(run / "weights_final.npz")
    damaged = damage_checkpoint(run, change)
    result = run_cli(TRAIN, "--resume", run)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert str(run / "checkpoint.npz") in errors[0] and words in errors[0]
    assert "another program version" in errors[0]
    assert (run / "checkpoint.npz").read_bytes() == damaged
    assert not (run / "weights_final.npz").exists()


def test_resume_rejects_other_settings_and_other_networks(short_run):
    run = short_run["run"]
    result = run_cli(TRAIN, "--resume", run, "--lr", "0.5")
    assert result.returncode == 2 and "--resume continues a run" in result.stderr
    result = run_cli(TRAIN, "bottleneck", 1, "--resume", run)
    assert result.returncode == 2 and "PreResNet-8" in result.stderr
    result = run_cli(TRAIN, "normal", 1, "--epochs", 1, "--data-dir", short_run["data"],
                     "--out", run)
    assert result.returncode == 2 and "already holds a run" in result.stderr


def test_non_finite_loss_in_the_first_epoch_stops_before_any_checkpoint(data, tmp_path,
                                                                       monkeypatch, capsys):
    """--lr 1e30 blows the weights up at the first step: the run stops at the
    first non-finite loss (found from outside, step by step), says that no
    checkpoint was written, exits with 1 and leaves no checkpoint, log or
    weights (its settings and output stay, for a look)."""
    losses = []
    real_compile = train_nn.compile_training_step

    def compile_recording_step(net, recipe):
        step, learning_rate, buffers = real_compile(net, recipe)

        def recording_step(images, labels):
            loss, errors = step(images, labels)
            losses.append(float(loss))
            return loss, errors
        return recording_step, learning_rate, buffers

    monkeypatch.setattr(train_nn, "compile_training_step", compile_recording_step)
    run = tmp_path / "run"
    status = train_nn.main(["normal", "1", "--epochs", "2", "--batch-size", "50", "--lr", "1e30",
                            "--data-dir", str(data), "--out", str(run)])
    assert status == 1
    first_bad = next(i for i, loss in enumerate(losses) if not np.isfinite(loss))
    assert first_bad < 4 and len(losses) == first_bad + 1  # epoch 1: stopped there
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "loss became %s at epoch 1, iteration %d" % (losses[first_bad], first_bad) in errors[0]
    assert "no checkpoint was written yet" in errors[0]
    # what a failed start leaves: the same command may start the run again
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "output.log"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    # lr 0.1 in epoch 1, then 1e29: the weights blow up in epoch 2.
    result = run_cli(TRAIN, "normal", 1, "--epochs", 3, "--batch-size", 50,
                     "--lr-milestones", "1", "--lr-factor", "1e30",
                     "--data-dir", data, "--out", run)
    assert result.returncode == 1
    message = [l for l in result.stderr.splitlines() if l.startswith("error:")][0]
    assert "loss became nan at epoch 2, iteration" in message
    assert "checkpoint of epoch 1" in message
    progress = json.loads(str(utils.read_npz(str(run / "checkpoint.npz"))["progress"]))
    assert progress["epoch"] == 1 and len(progress["history"]) == 1
    assert not (run / "weights_final.npz").exists()


def test_failed_save_keeps_the_previous_checkpoint_and_says_so(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    config = {"network": models.network_info("normal", 1, 1, "paper", "cifar10"),
              "recipe": train_nn.resolve_recipe("paper", "normal",
                                                {"epochs": 3, "batch_size": 100}),
              "seed": 0, "limit": 0, "data_dir": str(data), "test_every": 1}
    os.makedirs(run)
    saves, unraisable = [], []
    real_savez = utils.savez

    class FullDisk:
        """A file on a disk that fills up after 4 KB."""

        def __init__(self, file):
            self.file, self.written = file, 0

        def write(self, data):
            if self.written + len(data) > 4096:
                raise OSError(28, "No space left on device")
            self.written += len(data)
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

    def savez_filling_the_disk(file, arrays):
        if "progress" in arrays:
            saves.append(1)
            if len(saves) == 2:
                file = FullDisk(file)
        return real_savez(file, arrays)

    monkeypatch.setattr(utils, "savez", savez_filling_the_disk)
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    dataset = utils.load_dataset("cifar10", str(data), log=lambda *a: None)
    with pytest.raises(UserError) as error:
        train_nn.train(config, dataset, str(run), log=lambda *a: None)
    gc.collect()
    assert unraisable == []  # nothing left half-open to fail again ("Exception ignored")
    message = str(error.value)
    assert "No space left on device" in message and "previous version is intact" in message
    assert "--resume %s" % run in message
    monkeypatch.undo()
    progress = json.loads(str(utils.read_npz(str(run / "checkpoint.npz"))["progress"]))
    assert progress["epoch"] == 1
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []


# -- weights files ---------------------------------------------------------------


def test_pklz_that_would_run_code_is_refused_and_nothing_runs(data, tmp_path):
    witness = tmp_path / "pwned"
    evil = tmp_path / "evil.pklz"
    with gzip.open(evil, "wb") as f:
        pickle.dump([np.zeros(3, np.float32), RunsCode("touch %s" % witness)], f, protocol=2)
    result = run_cli(TEST, "normal", 1, "--arch", "seed", "--weights", evil, "--data-dir", data)
    assert result.returncode == 1
    assert "evil.pklz" in result.stderr and "refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert not witness.exists()


def test_checkpoint_or_weights_holding_pickles_are_refused(data, tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, format=np.array(["preresnet-weights-1", RunsCode("true")], dtype=object))
    result = run_cli(TEST, "normal", 1, "--weights", evil, "--data-dir", data)
    assert result.returncode == 1 and "pickled objects" in result.stderr
    run = tmp_path / "run"
    run.mkdir()
    os.rename(evil, run / "checkpoint.npz")
    result = run_cli(TRAIN, "--resume", run)
    assert result.returncode == 2 and "pickled objects" in result.stderr
