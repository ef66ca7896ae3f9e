"""A new user's path: nothing published is silently replaced, run folders say
where they came from, every mistake ends in one line and a non-zero exit."""
import json
import os
import shutil
import stat
import subprocess

import pytest

from conftest import PROJECT_DIR, copy_run, run_cli, write_tiny_cifar10

# Every test here runs the programs in subprocesses.
pytestmark = pytest.mark.slow

TRAIN = "train_nn.py"
TEST = "test_model.py"
# The paper recipe shortened to 2 epochs of batch 50 (conftest.SHORT_RUN, the
# session's short_run): such a run never publishes.
SHORT = ["normal", 1, "--epochs", 2, "--batch-size", 50]


def one_line_error(result, code=1):
    """The program failed with ``code`` and one 'error:' line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def data(tmp_path):
    write_tiny_cifar10(tmp_path / "data")
    return tmp_path / "data"


def test_a_shortened_run_is_not_published_and_test_model_evaluates_its_folder(short_run,
                                                                             tmp_path):
    trained, data = short_run["result"], short_run["data"]
    assert "not published to data/weights/" in trained.stdout
    assert not (data / "weights").exists()
    run = copy_run(short_run["run"], tmp_path / "run")  # the report goes into the folder
    tested = run_cli(TEST, "--run", run, "--data-dir", data)
    assert tested.returncode == 0, tested.stderr
    assert "weights: %s" % (run / "weights_final.npz") in tested.stdout
    assert "shortened: --epochs 2, --batch-size 50" in tested.stdout.replace(
        "--batch-size 50, --epochs 2", "--epochs 2, --batch-size 50")
    report = json.loads((run / "weights_final-test.json").read_text())
    final = [l for l in trained.stdout.splitlines() if l.startswith("final test error")][0]
    assert "%.2f%%" % report["error"] in final
    assert report["weights_run"]["run_dir"] == str(short_run["run"])  # where it was trained


def test_a_full_run_publishes_once_and_never_over_another_runs_weights(data, tmp_path,
                                                                       monkeypatch, capsys):
    # A full paper recipe is 164 epochs: in-process, the recipe itself is made
    # one epoch long, so that a run of it is a full-recipe run.
    import test_model
    import train_nn
    monkeypatch.setitem(train_nn.RECIPES["paper-preresnet"], "epochs", 1)
    monkeypatch.setitem(train_nn.RECIPES["paper-preresnet"], "batch_size", 100)
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["normal", "1", "--data-dir", str(data)]
    assert train_nn.main(args + ["--out", str(first)]) == 0
    out = capsys.readouterr().out
    target = data / "weights" / "preresnet8" / "paper-preresnet.npz"
    assert target.is_file() and "where test_model.py looks" in out
    published = target.read_bytes()
    assert train_nn.main(args + ["--out", str(second)]) == 0
    out = capsys.readouterr().out
    assert "not published: %s already holds the weights of run %s" % (target, first) in out
    assert target.read_bytes() == published
    # test_model.py finds the one published file and says whose it is.
    assert test_model.main(["normal", "1", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "run %s" % first in out and "epoch 1 of 1" in out


def test_test_model_evaluates_an_interrupted_runs_checkpoint(short_run, tmp_path):
    run = copy_run(short_run["run"], tmp_path / "run")
    os.remove(run / "weights_final.npz")  # as if stopped after its last checkpoint
    tested = run_cli(TEST, "--run", run, "--data-dir", short_run["data"])
    assert tested.returncode == 0, tested.stderr
    assert "checkpoint.npz" in tested.stdout and "epoch 2 of 2" in tested.stdout


def git(*args):
    """git's answer about the project's folder, or None where git is missing or
    the folder is no checkout (an image, plant_bugs.py's copy)."""
    if not shutil.which("git"):
        return None
    result = subprocess.run(["git", "-C", PROJECT_DIR] + list(args), capture_output=True,
                            text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def test_run_folder_records_commit_data_and_time_and_output_log_holds_everything(short_run):
    run, data = short_run["run"], short_run["data"]
    source = json.loads((run / "config.json").read_text())["source"]
    assert source["data"]["official"] is False  # the tiny files are not the release
    assert source["data"]["folder"] == str(data / "cifar-10-batches-py")
    assert "T" in source["started"]
    head = git("rev-parse", "HEAD")
    if head is None:  # no checkout: nothing to record, and nothing made up
        assert source["code"] is None
    else:
        assert source["code"] == {
            "commit": head,
            "modified": bool(git("status", "--porcelain", "--untracked-files=no"))}
    log = (run / "output.log").read_text()
    assert "differ from the official release" in log  # the data warning, printed first
    assert "final test error" in log
    for name in ("config.json", "output.log", "log.csv", "checkpoint.npz", "weights_final.npz"):
        mode = stat.S_IMODE(os.stat(run / name).st_mode)
        assert mode & 0o044 == 0o044, (name, oct(mode))  # others may read (umask 022)


@pytest.mark.parametrize("args,message", [
    (["--lr-milestones", "9,7"], "milestones must increase"),
    (["--resume", "RUN", "--seed", "3"], "takes no --seed"),
    (["--resume", "RUN", "--recipe", "seed"], "takes no --recipe"),
    (["--resume", "RUN", "--epochs", "5"], "takes no --epochs"),
])
def test_resume_and_schedule_mistakes_are_refused_in_one_line(short_run, args, message):
    args = [str(short_run["run"]) if a == "RUN" else a for a in args]
    if "--resume" not in args:
        args = ["normal", 1] + args
    result = run_cli(TRAIN, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("usage:") and message in lines[2], lines


def test_resume_honours_test_every(short_run):
    # finished: nothing to do, but the flag is accepted
    result = run_cli(TRAIN, "--resume", short_run["run"], "--test-every", 2)
    assert result.returncode == 0 and "nothing to do" in result.stdout


def test_late_setting_error_leaves_no_run_folder(data, tmp_path):
    run = tmp_path / "run"
    result = run_cli(TRAIN, "normal", 1, "--val-size", 5000, "--data-dir", data, "--out", run)
    assert "--val-size 5000 leaves no training images" in one_line_error(result)
    assert not run.exists()


def test_unwritable_out_and_bad_data_dirs_are_one_line(data, tmp_path):
    if os.geteuid() == 0:
        locked = "/proc/no-such-place/run"  # root writes anywhere else
    else:
        locked_dir = tmp_path / "locked"
        locked_dir.mkdir(mode=0o500)
        locked = str(locked_dir / "run")
    result = run_cli(TRAIN, *SHORT, "--data-dir", data, "--out", locked)
    assert "cannot create the run folder" in one_line_error(result)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file, not a folder" in one_line_error(
        run_cli(TRAIN, *SHORT, "--data-dir", a_file, "--out", tmp_path / "r1"))
    assert "pass the folder that holds it" in one_line_error(
        run_cli(TRAIN, *SHORT, "--data-dir", data / "cifar-10-batches-py", "--out",
                tmp_path / "r2"))
    typo = tmp_path / "dta"
    assert "does not exist" in one_line_error(
        run_cli(TRAIN, *SHORT, "--data-dir", typo, "--out", tmp_path / "r3"))
    assert not typo.exists()


def test_missing_compiler_is_one_line_before_any_work(data, tmp_path):
    env = dict(os.environ, THEANO_FLAGS=os.environ.get("THEANO_FLAGS", "") + ",cxx=")
    run = tmp_path / "run"
    result = run_cli(TRAIN, *SHORT, "--data-dir", data, "--out", run, env=env)
    assert "install g++" in one_line_error(result)
    assert not run.exists()
    result = run_cli(TEST, "normal", 1, "--data-dir", data, env=env)
    assert "install g++" in one_line_error(result)


def test_weights_mistakes_name_their_cause(data, tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("epoch,lr\n1,0.1\n")
    assert "not an .npz file" in one_line_error(
        run_cli(TEST, "normal", 1, "--weights", csv, "--data-dir", data))
    hint = one_line_error(run_cli(TEST, "wide", 1, 2, "--dataset", "cifar100", "--arch",
                                  "seed", "--data-dir", data))
    assert ("python train_nn.py wide 1 2 --arch seed --dataset cifar100 --data-dir %s" % data
            in hint)


def test_help_shows_every_recipe_flag_with_its_defaults():
    result = run_cli(TRAIN, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag, defaults in (("--epochs N", "paper-preresnet 164, paper-wrn 200, seed 200"),
                           ("--weight-decay WD", "paper-preresnet 0.0001, paper-wrn 0.0005"),
                           ("--pad-mode {zero,reflect}", "paper-wrn reflect")):
        assert flag in text and defaults in text, flag
    assert "usage: train_nn.py VARIANT DEPTH [WIDTH]" in result.stdout
    assert "examples:" in result.stdout


# -- test_model.py ----------------------------------------------------------------


def test_several_published_recipes_make_the_user_choose(short_run, tmp_path):
    """Two recipes' weights of the network in data/weights/<network>/: no
    default, one line naming both, exit 1; --weights chooses."""
    data = tmp_path / "data"
    shutil.copytree(str(short_run["data"]), str(data))
    folder = data / "weights" / "preresnet8"
    folder.mkdir(parents=True)
    for recipe in ("seed", "paper-preresnet"):
        shutil.copy(str(short_run["run"] / "weights_final.npz"), str(folder / (recipe + ".npz")))
    message = one_line_error(run_cli(TEST, "normal", 1, "--data-dir", data))
    assert ("%s holds weights of 2 runs (paper-preresnet.npz, seed.npz): choose one with "
            "--weights" % folder) in message
    chosen = run_cli(TEST, "normal", 1, "--data-dir", data, "--weights", folder / "seed.npz")
    assert chosen.returncode == 0, chosen.stderr
    assert "weights: %s" % (folder / "seed.npz") in chosen.stdout


def test_out_puts_the_report_there_and_nothing_next_to_the_weights(short_run, tmp_path):
    run = short_run["run"]
    before = sorted(os.listdir(run))
    out = tmp_path / "reports" / "mine.json"
    out.parent.mkdir()
    tested = run_cli(TEST, "--run", run, "--data-dir", short_run["data"], "--out", out)
    assert tested.returncode == 0, tested.stderr
    assert "report: %s" % out in tested.stdout
    report = json.loads(out.read_text())
    assert report["weights"] == str(run / "weights_final.npz") and report["count"] == 100
    assert sorted(os.listdir(run)) == before


def test_run_and_weights_together_are_a_usage_error(short_run):
    result = run_cli(TEST, "--run", short_run["run"], "--weights",
                     short_run["run"] / "weights_final.npz", "--data-dir", short_run["data"])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("usage:") and "Traceback" not in result.stderr, lines
    assert [line for line in lines if line.startswith("error:")] == [
        "error: --run and --weights both name weights: give one"]
