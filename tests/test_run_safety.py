"""A long run fails before it starts, never at its end; nothing of a run is
overwritten; every damaged file and every wait is one line of ours (issue 23).

The tests that start the programs are marked slow; the checks of the plots,
the rounding and the file reading run in-process in the quick loop.
"""
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano before the lock test imports it)
import utils
from conftest import PROJECT_DIR, read_log, run_cli, write_tiny_cifar10

TRAIN = "train_nn.py"
TEST = "test_model.py"
FULL = os.path.join("tests", "full_recipe_run.py")  # paper recipes of 1 epoch: they publish
INTERRUPT = os.path.join("tests", "interrupt_run.py")
SHORT = ["normal", 1, "--epochs", 2, "--batch-size", 50]
slow = pytest.mark.slow


def one_line_error(result, code=1):
    """The program failed with ``code``; stderr is one 'error:' line and
    nothing else (no traceback, no warning of Theano's)."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:],
                                       result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety-data")
    write_tiny_cifar10(root)  # 200 training images, 100 test images
    return root


@pytest.fixture(scope="module")
def short_run(data, tmp_path_factory):
    """A shortened paper-recipe run (2 epochs of batch 50) with --data-dir."""
    run = tmp_path_factory.mktemp("short") / "run"
    result = run_cli(TRAIN, *SHORT, "--data-dir", data, "--out", run)
    assert result.returncode == 0, result.stderr
    return run, result


def copy_of(run, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


# -- 1. every place the run writes is checked before compiling -----------------------


@slow
def test_a_publish_folder_that_cannot_be_made_stops_the_run_before_compiling(data,
                                                                              tmp_path):
    own = tmp_path / "data"
    shutil.copytree(data, own, ignore=shutil.ignore_patterns("weights"))
    (own / "weights").write_text("a file where the publish folder should be\n")
    run = tmp_path / "run"
    result = run_cli(FULL, 1, 100, "normal", 1, "--data-dir", own, "--out", run)
    line = one_line_error(result)
    assert "%s is a file, not a folder" % (own / "weights") in line, line
    assert "publish" in line and "--data-dir" in line, line
    assert "compiling" not in result.stdout
    assert not run.exists()  # a failed start leaves nothing


def _nobody_can_run_the_project():
    """Root, setpriv, and a checkout and Python that user nobody can read (a
    clone in a private temporary folder, a Python under /root cannot)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            sys.executable, "-c", "import distutils.sysconfig, os, sys; "
                            "sys.exit(not os.access(%r, os.R_OK))"
                            % os.path.join(PROJECT_DIR, "train_nn.py")], capture_output=True)
    return probe.returncode == 0


@slow
@pytest.mark.skipif(not _nobody_can_run_the_project(),
                    reason="needs root, setpriv and a checkout user nobody can read")
def test_a_read_only_data_folder_stops_a_full_run_before_compiling(data):
    """As a user (nobody) whose dataset folder belongs to someone else: the
    run folder can be written, the publish folder cannot."""
    root = tempfile.mkdtemp(prefix="safety-nobody-")
    try:
        os.chmod(root, 0o755)
        shared = os.path.join(root, "shared-data")  # root's, read-only for nobody
        shutil.copytree(str(data), shared, ignore=shutil.ignore_patterns("weights"))
        home = os.path.join(root, "home")
        os.mkdir(home)
        shutil.chown(home, "nobody", "nogroup")
        run = os.path.join(home, "run")
        env = dict(os.environ, HOME=home)
        env.pop("THEANO_FLAGS", None)  # nobody's own compile folder, under HOME
        result = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             sys.executable, FULL, "1", "100", "normal", "1", "--data-dir", shared,
             "--out", run], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
            timeout=900)
        line = one_line_error(result)
        assert "Permission denied" in line and os.path.join(shared, "weights") in line, line
        assert "compiling" not in result.stdout and not os.path.exists(run)
    finally:
        shutil.rmtree(root)


@slow
def test_a_run_whose_publish_folder_breaks_meanwhile_says_how_to_publish_it(data,
                                                                             tmp_path):
    own = tmp_path / "data"
    shutil.copytree(data, own, ignore=shutil.ignore_patterns("weights"))
    run = tmp_path / "run"
    blocker = own / "weights"
    result = run_cli(FULL, 1, 100, "normal", 1, "--data-dir", own, "--out", run,
                     env=dict(os.environ, FILE_AT_THE_END=str(blocker)))
    line = one_line_error(result)
    command = "python train_nn.py --resume %s" % run
    assert "could not publish" in line and command in line, line
    assert (run / "weights_final.npz").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["published"] is None
    assert "could not" in summary["not_published"]
    # the user clears the way and runs the command the message named
    blocker.unlink()
    done = run_cli(*shlex.split(command)[1:])
    assert done.returncode == 0, done.stderr
    target = own / "weights" / "preresnet8" / "paper-preresnet.npz"
    assert target.read_bytes() == (run / "weights_final.npz").read_bytes()
    assert "published" in done.stdout and str(target) in done.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["published"] == str(target) and summary["not_published"] is None
    again = run_cli(TRAIN, "--resume", run)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_a_disk_without_room_for_the_runs_files_stops_it_before_compiling(tmp_path,
                                                                          monkeypatch):
    import theano
    import train_nn

    class Trainer:  # what check_places_to_write reads of one: 1 MB of trainable weights
        run_dir, config = str(tmp_path / "run"), {"recipe": {"val_size": 0}}
        net = type("Net", (), {"params": [theano.shared(np.zeros(250000, np.float32))],
                               "trainable_count": 250000})

        def run_record(self):
            return {"full_recipe": False}
    # a checkpoint of 2 MB (weights and momentum) twice, the final weights, 256 KiB of logs
    monkeypatch.setattr(utils, "free_bytes", lambda folder: (5 * 10 ** 6, 1))
    with pytest.raises(utils.UserError) as error:
        train_nn.check_places_to_write(Trainer(), resume=False)
    assert str(error.value) == (
        "the disk holding %s has 5.0 MB free; this run writes up to 5.3 MB there (its "
        "checkpoint, twice while it is replaced, and its weights): free some space, or "
        "choose another --out" % (tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # tried, and left as it was
    monkeypatch.setattr(utils, "free_bytes", lambda folder: (5.3 * 10 ** 6, 1))
    train_nn.check_places_to_write(Trainer(), resume=False)


@slow
def test_a_small_disk_stops_the_run_before_compiling(data, tmp_path):
    """A 1 MB file system (tmpfs, mounted where root may) for the run folder:
    PreResNet-8's checkpoint (0.6 MB) twice and its weights need 1.8 MB (on
    1c2cf27 the run trained and failed at its end: its second checkpoint did
    not fit)."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        result = run_cli(TRAIN, *SHORT, "--data-dir", data, "--out", small / "run")
        line = one_line_error(result)
        assert line.startswith("error: the disk holding %s has 1.0 MB free; this run writes "
                               "up to 1.8 MB there" % (small / "run")), line
        assert "compiling" not in result.stdout and not (small / "run").exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)


# -- 2. a folder holding a run's files is never reused ---------------------------------


@slow
def test_a_folder_holding_a_finished_runs_files_is_refused_naming_them(short_run, data,
                                                                       tmp_path):
    run = tmp_path / "finished"
    run.mkdir()  # a finished run after deleting its checkpoint (and more) to save space
    for name in ("config.json", "log.csv", "weights_final.npz"):
        shutil.copy(short_run[0] / name, run / name)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert set(before) == {"config.json", "log.csv", "weights_final.npz"}
    result = run_cli(TRAIN, *SHORT, "--data-dir", data, "--out", run)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("usage:") and lines[-1].startswith("error: "), lines
    assert len([l for l in lines if not l.startswith(" ")]) == 2, lines  # usage, error
    assert "config.json, log.csv, weights_final.npz" in lines[-1], lines
    assert "another --out" in lines[-1]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


# -- 3. test_model.py --run evaluates on the run's own data folder --------------------


@slow
@pytest.mark.parametrize("given", ["--run", "--weights"])
def test_test_model_uses_the_data_folder_the_run_used(given, short_run, tmp_path):
    """--run RUN and --weights RUN/weights_final.npz both evaluate on the
    run's own data folder (config.json's), and find the run's final error."""
    run, trained = short_run
    target = run if given == "--run" else run / "weights_final.npz"
    result = run_cli(TEST, given, target, "--out", tmp_path / "report.json", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((run / "config.json").read_text())["data_dir"]
    assert "data: %s (the run's, from its checkpoint)" % recorded in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["data"]["folder"] == os.path.join(recorded, "cifar-10-batches-py")
    final = float(read_log(run)[-1]["test_error"])
    assert report["error"] == pytest.approx(final, abs=1e-9)


@slow
def test_test_model_run_names_a_data_folder_that_has_gone(short_run, tmp_path):
    run = copy_of(short_run[0], tmp_path)
    moved = tmp_path / "gone"
    config = json.loads((run / "config.json").read_text())
    config["data_dir"] = str(moved)
    (run / "config.json").write_text(json.dumps(config))
    checkpoint = run / "checkpoint.npz"
    arrays = utils.read_npz(str(checkpoint))
    record = json.loads(str(arrays["config"]))
    record["data_dir"] = str(moved)
    arrays["config"] = np.array(json.dumps(record))
    utils.atomic_write(str(checkpoint), lambda f: utils.savez(f, arrays))
    line = one_line_error(run_cli(TEST, "--run", run))
    assert "%s, the data folder %s used, no longer exists" % (moved, run) in line, line
    assert "--data-dir" in line


# -- 4. damaged files are one line each -----------------------------------------------


def flip_bytes(path, count=8):
    """Invert ``count`` bytes in the middle of the largest array's data.
    (Not the file's middle: that may fall in a member's local header, whose
    date, sizes and extra field Python's zipfile ignores, so the arrays read
    back intact and nothing is damaged; where depends on the lengths of the
    paths the run recorded.)"""
    import struct
    import zipfile
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(str(path)) as archive:
        largest = max(archive.infolist(), key=lambda i: i.compress_size)
    name_length, extra_length = struct.unpack(
        "<HH", raw[largest.header_offset + 26:largest.header_offset + 30])
    data = largest.header_offset + 30 + name_length + extra_length
    start = data + largest.compress_size // 2
    raw[start:start + count] = bytes(b ^ 0xFF for b in raw[start:start + count])
    path.write_bytes(bytes(raw))


def truncate(path, keep=0.6):
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])


@slow
@pytest.mark.parametrize("harm,word", [(flip_bytes, "damaged"), (truncate, "truncated")])
def test_a_damaged_weights_file_is_one_line(short_run, tmp_path, harm, word):
    weights = tmp_path / "weights.npz"
    shutil.copy(short_run[0] / "weights_final.npz", weights)
    harm(weights)
    line = one_line_error(run_cli(TEST, "--weights", weights))
    assert line.startswith("error: %s is %s" % (weights, word)), line
    assert "copy it again" in line, line


@slow
@pytest.mark.parametrize("harm,word", [(flip_bytes, "damaged"), (truncate, "truncated")])
def test_a_damaged_checkpoint_is_one_line_saying_nothing_older_remains(short_run, data,
                                                                       tmp_path, harm, word):
    run = copy_of(short_run[0], tmp_path)
    (run / "weights_final.npz").unlink()  # an unfinished run: its checkpoint is all
    harm(run / "checkpoint.npz")
    line = one_line_error(run_cli(TRAIN, "--resume", run))
    assert line.startswith("error: %s is %s" % (run / "checkpoint.npz", word)), line
    assert "no older checkpoint remains" in line, line
    command = " ".join(["python", "train_nn.py"] + [str(a) for a in SHORT]
                       + ["--data-dir", str(data), "--out", "NEW_FOLDER"])
    assert line.endswith("start the run again in another folder: %s" % command), line
    line = one_line_error(run_cli(TEST, "--run", run))
    assert line.startswith("error: %s is %s" % (run / "checkpoint.npz", word)), line


def test_read_npz_tells_damaged_from_truncated_from_foreign(tmp_path):
    path = tmp_path / "w.npz"
    with open(path, "wb") as f:
        utils.savez(f, {"a": np.arange(20000, dtype=np.float32)})
    good = path.read_bytes()
    flip_bytes(path)
    with pytest.raises(utils.DamagedFile, match="is damaged"):
        utils.read_npz(str(path))
    path.write_bytes(good[:len(good) // 2])
    with pytest.raises(utils.DamagedFile, match="is truncated"):
        utils.read_npz(str(path))
    path.write_bytes(b"epoch,lr\n1,0.1\n")
    with pytest.raises(utils.UserError, match="not an .npz file") as error:
        utils.read_npz(str(path))
    assert not isinstance(error.value, utils.DamagedFile)


# -- 5. Ctrl-C while compiling: the advice printed works as printed -----------------


@slow
@pytest.mark.parametrize("signame,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_while_compiling_says_to_start_again_and_that_command_works(data, tmp_path,
                                                                           signame, code):
    run = tmp_path / "run"
    args = ["normal", "1", "--epochs", "1", "--batch-size", "100", "--data-dir", str(data),
            "--out", str(run)]
    stopped = subprocess.run([sys.executable, INTERRUPT, "0", signame] + args,
                             cwd=PROJECT_DIR, capture_output=True, text=True, timeout=900)
    assert stopped.returncode == code, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    advice = [l for l in stopped.stderr.splitlines() if "start again" in l]
    assert len(advice) == 1, stopped.stderr
    command = "python train_nn.py " + " ".join(shlex.quote(a) for a in args)
    assert advice[0].endswith("start again with the same command: %s" % command), advice
    assert "while compiling" in advice[0] and signame in advice[0]
    again = run_cli(*shlex.split(command)[1:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run / "weights_final.npz").is_file()


# -- 6. Theano's compile lock: one line of ours while waiting ---------------------------


@slow
def test_waiting_for_the_compile_lock_is_one_line_naming_the_holder(short_run, tmp_path):
    import theano
    cache = tmp_path / "cache"
    lock_dir = cache / os.path.basename(theano.config.compiledir) / "lock_dir"
    lock_dir.mkdir(parents=True)
    cache.chmod(0o700)
    holder = subprocess.Popen(["sleep", "600"])
    try:
        (lock_dir / "lock").write_text("%d_0123456789_%s\n" % (holder.pid,
                                                               socket.gethostname()))
        flags = "base_compiledir=%s,compile.wait=1" % cache
        evaluation = subprocess.Popen(
            [sys.executable, TEST, "--run", str(short_run[0])], cwd=PROJECT_DIR,
            env=dict(os.environ, THEANO_FLAGS=flags), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        try:
            lines, deadline = [], time.time() + 120
            while time.time() < deadline:  # a second wait for the lock
                line = evaluation.stderr.readline()
                if not line:
                    break
                lines.append(line.rstrip("\n"))
                if len(lines) >= 2 or "compile lock" in line or "lock_dir" in line:
                    time.sleep(4)  # long enough for Theano to say it again
                    break
        finally:
            evaluation.kill()
            rest = evaluation.communicate(timeout=60)[1]
        lines += rest.splitlines()
    finally:
        holder.kill()
        holder.wait()
    ours = [l for l in lines if "compile lock" in l]
    assert len(ours) == 1, lines
    assert "process %d (sleep 600)" % holder.pid in ours[0], ours
    assert re.search(r"since \d\d:\d\d:\d\d", ours[0]), ours
    assert not [l for l in lines if "theano.gof.compilelock" in l or "delete" in l], lines


# -- 7. no C++ compiler: only our line --------------------------------------------------


@slow
@pytest.mark.parametrize("program", [TRAIN, TEST])
def test_no_compiler_on_the_path_is_only_our_line(data, tmp_path, program):
    empty = tmp_path / "bin"
    empty.mkdir()
    args = SHORT if program == TRAIN else ["normal", 1]
    result = run_cli(program, *args, "--data-dir", data, "--out", tmp_path / "run",
                     env=dict(os.environ, PATH=str(empty)))
    line = one_line_error(result)
    assert "g++" in line and "apt-get install g++" in line, line
    assert not (tmp_path / "run").exists()


# -- 8. --limit above the data's size: the whole set, as a full run ---------------------


@slow
def test_a_limit_above_the_training_set_trains_on_all_and_is_a_full_run(data, tmp_path):
    own = tmp_path / "data"
    shutil.copytree(data, own)
    run = tmp_path / "run"
    result = run_cli(FULL, 1, 100, "normal", 1, "--limit", 500, "--data-dir", own,
                     "--out", run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("note: --limit 500 is more than the 200 training images: training on all of "
            "them, as without --limit" in result.stdout), result.stdout
    assert "200 training / 0 validation images" in result.stdout
    assert (own / "weights" / "preresnet8" / "paper-preresnet.npz").is_file()
    assert json.loads((run / "config.json").read_text())["limit"] == 0


# -- 9. the run folder records how the run ended; log.csv holds measured digits ---------


def significant_digits(text):
    digits = text.replace("-", "").replace(".", "").lstrip("0")
    return len(digits)


def decimals(text):
    return len(text.split(".")[1]) if "." in text else 0


@slow
def test_log_csv_holds_what_was_measured_and_summary_how_the_run_ended(short_run):
    run, result = short_run
    rows = read_log(run)
    for row in rows:
        assert decimals(row["train_error"]) <= 1, row  # 200 images: steps of 0.5 %
        assert decimals(row["test_error"]) == 0 or row["test_error"].endswith(".0"), row
        assert significant_digits(row["train_loss"]) <= 7, row  # a float32 loss
        assert significant_digits(row["lr"]) <= 10, row
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 2
    assert summary["final"]["test_error"] == float(rows[-1]["test_error"])
    assert summary["final"]["epoch"] == 2 and summary["best"] is None
    assert summary["training_seconds"] == pytest.approx(
        sum(float(r["seconds"]) for r in rows), abs=0.05)
    assert summary["ended"] >= summary["started"] and summary["wall_seconds"] > 0
    assert summary["weights"] == str(run / "weights_final.npz")
    assert summary["published"] is None and "shortened" in summary["not_published"]
    assert "summary: %s" % (run / "summary.json") in result.stdout


@slow
def test_a_stopped_run_records_where_it_stopped(data, tmp_path):
    run = tmp_path / "run"
    stopped = subprocess.run([sys.executable, INTERRUPT, "3", "SIGINT"] + [str(a) for a in SHORT]
                             + ["--data-dir", str(data), "--out", str(run)], cwd=PROJECT_DIR,
                             capture_output=True, text=True, timeout=900)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["how"] == "SIGINT at epoch 1, iteration 3"
    assert summary["epochs_done"] == 0 and summary["final"] is None


def test_percent_is_rounded_to_the_resolution_of_its_count():
    assert utils.percent(7918, 10000) == 79.18  # 100 * 7918 / 10000 = 79.17999999999999
    assert repr(utils.percent(7918, 10000)) == "79.18"
    assert utils.percent(1, 3) == 33.0  # 3 images: steps of 33.3 %: whole per cents
    assert utils.percent(2, 45000) == 0.004  # steps of 0.0022 %: 3 decimals tell them apart
    counts = [utils.percent(k, 45000) for k in range(45001)]
    assert len(set(counts)) == 45001


# -- 10. curves.png -----------------------------------------------------------------------


def history(epochs, val=False):
    rng = np.random.default_rng(0)
    return [{"epoch": e, "lr": 0.1, "train_loss": 2.0 / e, "train_error": 60.0 / e ** 0.5,
             "val_error": 70.0 / e ** 0.4 if val else None,
             "test_error": 70.0 / e ** 0.4 + rng.uniform(0, 2), "seconds": 1.0}
            for e in range(1, epochs + 1)]


def labelled_ticks(axis, lowest, highest):
    """The tick labels drawn inside the axis' range."""
    axis.figure.canvas.draw()
    ticks = axis.get_majorticklabels() + axis.get_minorticklabels()
    return [t.get_text() for t in ticks if t.get_text() and t.get_visible()
            and lowest <= t.get_position()[1 if axis.axis_name == "y" else 0] <= highest]


@pytest.mark.parametrize("epochs,paper", [(1, 6.37), (3, 6.37), (164, 6.37), (1, None),
                                          (3, None)])
def test_curves_show_every_epoch_with_whole_epoch_ticks(epochs, paper):
    fig = utils.curves_figure(history(epochs), "title", paper, [81, 122])
    ax_loss, ax_err = fig.axes[:2]
    for ax in (ax_loss, ax_err):
        lines = [l for l in ax.get_lines() if l.get_label() in ("train loss", "train")]
        assert len(lines) == 1 and len(lines[0].get_xdata()) == epochs
        if epochs < 20:  # a point of its own for every epoch: one epoch is not invisible
            assert lines[0].get_marker() not in (None, "None", "")
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert low < 1 and high > epochs and ticks, (low, high, ticks)
        assert all(float(t).is_integer() for t in ticks), ticks
        if epochs < 20:
            assert all(1 <= t <= epochs for t in ticks), ticks
    low, high = ax_err.get_ylim()
    assert len(labelled_ticks(ax_err.yaxis, low, high)) >= 3


@pytest.mark.parametrize("low,high", [(60, 75), (28, 75), (5, 60), (5, 100), (0.05, 80)])
def test_the_log_error_axis_labels_at_least_three_ticks(low, high):
    rows = [dict(row, train_error=low, test_error=high) for row in history(3)]
    fig = utils.curves_figure(rows, "title")
    ax_err = fig.axes[1]
    shown_low, shown_high = ax_err.get_ylim()
    assert shown_low <= low and shown_high >= high
    labels = labelled_ticks(ax_err.yaxis, shown_low, shown_high)
    assert len(labels) >= 3 and all(re.fullmatch(r"[\d.]+", l) for l in labels), labels


def test_epochs_at_zero_error_break_the_log_line_and_are_counted():
    """0 % cannot be drawn on a log axis; joining the epochs around such
    epochs would draw errors that were never measured (a tiny-data run of
    164 epochs drew train error 2.5 % across 40 epochs at 0 %)."""
    rows = history(10)
    for epoch in (4, 5, 6):
        rows[epoch - 1]["train_error"] = 0.0
    fig = utils.curves_figure(rows, "title")
    line, = [l for l in fig.axes[1].get_lines() if l.get_label().startswith("train")]
    assert list(line.get_xdata()) == list(range(1, 11))
    assert [bool(np.isnan(y)) for y in line.get_ydata()] == [e in (4, 5, 6)
                                                             for e in range(1, 11)]
    assert line.get_label() == "train (0 % in 3 epochs, not drawn)"


def test_learning_rate_drops_are_in_the_legend_only_when_drawn():
    def legend_texts(fig):
        return [t.get_text() for ax in fig.axes for t in
                (ax.get_legend().get_texts() if ax.get_legend() else [])]
    fig = utils.curves_figure(history(3), "title", None, [81, 122])
    assert not [t for t in legend_texts(fig) if "learning-rate" in t]
    assert not [ax for ax in fig.axes if "learning-rate" in ax.get_xlabel()]
    fig = utils.curves_figure(history(100), "title", None, [81, 122])
    assert [t for t in legend_texts(fig) if "learning-rate drop" in t]


def png_text(path):
    """The tEXt entries of a PNG file."""
    raw, entries, at = path.read_bytes(), {}, 8
    while at < len(raw):
        length, kind = struct.unpack(">I4s", raw[at:at + 8])
        body = raw[at + 8:at + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            entries[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, value = body.partition(b"\0")
            entries[key.decode("latin-1")] = zlib.decompress(value[1:]).decode("latin-1")
        at += 12 + length
    return entries


@slow
def test_curves_title_names_every_shortened_setting(data, tmp_path):
    run = tmp_path / "run"
    result = run_cli(TRAIN, "normal", 1, "--epochs", 1, "--limit", 150, "--batch-size", 50,
                     "--data-dir", data, "--out", run)
    assert result.returncode == 0, result.stderr[-3000:]
    title = png_text(run / "curves.png")["Title"]
    assert title.startswith("PreResNet-8 on CIFAR-10, recipe paper-preresnet"), title
    for setting in ("--limit 150", "--epochs 1", "--batch-size 50"):
        assert setting in title, title


# -- 11. stale words ----------------------------------------------------------------------


def read(path):
    with open(os.path.join(PROJECT_DIR, path)) as f:
        return f.read()


@pytest.mark.parametrize("path", ["data/README.md", "train_nn.py", "README.md",
                                  "DEVELOPERS.md", "docs/method.md"])
def test_no_text_says_weights_go_to_a_file_per_network_or_are_replaced(path):
    text = " ".join(read(path).split())
    assert "weights/<network>.npz" not in text
    assert not re.search(r"later run (of the same network )?replaces", text)


def test_help_examples_name_real_run_folders_and_have_no_run_on_whitespace():
    import train_nn
    import models
    shapes = set()
    for variant, depth, width in (("normal", 18, 1), ("bottleneck", 18, 1), ("wide", 2, 4)):
        name = models.network_info(variant, depth, width, "paper", "cifar10")["name"]
        shapes |= {"%s-%s-" % (name, recipe) for recipe in train_nn.RECIPES}
    for program in ("train_nn.py", "test_model.py"):
        docstring = __import__(program[:-3]).__doc__
        examples = docstring.split("\n\n")[1]
        for line in examples.splitlines():
            command = line.split("#")[0].strip()
            assert "  " not in command, (program, line)
            for folder in re.findall(r"runs/([^ /]+)", command):
                if folder != "...":
                    assert any(folder.startswith(s) for s in shapes), (program, folder)
                    assert re.search(r"-\d{8}-\d{6}$", folder), (program, folder)


def readme_section(title):
    text = read("README.md")
    start = text.index("\n## %s\n" % title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_set_up_names_gpp_python311_and_the_quick_loop():
    setup = readme_section("Set-up")
    assert "a C compiler" not in setup and "g++" in setup
    assert "python3.11 -m venv .venv" in setup
    assert re.search(r'^ +python3 -m pytest -q -m "not slow" tests', setup, re.M)


def test_readme_evaluation_starts_with_a_run_folder_and_names_the_old_repository():
    testing = readme_section("Testing")
    first = [l for l in testing.splitlines() if "python test_model.py" in l][0]
    assert "--run" in first, first
    old = read("README.md")
    assert "github.com/FlorianMuellerklein/Identity-Mapping-ResNet-Lasagne" in old
    assert re.search(r"data/weights/`? folder", old)


@slow
def test_measured_md_counts_the_tests_there_are():
    text = read("docs/measured.md")
    suite = text[text.index("\n## Test suite\n"):]
    suite = suite[:suite.index("\n## ", 1)]
    rows = re.findall(r"^\| [0-9a-f]{7} \([^)]*\) \| (\d+)", suite, re.M)
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                "tests"], cwd=PROJECT_DIR, capture_output=True, text=True,
                               timeout=600)
    count = int(re.search(r"(\d+) tests? collected", collected.stdout).group(1))
    assert rows and int(rows[-1]) >= 0.8 * count, (rows[-1:], count)
