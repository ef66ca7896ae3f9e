"""sweep/table.py: the task list, the Slurm batch script, the local mode, the
report, and a sweep through a real Slurm (sweep/local_slurm.sh) with a task
requeued from outside and one that requeues itself."""
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import PROJECT_DIR, read_log, without_seconds, write_tiny_cifar10

TABLE = os.path.join(PROJECT_DIR, "sweep", "table.py")
LOCAL_SLURM = os.path.join(PROJECT_DIR, "sweep", "local_slurm.sh")
TRAIN = os.path.join(PROJECT_DIR, "train_nn.py")


def table(*args, timeout=600, **kwargs):
    return subprocess.run([sys.executable, TABLE] + [str(a) for a in args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sweep_json(folder):
    with open(os.path.join(str(folder), "sweep.json")) as f:
        return json.load(f)


def npz_arrays(path):
    with np.load(str(path), allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def assert_same_run(run, reference):
    """Same log but for the seconds, same final weights (every parameter and
    the input normalisation), bit for bit."""
    assert without_seconds(read_log(run)) == without_seconds(read_log(reference))
    a = npz_arrays(os.path.join(str(run), "weights_final.npz"))
    b = npz_arrays(os.path.join(str(reference), "weights_final.npz"))
    numbers = sorted(k for k in a if k.startswith(("param_", "norm_")))
    assert numbers == sorted(k for k in b if k.startswith(("param_", "norm_")))
    assert len(numbers) > 2
    for key in numbers:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# =============================================================================
# The task list and the script (no training)


def test_default_sweep_is_the_papers_table_with_five_seeds(tmp_path):
    result = table("submit", tmp_path / "sweep", "--dry-run")
    assert result.returncode == 0, result.stderr
    sweep = sweep_json(tmp_path / "sweep")
    names = [task["name"] for task in sweep["tasks"]]
    assert len(names) == len(set(names)) == 9 * 5
    # seed by seed: every row's first run comes before any second run
    assert [task["seed"] for task in sweep["tasks"]] == sorted(t["seed"] for t in sweep["tasks"])
    # (variant, n, k) with the default unit and shortcut
    assert {tuple(t["network"][3:]) for t in sweep["tasks"]} == {("full-preact", "identity")}
    rows = {(tuple(t["network"][:3]), t["dataset"], t["dropout"]) for t in sweep["tasks"]}
    assert rows == {
        (("normal", 18, 1), "cifar10", 0.0), (("bottleneck", 18, 1), "cifar10", 0.0),
        (("bottleneck", 18, 1), "cifar100", 0.0), (("wide", 2, 4), "cifar10", 0.0),
        (("wide", 2, 4), "cifar10", 0.3), (("wide", 2, 4), "cifar100", 0.0),
        (("wide", 4, 10), "cifar10", 0.0), (("wide", 4, 10), "cifar10", 0.3),
        (("wide", 4, 10), "cifar100", 0.0)}
    by_name = {t["name"]: t for t in sweep["tasks"]}
    assert by_name["preresnet110-cifar10-paper-seed0"]["args"] == [
        "normal", "18", "--dataset", "cifar10", "--recipe", "paper", "--seed", "0"]
    assert by_name["wrn28-10-cifar10-paper-dropout0.3-seed4"]["args"] == [
        "wide", "4", "10", "--dataset", "cifar10", "--recipe", "paper", "--seed", "4",
        "--dropout", "0.3"]
    assert "preresnet164-cifar100-paper-seed2" in by_name
    script = (tmp_path / "sweep" / "table.sbatch").read_text()
    for line in ("#SBATCH --array=0-44", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@600",
                 "#SBATCH --open-mode=append", 'cache="$SWEEP/theano/$RUN"'):
        assert line + "\n" in script
    assert subprocess.run(["bash", "-n", str(tmp_path / "sweep" / "table.sbatch")]).returncode == 0


def test_selection_by_paper_names_or_commands_and_slurm_options(tmp_path):
    result = table("submit", tmp_path / "s", "--dry-run", "--networks", "PreResNet-164,wide 2 4",
                   "--dataset", "cifar100", "--seeds", "0,3", "--epochs", 2, "--limit", 512,
                   "--partition", "gpu", "--time", "24:00:00", "--gres", "gpu:1",
                   "--cpus-per-task", 4, "--max-parallel", 3, "--signal-before", 900,
                   "--sbatch-option=--exclusive")
    assert result.returncode == 0, result.stderr
    sweep = sweep_json(tmp_path / "s")
    assert [t["name"] for t in sweep["tasks"]] == [
        "preresnet164-cifar100-paper-seed0", "wrn16-4-cifar100-paper-seed0",
        "preresnet164-cifar100-paper-seed3", "wrn16-4-cifar100-paper-seed3"]
    assert sweep["common_args"] == ["--epochs", "2", "--limit", "512"]
    script = (tmp_path / "s" / "table.sbatch").read_text()
    for line in ("#SBATCH --array=0-3%3", "#SBATCH --partition=gpu", "#SBATCH --time=24:00:00",
                 "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --signal=B:USR1@900", "#SBATCH --exclusive",
                 "  3) RUN=wrn16-4-cifar100-paper-seed3; ARGS=(wide 2 4 --dataset cifar100 "
                 "--recipe paper --seed 3) ;;", "COMMON=(--epochs 2 --limit 512)"):
        assert line + "\n" in script

    # The folder keeps its runs: more seeds are added, other settings refused.
    assert table("submit", tmp_path / "s", "--dry-run", "--networks", "WRN-16-4",
                 "--dataset", "cifar100", "--seeds", 5, "--epochs", 2,
                 "--limit", 512).returncode == 0
    names = [t["name"] for t in sweep_json(tmp_path / "s")["tasks"]]
    assert names[:4] == [t["name"] for t in sweep["tasks"]] and len(names) == 4 + 3
    other = table("submit", tmp_path / "s", "--dry-run", "--networks", "WRN-16-4", "--epochs", 3)
    assert other.returncode == 1 and "use another folder" in other.stderr


@pytest.mark.parametrize("args,message", [
    (["--networks", "normal 18", "--dropout", "0.3"], "dropout is defined for wide networks"),
    (["--networks", "PreResNet-57"], "give a paper name"),
    (["--networks", "wide 2"], "expected `wide DEPTH WIDTH`"),
    (["--networks", "normal 1", "--time", "10:00"], "leaves no time to train"),
])
def test_selection_errors_are_one_line(tmp_path, args, message):
    result = table("submit", tmp_path / "s", "--dry-run", *args)
    assert result.returncode == 1 and message in result.stderr
    assert result.stderr.count("\n") == 1


# A stand-in for python that records how the batch script starts train_nn.py.
FAKE_PYTHON = """#!/bin/bash
shift   # train_nn.py
echo "args $*" >> "$FAKE_LOG"
for ((i = 1; i <= $#; i++)); do [ "${!i}" = --out ] && j=$((i + 1)) && out=${!j}; done
case $FAKE_MODE in
  finish) mkdir -p "$out" && touch "$out/weights_final.npz"; exit 0 ;;
  fail) exit 2 ;;
  wait) trap 'echo "child TERM" >> "$FAKE_LOG"; exit 143' TERM
        echo started >> "$FAKE_LOG"
        while :; do sleep 0.05; done ;;
esac
"""
FAKE_SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$FAKE_LOG"
"""


@pytest.fixture
def fake_sweep(tmp_path):
    """A two-run sweep whose batch script starts a fake python; a fake
    scontrol on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("python", FAKE_PYTHON), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    sweep = tmp_path / "sweep"
    result = table("submit", sweep, "--dry-run", "--networks", "normal 1", "--seeds", 2,
                   "--epochs", 3, "--data-dir", tmp_path / "data", "--python", bin_dir / "python")
    assert result.returncode == 0, result.stderr
    log = tmp_path / "fake.log"
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), FAKE_LOG=str(log),
               SLURM_ARRAY_JOB_ID="70", SLURM_ARRAY_TASK_ID="1", SLURM_JOB_ID="71")
    env.pop("SLURM_RESTART_COUNT", None)
    return {"script": str(sweep / "table.sbatch"), "env": env, "log": log,
            "run": sweep / "runs" / "preresnet8-cifar10-paper-seed1", "data": tmp_path / "data"}


def start_script(fake, mode):
    return subprocess.Popen(["bash", fake["script"]], env=dict(fake["env"], FAKE_MODE=mode),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def test_batch_script_starts_resumes_or_skips_a_run(fake_sweep):
    fake, run = fake_sweep, fake_sweep["run"]
    first = start_script(fake, "finish")
    out = first.communicate(timeout=60)[0]
    assert first.returncode == 0, out
    assert fake["log"].read_text().splitlines() == [
        "args normal 1 --dataset cifar10 --recipe paper --seed 1 --epochs 3 --data-dir %s "
        "--out %s" % (fake["data"], run)]
    assert "task 1 (preresnet8-cifar10-paper-seed1): job 71" in out and "done" in out

    # finished: nothing started
    again = start_script(fake, "fail")
    out = again.communicate(timeout=60)[0]
    assert again.returncode == 0 and "finished earlier; nothing to do" in out
    assert len(fake["log"].read_text().splitlines()) == 1

    # a checkpoint: --resume; a failure is not requeued
    (run / "weights_final.npz").unlink()
    (run / "checkpoint.npz").touch()
    failing = start_script(fake, "fail")
    out = failing.communicate(timeout=60)[0]
    assert failing.returncode == 2 and "failed (exit status 2), not requeued" in out
    lines = fake["log"].read_text().splitlines()
    assert lines[-1] == "args --resume %s --data-dir %s" % (run, fake["data"])
    assert not any(line.startswith("scontrol") for line in lines)


def test_batch_script_saves_and_requeues_its_task_on_usr1(fake_sweep):
    fake = fake_sweep
    script = start_script(fake, "wait")
    wait_for(lambda: fake["log"].exists() and "started" in fake["log"].read_text(), 30,
             "the fake run to start")
    script.send_signal(signal.SIGUSR1)   # what --signal=B:USR1@... sends
    out = script.communicate(timeout=60)[0]
    assert script.returncode == 0, out
    lines = fake["log"].read_text().splitlines()
    # the task itself, not array 70 (whose id the array's first task has)
    assert lines[-2:] == ["child TERM", "scontrol requeue 70_1"]
    assert "stopped before the time limit; requeueing 70_1" in out



def children_of(pid):
    """The pids whose parent is ``pid``, read from /proc (no pgrep in slim images)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


def test_batch_script_leaves_requeue_to_slurm_on_term(fake_sweep):
    fake = fake_sweep
    script = start_script(fake, "wait")
    wait_for(lambda: fake["log"].exists() and "started" in fake["log"].read_text(), 30,
             "the fake run to start")
    child = children_of(script.pid)
    # Slurm (requeue, preemption, scancel, time limit) signals every process
    for pid in [script.pid] + child:
        os.kill(pid, signal.SIGTERM)
    out = script.communicate(timeout=60)[0]
    assert script.returncode == 143, out
    assert "ended by Slurm (SIGTERM, exit status 143)" in out
    assert "scontrol" not in fake["log"].read_text()


# =============================================================================
# The report (run folders written by the test)


def fake_run(folder, network, recipe, seed, test_errors, epochs, finished=True,
             val_errors=None, dataset="cifar10", dropout=0.0, command_extra=""):
    """A run folder with the files train_nn.py writes (as far as the report
    reads them)."""
    os.makedirs(folder)
    variant, depth, width = network
    config = {"network": {"variant": variant, "depth": depth, "width": width, "arch": "paper",
                          "dataset": dataset, "dropout": dropout, "name": "x", "display": "x"},
              "recipe": {"name": recipe, "epochs": epochs, "dropout": dropout,
                         "val_size": 5000 if val_errors else 0},
              "seed": seed,
              "command": "python train_nn.py %s %d --seed %d --out %s%s" % (
                  variant, depth, seed, folder, command_extra)}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(folder, "log.csv"), "w") as f:
        f.write("epoch,lr,train_loss,train_error,val_error,test_error,seconds\n")
        for i, error in enumerate(test_errors):
            val = "" if not val_errors else val_errors[i]
            f.write("%d,0.1,1.0,20.0,%s,%s,1.0\n" % (i + 1, val, error))
    if finished:
        np.savez(os.path.join(folder, "weights_final.npz"), a=np.zeros(1))
    np.savez(os.path.join(folder, "checkpoint.npz"), progress=np.array(json.dumps(
        {"epoch": len(test_errors), "iteration_in_epoch": 7})))


def test_report_table_statistics_unfinished_runs_and_figure(tmp_path):
    sweep = tmp_path / "sweep"
    runs = sweep / "runs"
    finals = [6.1, 6.9, 6.4]
    for seed, final in enumerate(finals):
        fake_run(str(runs / ("a%d" % seed)), ("normal", 18, 1), "paper-preresnet", seed,
                 [50.0, 20.0, final], 3)
    fake_run(str(runs / "a3"), ("normal", 18, 1), "paper-preresnet", 3, [55.0, 30.0], 3,
             finished=False)
    # best-on-validation: epoch 2 has the lowest validation error
    for seed, (val, test) in enumerate([((9.0, 5.0, 6.0), (10.0, 5.5, 5.2)),
                                        ((9.0, 4.0, 4.0), (10.0, 5.9, 5.0))]):
        fake_run(str(runs / ("w%d" % seed)), ("wide", 2, 4), "seed", seed, list(test), 3,
                 val_errors=list(val), dropout=0.3, command_extra=" --dropout 0.3")
    # the same network with other settings: a row of its own
    fake_run(str(runs / "short"), ("normal", 18, 1), "paper-preresnet", 0, [40.0], 1,
             command_extra=" --epochs 1 --limit 512 --data-dir /x")
    # a task of the sweep that has not started
    with open(sweep / "sweep.json", "w") as f:
        json.dump({"common_args": [], "tasks": [{
            "name": "wrn16-4-cifar100-paper-seed0", "network": ["wide", 2, 4],
            "dataset": "cifar100", "recipe": "paper", "dropout": 0.0, "seed": 0,
            "args": ["wide", "2", "4", "--dataset", "cifar100", "--recipe", "paper",
                     "--seed", "0"]}]}, f)

    result = table("report", sweep)
    assert result.returncode == 0, result.stderr
    out = sweep / "report"
    rows = {(r["network"], r["dataset"], r["recipe"], r["overrides"]): r
            for r in read_csv(out / "table.csv")}
    assert len(rows) == 4
    main = rows[("PreResNet-110", "cifar10", "paper-preresnet", "")]
    assert (main["finished"], main["unfinished"]) == ("3", "1")
    assert float(main["median"]) == 6.4
    assert float(main["mean"]) == pytest.approx(statistics.mean(finals))
    assert float(main["std"]) == pytest.approx(statistics.stdev(finals))
    assert float(main["paper"]) == 6.37 and float(main["old_repository"]) == 6.38
    assert float(main["difference"]) == pytest.approx(6.4 - 6.37)
    assert float(main["uncertainty"]) == pytest.approx(
        1.2533141 * statistics.stdev(finals) / 3 ** 0.5)
    assert "arXiv 1603.05027" in main["paper_source"]
    assert main["best_val_median"] == ""   # no validation split

    wide = rows[("WRN-16-4", "cifar10", "seed", "")]
    assert wide["dropout"] == "0.3" and float(wide["paper"]) == 5.24
    assert float(wide["old_repository"]) == 5.41
    assert float(wide["median"]) == pytest.approx((5.2 + 5.0) / 2)
    assert float(wide["best_val_median"]) == pytest.approx((5.5 + 5.9) / 2)

    short = rows[("PreResNet-110", "cifar10", "paper-preresnet", "--epochs 1 --limit 512")]
    assert short["finished"] == "1" and short["std"] == "" and short["uncertainty"] == ""

    waiting = rows[("WRN-16-4", "cifar100", "paper-wrn", "")]
    assert (waiting["finished"], waiting["unfinished"]) == ("0", "1")
    assert waiting["median"] == "" and float(waiting["paper"]) == 24.03

    per_run = {r["run"]: r for r in read_csv(out / "runs.csv")}
    assert per_run["a3"]["status"] == "unfinished"
    assert (per_run["a3"]["epochs_done"], per_run["a3"]["last_test_error"]) == ("2", "30.0")
    assert (per_run["a3"]["checkpoint_epoch"], per_run["a3"]["checkpoint_iteration"]) == \
        ("3", "7")
    assert per_run["a3"]["final_test_error"] == ""
    assert per_run["wrn16-4-cifar100-paper-seed0"]["status"] == "not started"
    assert per_run["w1"]["best_val_epoch"] == "2"

    text = (out / "table.md").read_text()
    assert "| PreResNet-110 | CIFAR-10 | paper-preresnet | 0 | 3 (+1 unfinished) | 6.40 |" in text
    assert "## Unfinished runs" in text
    assert "| a3 | 2 / 3 | 30.00 (2) | epoch 3, iteration 7 |" in text
    assert "| wrn16-4-cifar100-paper-seed0 | 0 / ? | - | none |" in text
    assert (out / "curves.png").stat().st_size > 10000
    assert text in result.stdout


def test_published_numbers_match_the_programs(tmp_path):
    """sweep/published.csv holds the numbers train_nn.py prints as the
    paper's (its PAPER_TEST_ERROR table, read from the source text: the
    sweep never imports the project)."""
    import ast
    import re
    found = {}
    for root, folders, files in os.walk(PROJECT_DIR):
        # folders are left out by their own names (a checkout may well lie
        # under a path such as /home/me/runs/ or /srv/tests/)
        folders[:] = [f for f in folders if f not in (".git", "tests", "sweep", "runs", "data")
                      and not f.startswith(".")]
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name)) as f:
                    text = f.read()
                match = re.search(r"PAPER_TEST_ERROR = (\{.*?\n\})", text, re.S)
                if match:
                    found[os.path.relpath(os.path.join(root, name), PROJECT_DIR)] = \
                        ast.literal_eval(match.group(1))
    assert len(found) == 1, "PAPER_TEST_ERROR should be in one file of the project: %s" % (
        sorted(found) or "none")
    source, = found.values()
    import models
    published = {}
    for r in read_csv(os.path.join(PROJECT_DIR, "sweep", "published.csv")):
        words = r["command"].split()
        options = dict(zip(words[-4::2], words[-3::2])) if "--" in r["command"] else {}
        numbers = [int(w) for w in words[1:] if w.isdigit()]
        info = models.network_info(words[0], numbers[0], numbers[1] if len(numbers) > 1 else 1,
                                   "paper", "cifar10", unit=options.get("--unit", "full-preact"),
                                   shortcut=options.get("--shortcut", "identity"))
        assert info["display"] == r["network"], r["command"]
        paper = r["paper"] if r["paper"] == "fail" else float(r["paper"])
        published[(info["name"], r["dataset"], float(r["dropout"]) > 0, r["recipe"])] = paper
    assert published == source


# A stand-in sbatch that records what it submits and answers a job id, and a
# squeue that shows that job while FAKE_ACTIVE names it.
FAKE_SBATCH = """#!/bin/bash
echo "sbatch $*" >> "$FAKE_LOG"
echo 4242
"""
FAKE_SQUEUE = """#!/bin/bash
while [ $# -gt 0 ]; do [ "$1" = -j ] && job=$2; shift; done
[ -n "$job" ] && [ "$job" = "${FAKE_ACTIVE:-}" ] && echo "$job"
exit 0
"""


def test_resubmitting_a_partly_finished_sweep_submits_the_rest_once(tmp_path):
    """Four runs submitted; a second submit while that job is queued is
    refused (its tasks would run twice); with runs 1 and 2 finished and the
    job gone, only tasks 0 and 3 are submitted (array 0,3), each still
    starting its own run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE),
                       ("python", FAKE_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "fake.log"
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), FAKE_LOG=str(log))
    sweep = tmp_path / "sweep"
    python = ["--python", bin_dir / "python"]  # like the Slurm options, given at each submit
    selection = ["--networks", "normal 1", "--seeds", 4, "--epochs", 3,
                 "--data-dir", tmp_path / "data"]
    first = table("submit", sweep, *selection + python, env=env)
    assert first.returncode == 0, first.stderr
    assert "submitted job array 4242 (tasks 0-3)" in first.stdout
    script = sweep / "table.sbatch"
    assert "#SBATCH --array=0-3\n" in script.read_text()

    twice = table("submit", sweep, *python, env=dict(env, FAKE_ACTIVE="4242"))
    assert twice.returncode == 1
    assert "job 4242 of this sweep is still queued or running" in twice.stderr
    assert "would run twice" in twice.stderr
    assert log.read_text().count("sbatch ") == 1

    names = [task["name"] for task in sweep_json(sweep)["tasks"]]
    for finished in names[1:3]:
        (sweep / "runs" / finished).mkdir()
        (sweep / "runs" / finished / "weights_final.npz").touch()
    again = table("submit", sweep, *python, env=env)
    assert again.returncode == 0, again.stderr
    assert "4 runs, 2 finished" in again.stdout and "(tasks 0,3)" in again.stdout
    text = script.read_text()
    assert "#SBATCH --array=0,3\n" in text
    for index, name in enumerate(names):  # the case list keeps every task's index
        assert "  %d) RUN=%s; ARGS=(" % (index, name) in text
    assert log.read_text().splitlines()[-1] == "sbatch --parsable %s" % script
    assert [job["array"] for job in sweep_json(sweep)["jobs"]] == ["0-3", "0,3"]
    # task 3 of the new array starts run 3
    started = subprocess.run(["bash", str(script)], env=dict(
        env, FAKE_MODE="finish", SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID="3",
        SLURM_JOB_ID="4243"), capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    assert log.read_text().splitlines()[-1].endswith(
        "--out %s" % (sweep / "runs" / names[3]))


def test_list_options_make_one_run_per_combination(tmp_path):
    """--datasets, --dropouts and --recipes (or --dataset, --dropout, --recipe)
    take comma-separated lists: every combination, seed by seed."""
    plural = table("submit", tmp_path / "a", "--dry-run", "--networks", "wide 2 4",
                   "--datasets", "cifar10,cifar100", "--dropouts", "0,0.3",
                   "--recipes", "paper,seed", "--seeds", "0,2")
    assert plural.returncode == 0, plural.stderr
    tasks = sweep_json(tmp_path / "a")["tasks"]
    assert [task["name"] for task in tasks[:8]] == [
        "wrn16-4-%s-%s%s-seed0" % (dataset, recipe, "-dropout0.3" if dropout else "")
        for dataset in ("cifar10", "cifar100") for dropout in (0, 0.3)
        for recipe in ("paper", "seed")]
    assert [task["seed"] for task in tasks] == [0] * 8 + [2] * 8
    by_name = {task["name"]: task for task in tasks}
    assert by_name["wrn16-4-cifar100-seed-dropout0.3-seed2"]["args"] == [
        "wide", "2", "4", "--dataset", "cifar100", "--recipe", "seed", "--seed", "2",
        "--dropout", "0.3"]
    singular = table("submit", tmp_path / "b", "--dry-run", "--networks", "wide 2 4",
                     "--dataset", "cifar10,cifar100", "--dropout", "0,0.3",
                     "--recipe", "paper,seed", "--seeds", "0,2")
    assert singular.returncode == 0, singular.stderr
    assert sweep_json(tmp_path / "b")["tasks"] == tasks
    for args, message in ((["--datasets", "cifar10,svhn"], "--dataset svhn: choose from"),
                          (["--recipes", "paper,fast"], "--recipe fast: choose from")):
        refused = table("submit", tmp_path / "c", "--dry-run", *args)
        assert refused.returncode == 2 and message in refused.stderr


@pytest.mark.slow  # the shared run trains
def test_report_takes_the_best_epochs_test_error_from_what_train_nn_prints(best_not_last_run,
                                                                          tmp_path):
    """A run whose best validation epoch (1) was not tested (--test-every 0):
    the report reads that epoch's test error from the line train_nn.py printed
    into output.log, and gets the value the loop computed."""
    runs = tmp_path / "sweep" / "runs"
    shutil.copytree(str(best_not_last_run["run"]), str(runs / "best-not-last"))
    best_test, = [error for _, error, finishing in best_not_last_run["errors"] if finishing]
    report = table("report", tmp_path / "sweep")
    assert report.returncode == 0, report.stderr
    run, = read_csv(tmp_path / "sweep" / "report" / "runs.csv")
    assert (run["status"], run["best_val_epoch"]) == ("finished", "1")
    assert float(run["best_val_error"]) == 10.0  # the scripted validation error
    assert run["best_val_test_error"] != "", "the pattern missed train_nn.py's line"
    assert float(run["best_val_test_error"]) == pytest.approx(best_test, abs=0.005)
    row, = read_csv(tmp_path / "sweep" / "report" / "table.csv")
    assert float(row["best_val_median"]) == pytest.approx(best_test, abs=0.005)
    assert (row["recipe"], row["overrides"]) == ("seed", "")  # read from the command given


# =============================================================================
# Real runs: the local mode, and a real Slurm


@pytest.mark.slow
def test_local_mode_runs_the_list_and_continues_after_ctrl_c(tmp_path):
    data = tmp_path / "data"
    write_tiny_cifar10(data)
    sweep = tmp_path / "sweep"
    selection = ["--networks", "normal 1", "--seeds", 2, "--epochs", 2,
                 "--train-args", "--batch-size 50", "--data-dir", data]
    run0 = sweep / "runs" / "preresnet8-cifar10-paper-seed0"
    first = subprocess.Popen([sys.executable, TABLE, "run", str(sweep)] +
                             [str(a) for a in selection], cwd=PROJECT_DIR,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (run0 / "checkpoint.npz").exists() or first.poll() is not None, 600,
             "the first epoch")
    first.send_signal(signal.SIGINT)   # as Ctrl-C; the program passes it on
    out = first.communicate(timeout=600)[0]
    assert first.returncode == 130, out
    assert "continue the sweep with: python sweep/table.py run %s" % sweep in out
    assert not (run0 / "weights_final.npz").exists()

    second = table("run", sweep)   # the list from sweep.json
    assert second.returncode == 0, second.stdout + second.stderr
    assert "[1/2] preresnet8-cifar10-paper-seed0: python train_nn.py --resume" in second.stdout
    assert "resuming" in second.stdout and "all 2 runs finished" in second.stdout

    reference = tmp_path / "reference"
    straight = subprocess.run([sys.executable, TRAIN, "normal", "1", "--seed", "0", "--epochs",
                               "2", "--batch-size", "50", "--data-dir", str(data), "--out",
                               str(reference)], cwd=PROJECT_DIR, capture_output=True,
                              text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    assert_same_run(run0, reference)

    third = table("run", sweep)
    assert third.returncode == 0 and third.stdout.count(": finished") == 2
    assert "train_nn.py" not in third.stdout.replace("sweep/table.py", "")

    report = table("report", sweep)
    assert report.returncode == 0, report.stderr
    row, = read_csv(sweep / "report" / "table.csv")
    assert (row["network"], row["finished"], row["unfinished"]) == ("PreResNet-8", "2", "0")
    assert row["overrides"] == "--epochs 2 --batch-size 50"


def slurm_unavailable(reason):
    if os.environ.get("SWEEP_SLURM_REQUIRED"):
        pytest.fail("the Slurm test must run here (SWEEP_SLURM_REQUIRED): " + reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm on this machine: the one LOCAL_SLURM_DIR names (started
    by `sweep/local_slurm.sh start DIR`, as .ci/run does), else one this
    fixture starts (as root) and stops."""
    given = os.environ.get("LOCAL_SLURM_DIR")
    if given and os.path.isfile(os.path.join(given, "slurm.conf")):
        folder, started = given, False
    else:
        if os.geteuid() != 0:
            slurm_unavailable("starting slurmd needs root: run `sudo bash sweep/local_slurm.sh "
                              "start DIR` and set LOCAL_SLURM_DIR=DIR")
        if not shutil.which("slurmctld", path=os.environ["PATH"] + ":/usr/sbin:/sbin"):
            slurm_unavailable("Slurm is not installed (apt-get install slurm-wlm munge)")
        folder, started = str(tmp_path_factory.mktemp("slurm")), True
        result = subprocess.run(["bash", LOCAL_SLURM, "start", folder], capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            slurm_unavailable("sweep/local_slurm.sh could not start Slurm: " +
                              (result.stderr.strip() or result.stdout.strip()))
    env = dict(os.environ, SLURM_CONF=os.path.join(folder, "slurm.conf"))
    check = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    if check.returncode != 0 or not check.stdout.strip():
        slurm_unavailable("sinfo fails on %s: %s" % (folder, check.stderr.strip()))
    yield env
    if started:
        subprocess.run(["bash", LOCAL_SLURM, "stop", folder], capture_output=True, timeout=120)


def squeue(env, array):
    """{task: (job id, state, reason)} of the array's tasks Slurm holds (it
    asks again while squeue fails)."""
    for _ in range(100):
        result = subprocess.run(["squeue", "-h", "-r", "-j", str(array), "-o", "%K %A %T %r"],
                                env=env, capture_output=True, text=True)
        if result.returncode == 0 or "Invalid job id" in result.stderr:
            break
        time.sleep(0.5)
    tasks = {}
    for line in result.stdout.splitlines():
        task, job, state, reason = line.split(None, 3)
        tasks[int(task)] = (job, state, reason)
    return tasks


@pytest.mark.slow
def test_slurm_sweep_survives_requeue_bit_for_bit(slurm, tmp_path):
    """Two runs through the real sbatch: task 0 is requeued from outside
    (`scontrol requeue`, as preemption does), task 1 gets the time-limit
    warning (USR1 to its batch script, as --signal=B:USR1 sends) and requeues
    itself; both in their second epoch. Both end like uninterrupted runs."""
    started = time.time()
    data = tmp_path / "data"
    write_tiny_cifar10(data, per_batch=110)   # 550 training images
    sweep = tmp_path / "sweep"
    args = ["--epochs", "3", "--limit", "512", "--batch-size", "32"]
    result = table("submit", sweep, "--networks", "normal 1", "--seeds", 2, "--epochs", 3,
                   "--limit", 512, "--train-args", "--batch-size 32", "--data-dir", data,
                   "--cpus-per-task", 1, "--job-name", "sweep-test", env=slurm)
    assert result.returncode == 0, result.stdout + result.stderr
    array = sweep_json(sweep)["jobs"][0]["id"]
    runs = [sweep / "runs" / ("preresnet8-cifar10-paper-seed%d" % seed) for seed in (0, 1)]

    # The uninterrupted references, meanwhile, one after the other (they share
    # a Theano compile cache; the sweep's runs have theirs).
    references = [tmp_path / ("reference%d" % seed) for seed in (0, 1)]
    straight = []

    def run_references():
        for seed in (0, 1):
            straight.append(subprocess.run(
                [sys.executable, TRAIN, "normal", "1", "--seed", str(seed)] + args +
                ["--data-dir", str(data), "--out", str(references[seed])], cwd=PROJECT_DIR,
                env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                timeout=900))

    reference_thread = threading.Thread(target=run_references)
    reference_thread.start()

    def epochs_logged(run):
        try:
            return len(read_csv(run / "log.csv"))
        except OSError:
            return 0

    def log_text():
        texts = []
        for name in sorted(os.listdir(sweep / "slurm")):
            texts.append("== %s\n%s" % (name, (sweep / "slurm" / name).read_text()))
        return "\n".join(texts)

    interrupted = {0: False, 1: False}
    hurried = set()
    requeues = 0
    deadline = time.time() + 900
    while True:
        queue = squeue(slurm, array)
        if not queue:
            break
        assert time.time() < deadline, "the sweep did not finish:\n" + log_text()
        for task, (job, state, reason) in queue.items():
            # Mid-run: its first epoch is logged, its run not finished.
            if not interrupted[task] and state == "RUNNING" and epochs_logged(runs[task]) >= 1:
                assert not (runs[task] / "weights_final.npz").exists(), \
                    "task %d finished before it could be interrupted" % task
                if task == 0:
                    command = ["scontrol", "requeue", "%s_0" % array]
                else:
                    command = ["scancel", "--batch", "--signal=USR1", "%s_1" % array]
                done = subprocess.run(command, env=slurm, capture_output=True, text=True)
                assert done.returncode == 0, done.stderr
                interrupted[task] = True
                requeues += 1
            # Slurm holds a requeued job back (BeginTime) for about two minutes;
            # 5 s will do here (at once, the node may still refuse the job's
            # revoked credential of the same second, and the task is lost).
            if state == "PENDING" and reason == "BeginTime" and task not in hurried:
                subprocess.run(["scontrol", "update", "JobId=%s_%d" % (array, task),
                                "StartTime=now+5"], env=slurm, capture_output=True)
                hurried.add(task)
        time.sleep(0.05)
    slurm_seconds = time.time() - started
    reference_thread.join(timeout=900)
    assert len(straight) == 2 and all(r.returncode == 0 for r in straight), \
        [r.stderr for r in straight]

    logs = log_text()
    assert interrupted == {0: True, 1: True}, logs
    assert all((run / "weights_final.npz").exists() for run in runs), logs
    outputs = [(sweep / "slurm" / ("%s_%d.out" % (array, task))).read_text() for task in (0, 1)]
    assert "DUE TO JOB REQUEUE" in outputs[0]
    assert "ended by Slurm (SIGTERM, exit status 143)" in outputs[0]
    assert "stopped before the time limit; requeueing %s_1" % array in outputs[1]
    for task in (0, 1):
        assert "task %d (preresnet8-cifar10-paper-seed%d): job" % (task, task) in outputs[task]
        assert ", start 2\n" in outputs[task], logs
        assert outputs[task].count("SIGTERM received") == 1, logs
        assert "resuming" in outputs[task], logs
        assert outputs[task].rstrip().endswith("done"), logs
        assert_same_run(runs[task], references[task])
    state = subprocess.run(["scontrol", "show", "job", "%s_1" % array], env=slurm,
                           capture_output=True, text=True).stdout
    assert "Restarts=1" in state and "JobState=COMPLETED" in state

    # Resubmitting a finished sweep does nothing.
    again = table("submit", sweep, env=slurm)
    assert again.returncode == 0 and "nothing to submit" in again.stdout

    report = table("report", sweep)
    assert report.returncode == 0, report.stderr
    row, = read_csv(sweep / "report" / "table.csv")
    finals = [float(read_csv(r / "log.csv")[-1]["test_error"]) for r in references]
    assert (row["network"], row["finished"], row["unfinished"]) == ("PreResNet-8", "2", "0")
    assert float(row["median"]) == pytest.approx(statistics.median(finals))
    assert float(row["std"]) == pytest.approx(statistics.stdev(finals))
    assert row["overrides"] == "--epochs 3 --limit 512 --batch-size 32"
    print("Slurm test: 2 array tasks, %d requeues (1 scontrol requeue, 1 self-requeue after "
          "USR1), 4 task starts, %.0f s for the sweep" % (requeues, slurm_seconds))
