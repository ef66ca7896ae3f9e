"""The papers' table: many runs on a Slurm cluster (or one machine), then the
table of their test errors against the papers'.

    python sweep/table.py submit [SWEEP_DIR] --seeds 5 --partition P --time 24:00:00
    python sweep/table.py run    [SWEEP_DIR] --networks "normal 18" --seeds 2
    python sweep/table.py report [SWEEP_DIR ...]

`submit` writes one Slurm job-array script, SWEEP_DIR/table.sbatch (kept
there: edit it and resubmit it with `sbatch` if you like), and submits it.
Each array task is one run (network, dataset, recipe, dropout, seed) whose
folder SWEEP_DIR/runs/<name> is fixed by those: a task finds its run when it
is requeued and continues it with `train_nn.py --resume`; a finished run does
nothing. Before the time limit Slurm sends the script USR1 (`--signal`); the
script has train_nn.py save its checkpoint and requeues the task. Preempted
or requeued tasks (`--requeue`) continue from the last checkpoint too.

`run` works through the same list on this machine, one run after another;
run it again after an interruption (Ctrl-C saves the current run) and it
continues where it stopped.

`report` reads every run folder under the given folders (config.json,
log.csv, output.log, checkpoint.npz) and writes table.md, table.csv, runs.csv
and curves.png (default: SWEEP_DIR/report/).

This program uses train_nn.py only through its command line and its run
folders' files; it imports nothing from the project.
"""
import argparse
import csv
import datetime
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(HERE)
TRAIN = os.path.join(PROJECT_DIR, "train_nn.py")
DEFAULT_SWEEP = os.path.join(PROJECT_DIR, "runs", "table")
PUBLISHED = os.path.join(HERE, "published.csv")
SWEEP_FILE = "sweep.json"
SCRIPT_NAME = "table.sbatch"
DATASETS = ("cifar10", "cifar100")
RECIPES = ("paper", "seed", "paper-preresnet", "paper-wrn", "he2015", "he2015-warmup",
           "resnet-1k-layers")
# The tables of published.csv (its `table` column): `papers` is the default.
DEFAULT_TABLE = "papers"
# train_nn.py's --unit and --shortcut defaults: a network is (variant, n, k,
# unit, shortcut).
DEFAULT_UNIT, IDENTITY = "full-preact", "identity"
UNIT_WORDS = {"original": None, "bn-after-add": "BN after addition",
              "relu-before-add": "ReLU before addition",
              "relu-preact": "ReLU-only pre-activation", "full-preact": None}
# train_nn.py exits with 128 + signal number after saving on SIGINT / SIGTERM.
INTERRUPTED = (130, 143)
# Arguments that identify a run's row, or that do not change its results:
# everything else given to train_nn.py is shown as an override of the recipe.
NOT_OVERRIDES = {"dataset", "recipe", "dropout", "seed", "out", "data-dir", "test-every",
                 "resume"}
# Standard error of the median of n normal samples: sqrt(pi / 2) * sigma / sqrt(n).
MEDIAN_SE = math.sqrt(math.pi / 2)


class SweepError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


# =============================================================================
# Networks: the papers' names for train_nn.py's TYPE DEPTH [WIDTH]


def layers(variant, n):
    return {"normal": 6 * n + 2, "bottleneck": 9 * n + 2, "wide": 6 * n + 4}[variant]


def papers_convention(variant, n):
    """True where `PreResNet-<depth>` alone says which unit is meant: the
    papers' PreResNet-164 and -1001 are bottleneck networks, the others basic."""
    if variant == "wide":
        return True
    return (layers(variant, n) in (164, 1001)) == (variant == "bottleneck")


def shortcut_words(shortcut, slug):
    """`exclusive-gating:-6` -> `exclusive-gating-bg-6` or `exclusive gating, b_g -6`
    (train_nn.py's names for He et al. 2016's Table 1 shortcuts)."""
    kind, _, values = shortcut.partition(":")
    numbers = [float(v) for v in values.split(",")] if values else []
    if kind == "scaling":
        return ("scaling%g-%g" % tuple(numbers) if slug else
                "constant scaling, %g on the shortcut, %g on F" % tuple(numbers))
    if kind.endswith("gating"):
        return ("%s-bg%g" % (kind, numbers[0]) if slug else "%s, b_g %g" % (
            {"exclusive-gating": "exclusive gating",
             "shortcut-gating": "shortcut-only gating"}[kind], numbers[0]))
    if kind == "dropout":
        return "dropout%g" % numbers[0] if slug else "dropout %g shortcut" % numbers[0]
    return kind if slug else {"conv1x1": "1x1 conv shortcut"}.get(kind, kind)


def network_display(variant, n, k=1, unit=DEFAULT_UNIT, shortcut=IDENTITY):
    """PreResNet-110, WRN-16-4, ResNet-20 (original unit), `ResNet-110 (BN after
    addition)`; `PreResNet-110 (bottleneck)` for bottleneck 12."""
    if variant == "wide":
        return "WRN-%d-%d" % (layers(variant, n), k)
    name = "%sResNet-%d" % ("Pre" if unit == DEFAULT_UNIT else "", layers(variant, n))
    details = [UNIT_WORDS[unit]] if UNIT_WORDS.get(unit) else []
    if shortcut != IDENTITY:
        details.append(shortcut_words(shortcut, slug=False))
    if not papers_convention(variant, n):
        details.insert(0, "bottleneck" if variant == "bottleneck" else "basic")
    return name + (" (%s)" % "; ".join(details) if details else "")


def network_slug(variant, n, k=1, unit=DEFAULT_UNIT, shortcut=IDENTITY):
    """File-safe: preresnet110, wrn16-4, preresnet110-bottleneck, resnet20,
    resnet110-bn-after-add, resnet110-exclusive-gating-bg-6."""
    if variant == "wide":
        return "wrn%d-%d" % (layers(variant, n), k)
    slug = "%sresnet%d" % ("pre" if unit == DEFAULT_UNIT else "", layers(variant, n))
    if unit not in (DEFAULT_UNIT, "original"):
        slug += "-" + unit
    if shortcut != IDENTITY:
        slug += "-" + shortcut_words(shortcut, slug=True)
    if not papers_convention(variant, n):
        slug += "-bottleneck" if variant == "bottleneck" else "-basic"
    return slug


def parse_network(text):
    """`normal 18`, `wide 2 4`, `normal 18 --unit original --shortcut conv1x1`
    or a paper name (PreResNet-110, PreResNet-164, WRN-16-4, WRN-28-10, any
    WRN-d-k; ResNet-20 ... ResNet-1202 have the original unit) -> (variant, n,
    k, unit, shortcut)."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = []
    options = {"--unit": None, "--shortcut": IDENTITY}
    while len(words) >= 2 and words[-2] in options:
        options[words[-2]] = words[-1]
        words = words[:-2]
    words = " ".join(words).replace(",", " ").split()
    unit = options["--unit"]
    if unit is not None and unit not in UNIT_WORDS:
        raise SweepError("network %r: --unit is one of %s" % (text, ", ".join(UNIT_WORDS)))
    if words and words[0] in ("normal", "bottleneck", "wide"):
        try:
            numbers = [int(w) for w in words[1:]]
        except ValueError:
            numbers = []
        wide = words[0] == "wide"
        if len(numbers) == (2 if wide else 1) and min(numbers) >= 1:
            return (words[0], numbers[0], numbers[1] if wide else 1,
                    unit or DEFAULT_UNIT, options["--shortcut"])
        raise SweepError("network %r: expected `%s`" % (
            text, "wide DEPTH WIDTH" if wide else words[0] + " DEPTH"))
    compact = " ".join(words).strip().lower().replace("_", "-")
    match = re.fullmatch(r"(pre-?)?resnet-?(\d+)", compact)
    if match:
        depth = int(match.group(2))
        variant = "bottleneck" if depth in (164, 1001) else "normal"
        per_unit = 9 if variant == "bottleneck" else 6
        if (depth - 2) % per_unit == 0 and depth > 2:
            named = DEFAULT_UNIT if match.group(1) else "original"
            return (variant, (depth - 2) // per_unit, 1, unit or named, options["--shortcut"])
    match = re.fullmatch(r"wrn-?(\d+)-(\d+)", compact)
    if match and (int(match.group(1)) - 4) % 6 == 0 and int(match.group(1)) > 4:
        return ("wide", (int(match.group(1)) - 4) // 6, int(match.group(2)),
                unit or DEFAULT_UNIT, options["--shortcut"])
    raise SweepError("network %r: give a paper name (PreResNet-110, PreResNet-164, "
                     "WRN-16-4, WRN-28-10, ResNet-20) or train_nn.py's `TYPE DEPTH [WIDTH] "
                     "[--unit U] [--shortcut S]`, e.g. `normal 18`" % text)


def split_networks(text):
    """--networks' comma-separated list; a comma inside a shortcut's values
    (`--shortcut scaling:0.5,0.5`) does not split."""
    pieces = []
    for piece in text.split(","):
        if pieces and re.match(r"\s*[-\d.]", piece):
            pieces[-1] += "," + piece
        elif piece.strip():
            pieces.append(piece)
    return pieces


def network_words(network):
    variant, n, k, unit, shortcut = network
    return ([variant, str(n)] + ([str(k)] if variant == "wide" else []) +
            (["--unit", unit] if unit != DEFAULT_UNIT else []) +
            (["--shortcut", shortcut] if shortcut != IDENTITY else []))


# =============================================================================
# The published numbers (sweep/published.csv, with their sources)


FAILED = "fail"   # He et al. 2016 Table 1: "when the test error is higher than 20%"


def read_published(path=PUBLISHED):
    """{(variant, n, k, unit, shortcut, dataset, dropout > 0, recipe): row of
    published.csv}; a row's `tables` are the tables it belongs to, its `paper`
    a number or "fail"."""
    table = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            network = parse_network(row["command"])
            for key in ("paper", "old_repository"):
                row[key] = (row[key] if row[key] == FAILED else
                            float(row[key]) if row[key] else None)
            row["dropout"] = float(row["dropout"])
            row["tables"] = row["table"].split()
            table[network + (row["dataset"], row["dropout"] > 0, row["recipe"])] = row
    return table


def published_recipe(recipe):
    """The recipe a published number is filed under: the variant's paper
    recipe under `paper`, the others under their own names."""
    return "paper" if recipe in ("paper-preresnet", "paper-wrn") else recipe


def published_row(published, network, dataset, dropout, recipe):
    """The published row for a run of ``recipe`` (train_nn.py's name), else the
    paper recipe's, else the network's only one (as train_nn.py prints it)."""
    found = {key[7]: row for key, row in published.items()
             if key[:7] == tuple(network) + (dataset, dropout > 0)}
    for choice in (published_recipe(recipe), "paper"):
        if choice in found:
            return found[choice]
    return next(iter(found.values())) if len(found) == 1 else None


def table_names(published):
    return sorted({name for row in published.values() for name in row["tables"]})


# =============================================================================
# The task list


def number_list(text, kind=float):
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected a comma-separated list of numbers")


def seed_list(text):
    """`5` -> seeds 0..4; `0,3,7` -> those seeds."""
    values = number_list(text, int)
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("expected a count (5: seeds 0-4) or a list (0,3,7)")
    return list(range(values[0])) if "," not in text else values


def format_dropout(value):
    return ("%g" % value) if value else "0"


def task_name(network, dataset, recipe, dropout, seed):
    name = "%s-%s-%s" % (network_slug(*network), dataset, recipe)
    if dropout:
        name += "-dropout%s" % format_dropout(dropout)
    return "%s-seed%d" % (name, seed)


def make_tasks(networks, datasets, dropouts, recipes, seeds, published, table=None):
    """The runs of the selection. Unless given, the datasets, dropouts and
    recipes of a network are those the papers report (in ``table`` if given;
    CIFAR-10 without dropout and the paper recipe for a network the papers do
    not report)."""
    rows = []
    for network in networks:
        reported = sorted({(key[5], published[key]["dropout"], key[7]) for key in published
                           if key[:5] == network and (table is None or
                                                      table in published[key]["tables"])},
                          key=lambda p: (DATASETS.index(p[0]), p[1], p[2] != "paper", p[2]))
        for dataset in datasets or sorted({d for d, _, _ in reported}, key=DATASETS.index) \
                or ["cifar10"]:
            for dropout in dropouts if dropouts is not None else \
                    list(dict.fromkeys(p for d, p, _ in reported if d == dataset)) or [0.0]:
                if dropout and network[0] != "wide":
                    raise SweepError("dropout is defined for wide networks only, not %s"
                                     % network_display(*network))
                if not 0 <= dropout < 1:
                    raise SweepError("dropout must be in [0, 1), got %g" % dropout)
                chosen = recipes or [r for d, p, r in reported
                                     if d == dataset and p == dropout] or ["paper"]
                rows += [(network, dataset, recipe, dropout) for recipe in chosen]
    # Seed by seed: a first run of every row comes before a second of any.
    tasks = []
    for seed in seeds:
        for network, dataset, recipe, dropout in rows:
            args = network_words(network) + [
                "--dataset", dataset, "--recipe", recipe, "--seed", str(seed)]
            if dropout:
                args += ["--dropout", format_dropout(dropout)]
            tasks.append({"name": task_name(network, dataset, recipe, dropout, seed),
                          "network": list(network), "dataset": dataset, "recipe": recipe,
                          "dropout": dropout, "seed": seed, "args": args})
    return tasks


def common_args(args):
    """train_nn.py arguments every run of the sweep gets (besides --data-dir)."""
    common = []
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    if args.limit is not None:
        common += ["--limit", str(args.limit)]
    if args.train_args:
        common += shlex.split(args.train_args)
    return common


def selection_given(args):
    return any(getattr(args, key) is not None for key in (
        "networks", "datasets", "dropouts", "recipes", "seeds", "epochs", "limit",
        "train_args", "table"))


def resolve_sweep(args):
    """The sweep in args.sweep_dir: the one in its sweep.json, extended by the
    selection on the command line (the papers' table with 5 seeds for a new
    folder without one). Writes sweep.json."""
    sweep_dir = os.path.abspath(args.sweep_dir)
    path = os.path.join(sweep_dir, SWEEP_FILE)
    old = None
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    if old and not selection_given(args):
        sweep = old
    else:
        published = read_published()
        table = args.table
        if table is not None and table not in table_names(published):
            raise SweepError("--table %s: choose from %s"
                             % (table, ", ".join(table_names(published))))
        networks = ([parse_network(text) for text in split_networks(args.networks)]
                    if args.networks else list(dict.fromkeys(
                        key[:5] for key, row in published.items()
                        if (table or DEFAULT_TABLE) in row["tables"])))
        tasks = make_tasks(networks, args.datasets, args.dropouts, args.recipes,
                           args.seeds if args.seeds is not None else list(range(5)), published,
                           table)
        common = common_args(args)
        sweep = {"created": datetime.datetime.now().isoformat(timespec="seconds"),
                 "common_args": common, "tasks": tasks, "jobs": []}
        if old:
            if old["common_args"] != common:
                raise SweepError(
                    "%s holds runs made with `%s`, not `%s`: use another folder for other "
                    "settings" % (sweep_dir, " ".join(old["common_args"]) or "no options",
                                  " ".join(common) or "no options"))
            known = {task["name"] for task in old["tasks"]}
            sweep = dict(old, tasks=old["tasks"] + [t for t in tasks if t["name"] not in known])
    if args.data_dir:
        sweep["data_dir"] = os.path.abspath(args.data_dir)
    os.makedirs(os.path.join(sweep_dir, "runs"), exist_ok=True)
    write_json(path, sweep)
    return sweep_dir, sweep


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def run_dir(sweep_dir, task):
    return os.path.join(sweep_dir, "runs", task["name"])


def run_state(folder):
    """finished (final weights written), resume (a checkpoint) or new."""
    if os.path.isfile(os.path.join(folder, "weights_final.npz")):
        return "finished"
    if os.path.isfile(os.path.join(folder, "checkpoint.npz")):
        return "resume"
    return "new"


def train_arguments(sweep_dir, sweep, task):
    """train_nn.py's arguments for the task's next attempt, or None when its
    run has finished. The same rule as the batch script's."""
    folder = run_dir(sweep_dir, task)
    data = ["--data-dir", sweep["data_dir"]] if sweep.get("data_dir") else []
    state = run_state(folder)
    if state == "finished":
        return None
    if state == "resume":
        return ["--resume", folder] + data
    return task["args"] + sweep["common_args"] + data + ["--out", folder]


# =============================================================================
# Slurm


def array_spec(indices):
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else "%d-%d" % (start, value))
            start = None
    return ",".join(parts)


def bash_words(words):
    return " ".join(shlex.quote(str(w)) for w in words)


SCRIPT = r"""#!/bin/bash
# The papers' table as a Slurm job array: {count} runs, written by
# `sweep/table.py submit` on {date}.
# Edit it and submit it again with `sbatch {script}` if you like: tasks whose
# run finished do nothing, the others continue from their checkpoints.
#
# Each array task trains one run, in {sweep}/runs/NAME, NAME fixed by its
# network, dataset, recipe, dropout and seed (the case list below):
#   - a finished run (weights_final.npz): nothing to do;
#   - a run with a checkpoint: `train_nn.py --resume` continues it;
#   - otherwise `train_nn.py ... --out` starts it.
# Time limit: {before} s before it, Slurm sends USR1 to this script (--signal
# below); it passes SIGTERM on to train_nn.py, which finishes its step, saves
# its checkpoint and exits (status 143), and the script requeues its task
# (`scontrol requeue`): it continues from that checkpoint when it starts again.
# Preemption, `scontrol requeue`, node failure: Slurm itself sends SIGTERM to
# every process of the job (SIGKILL after the cluster's KillWait), so
# train_nn.py saves; with --requeue, Slurm starts the task again later and it
# resumes from the last checkpoint saved (the step's, or else the last
# epoch's). `scancel` ends a task; its run continues when it is submitted again.
#
#SBATCH --job-name={job_name}
#SBATCH --array={array}
#SBATCH --output={sweep}/slurm/%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@{before}
#SBATCH --chdir={project}
{options}
SWEEP={sweep_q}
# train_nn.py arguments of every new run (a resumed run keeps its own), and
# the data folder (new and resumed runs):
COMMON=({common})
DATA=({data})

case ${{SLURM_ARRAY_TASK_ID:?not set: submit with sbatch}} in
{cases}
  *) echo "task $SLURM_ARRAY_TASK_ID: not in this sweep" >&2; exit 1 ;;
esac

run=$SWEEP/runs/$RUN
# Theano's compiled code goes to a cache of this run's own (a requeued run
# finds it filled): Theano 1.0.5's cache is not safe for processes that start
# at the same time (one deletes another's new module folder, which crashes it).
cache={cache}
mkdir -p -m 700 "$cache"
export THEANO_FLAGS="${{THEANO_FLAGS:+$THEANO_FLAGS,}}base_compiledir=$cache"
# How train_nn.py is started:
LAUNCH=({launch})
say() {{ echo "$(date '+%F %T') task $SLURM_ARRAY_TASK_ID ($RUN): $*"; }}
say "job ${{SLURM_JOB_ID:-?}} on $(hostname), start $(( ${{SLURM_RESTART_COUNT:-0}} + 1 ))"
if [ -f "$run/weights_final.npz" ]; then
  say "finished earlier; nothing to do"
  exit 0
elif [ -f "$run/checkpoint.npz" ]; then
  command=(--resume "$run" "${{DATA[@]}}")
else
  command=("${{ARGS[@]}}" "${{COMMON[@]}}" "${{DATA[@]}}" --out "$run")
fi
if [ -n "${{SLURM_CPUS_PER_TASK:-}}" ] && [ -z "${{OMP_NUM_THREADS:-}}" ]; then
  export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
fi

stop= child= trapped=0 ending=
# USR1, to this script only: the time limit is near; the program saves and stops.
trap 'trapped=1; stop=USR1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' USR1
# TERM: Slurm is ending the job and has signalled the program itself.
trap 'trapped=1; ending=1; stop=${{stop:-TERM}}' TERM
say "${{LAUNCH[*]}} ${{command[*]}}"
"${{LAUNCH[@]}}" "${{command[@]}}" &
child=$!
[ "$stop" = USR1 ] && kill -TERM "$child" 2>/dev/null
while :; do
  trapped=0
  wait "$child"
  rc=$?
  # a trapped signal ends `wait` early (status > 128) while the program runs on
  [ "$trapped" = 1 ] && [ "$rc" -gt 128 ] || break
done

if [ "$rc" = 0 ]; then
  say "done"
elif [ "$stop" = USR1 ] && [ "$rc" = 143 ]; then
  # This task alone: an array's first task has the array's own job id.
  job=${{SLURM_ARRAY_JOB_ID:+${{SLURM_ARRAY_JOB_ID}}_$SLURM_ARRAY_TASK_ID}}
  say "stopped before the time limit; requeueing ${{job:=$SLURM_JOB_ID}}"
  # (TERM during it: Slurm is ending the job for the requeue)
  scontrol requeue "$job" || [ -n "$ending" ] && exit 0
  say "scontrol requeue failed: submit this script again to continue"
  exit 1
elif [ -n "$stop" ]; then
  say "ended by Slurm (SIG$stop, exit status $rc); a requeued task continues the run"
else
  say "train_nn.py failed (exit status $rc), not requeued: see this file and $run/output.log"
fi
exit "$rc"
"""


def launcher(args, sweep_dir, sweep):
    """The command that starts train_nn.py, as words of the batch script."""
    python = os.path.abspath(args.python) if os.sep in args.python else args.python
    if not args.container:
        return bash_words([python, TRAIN])
    if not sweep.get("data_dir"):
        raise SweepError("--container needs --data-dir (the image's own data/ is read-only)")
    # The image's THEANO_FLAGS name /cache/theano: the run's cache is bound there.
    binds = '"%s,$cache:/cache/theano"' % ",".join([sweep_dir, sweep["data_dir"]])
    gpu = ["--nv"] if args.gres and "gpu" in args.gres else []
    return " ".join([bash_words(["apptainer", "exec"] + gpu + ["--bind"]), binds,
                     bash_words([os.path.abspath(args.container), "python",
                                 "/app/train_nn.py"])])


def slurm_seconds(text):
    """Seconds of a Slurm time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; None if
    it is none of these (Slurm will say)."""
    days, _, rest = text.rpartition("-") if "-" in text else ("0", "", text)
    try:
        parts = [int(p) for p in rest.split(":")]
        days = int(days)
    except ValueError:
        return None
    if "-" in text:   # D-H, D-H:M, D-H:M:S
        parts += [0] * (3 - len(parts))
    elif len(parts) == 1:   # minutes
        parts = [0, parts[0], 0]
    elif len(parts) == 2:   # M:S
        parts = [0] + parts
    if len(parts) != 3:
        return None
    return ((days * 24 + parts[0]) * 60 + parts[1]) * 60 + parts[2]


def sbatch_options(args):
    lines = []
    for flag in ("partition", "time", "gres", "cpus_per_task", "mem", "account", "qos",
                 "constraint"):
        value = getattr(args, flag)
        if value is not None:
            lines.append("#SBATCH --%s=%s" % (flag.replace("_", "-"), value))
    lines += ["#SBATCH %s" % option for option in args.sbatch_option or []]
    return "\n".join(lines)


def write_script(args, sweep_dir, sweep, indices):
    cases = []
    for i, task in enumerate(sweep["tasks"]):
        cases.append("  %d) RUN=%s; ARGS=(%s) ;;" % (i, task["name"], bash_words(task["args"])))
    array = array_spec(indices) + ("%%%d" % args.max_parallel if args.max_parallel else "")
    path = os.path.join(sweep_dir, SCRIPT_NAME)
    text = SCRIPT.format(
        count=len(sweep["tasks"]), date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        script=path, sweep=sweep_dir, sweep_q=shlex.quote(sweep_dir), before=args.signal_before,
        job_name=args.job_name, array=array, project=PROJECT_DIR,
        options=sbatch_options(args), common=bash_words(sweep["common_args"]),
        data=bash_words(["--data-dir", sweep["data_dir"]] if sweep.get("data_dir") else []),
        launch=launcher(args, sweep_dir, sweep), cases="\n".join(cases),
        cache=('"$SWEEP/theano/shared"' if args.shared_compile_cache
               else '"$SWEEP/theano/$RUN"'))
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    os.makedirs(os.path.join(sweep_dir, "slurm"), exist_ok=True)
    return path


def active_jobs(sweep):
    """Job ids of this sweep's earlier submissions that Slurm still holds."""
    active = []
    for job in sweep.get("jobs", []):
        result = subprocess.run(["squeue", "-h", "-j", str(job["id"]), "-o", "%i"],
                                capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            active.append(job["id"])
    return active


def submit(args):
    sweep_dir, sweep = resolve_sweep(args)
    pending = [i for i, task in enumerate(sweep["tasks"])
               if run_state(run_dir(sweep_dir, task)) != "finished"]
    print("%s: %d runs, %d finished" % (sweep_dir, len(sweep["tasks"]),
                                         len(sweep["tasks"]) - len(pending)))
    if not pending:
        print("nothing to submit; the table: python sweep/table.py report %s" % sweep_dir)
        return 0
    limit = slurm_seconds(args.time) if args.time else None
    if limit is not None and limit <= args.signal_before + 60:
        raise SweepError("--time %s leaves no time to train before the warning %d s ahead "
                         "of it (Slurm may send it 60 s early): raise --time or lower "
                         "--signal-before" % (args.time, args.signal_before))
    if not args.dry_run and not shutil.which("sbatch"):
        raise SweepError("sbatch not found: on a machine without Slurm use "
                         "`python sweep/table.py run %s`, or --dry-run to write the "
                         "script only" % sweep_dir)
    if not args.dry_run:
        active = active_jobs(sweep)
        if active:
            raise SweepError("job %s of this sweep is still queued or running; its tasks "
                             "would run twice: wait for it, or scancel it first"
                             % ", ".join(map(str, active)))
    script = write_script(args, sweep_dir, sweep, pending)
    if args.dry_run:
        print("wrote %s (array %s); submit it with: sbatch %s"
              % (script, array_spec(pending), script))
        return 0
    result = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True)
    if result.returncode != 0:
        raise SweepError("sbatch failed: %s" % (result.stderr.strip() or result.stdout.strip()))
    job = result.stdout.strip().split(";")[0]
    sweep.setdefault("jobs", []).append({
        "id": int(job) if job.isdigit() else job, "array": array_spec(pending),
        "submitted": datetime.datetime.now().isoformat(timespec="seconds")})
    write_json(os.path.join(sweep_dir, SWEEP_FILE), sweep)
    print("submitted job array %s (tasks %s) from %s; logs: %s/slurm/%s_<task>.out"
          % (job, array_spec(pending), script, sweep_dir, job))
    print("squeue -j %s shows it; the table: python sweep/table.py report %s"
          % (job, sweep_dir))
    return 0


# =============================================================================
# One machine


def run_child(command):
    """Run `command` in a session of its own; SIGINT and SIGTERM that reach
    this program are passed on to it once each (train_nn.py saves on the
    first and stops at once on the second). Returns its exit status."""
    child = subprocess.Popen(command, cwd=PROJECT_DIR, start_new_session=True)

    def forward(signum, frame):
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_local(args):
    sweep_dir, sweep = resolve_sweep(args)
    python = args.python
    tasks = sweep["tasks"]
    failed = []
    for i, task in enumerate(tasks):
        arguments = train_arguments(sweep_dir, sweep, task)
        if arguments is None:
            print("[%d/%d] %s: finished" % (i + 1, len(tasks), task["name"]), flush=True)
            continue
        print("[%d/%d] %s: python train_nn.py %s" % (i + 1, len(tasks), task["name"],
                                                    bash_words(arguments)), flush=True)
        status = run_child([python, TRAIN] + arguments)
        if status in INTERRUPTED:
            print("stopped during %s; continue the sweep with: python sweep/table.py run %s"
                  % (task["name"], sweep_dir), flush=True)
            return status
        if status != 0:
            failed.append(task["name"])
            print("%s failed (exit status %d); going on with the next run"
                  % (task["name"], status), flush=True)
    if failed:
        print("%d of %d runs failed: %s" % (len(failed), len(tasks), ", ".join(failed)))
        return 1
    print("all %d runs finished; the table: python sweep/table.py report %s"
          % (len(tasks), sweep_dir))
    return 0


# =============================================================================
# The report


def overrides_of(words):
    """train_nn.py arguments other than the network, the row's identity
    (dataset, recipe, dropout), the seed and file locations: `--epochs 3`."""
    kept, i = [], 0
    while i < len(words):
        if words[i].startswith("--"):
            key, equals, value = words[i][2:].partition("=")
            if not equals:   # --key value
                value = words[i + 1] if i + 1 < len(words) else ""
                i += 1
            if key not in NOT_OVERRIDES:
                kept.append("--%s %s" % (key, value))
        i += 1   # the network's words are skipped
    return " ".join(kept)


def read_csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(text):
    return float(text) if text not in (None, "") else None


def read_checkpoint_progress(path):
    """(epoch, iteration in epoch) of a checkpoint, or None."""
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as arrays:
            progress = json.loads(str(arrays["progress"]))
        return progress["epoch"], progress["iteration_in_epoch"]
    except (OSError, KeyError, ValueError):
        return None


BEST_LINE = re.compile(r"best validation error ([\d.]+) % at epoch (\d+); its test error: "
                       r"([\d.]+)%")


def best_on_validation(history, folder):
    """(epoch, validation error, its test error) of the best validation epoch:
    the first minimum of the log's validation error (as train_nn.py keeps it),
    its test error from the log or else from output.log."""
    best = None
    for row in history:
        if row["val_error"] is not None and (best is None or row["val_error"] < best["val_error"]):
            best = row
    if best is None:
        return None
    test = best["test_error"]
    if test is None and os.path.isfile(os.path.join(folder, "output.log")):
        with open(os.path.join(folder, "output.log")) as f:
            found = BEST_LINE.findall(f.read())
        if found:
            test = float(found[-1][2])
    return best["epoch"], best["val_error"], test


def read_run(folder):
    """What the report needs from a run folder (None if it holds no run)."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        info, recipe = config["network"], config["recipe"]
    except (OSError, ValueError, KeyError):
        return None
    history = []
    if os.path.isfile(os.path.join(folder, "log.csv")):
        for row in read_csv_rows(os.path.join(folder, "log.csv")):
            history.append({"epoch": int(row["epoch"]), "val_error": number(row["val_error"]),
                            "test_error": number(row["test_error"])})
    network = (info["variant"], info["depth"], info["width"], info.get("unit", DEFAULT_UNIT),
               info.get("shortcut", IDENTITY))
    words = shlex.split(config.get("command", ""))[2:]
    epochs = recipe["epochs"]
    done = history[-1]["epoch"] if history else 0
    finished = (done >= epochs and history[-1]["test_error"] is not None and
                os.path.isfile(os.path.join(folder, "weights_final.npz")))
    tested = [(row["epoch"], row["test_error"]) for row in history
              if row["test_error"] is not None]
    display = network_display(*network)
    if info.get("arch", "paper") != "paper":
        display += " [%s graph]" % info["arch"]
    return {
        "folder": folder, "name": os.path.basename(os.path.normpath(folder)),
        "network": network, "arch": info.get("arch", "paper"), "display": display,
        "dataset": info["dataset"], "recipe": recipe["name"],
        "dropout": float(recipe.get("dropout", info.get("dropout", 0.0))),
        "seed": config.get("seed"), "overrides": overrides_of(words),
        "validation": bool(recipe.get("val_size")), "epochs": epochs, "done": done,
        "finished": finished, "final": history[-1]["test_error"] if finished else None,
        "last_test": tested[-1] if tested else None, "curve": tested,
        "best": best_on_validation(history, folder) if finished else None,
        "checkpoint": (None if finished else
                       read_checkpoint_progress(os.path.join(folder, "checkpoint.npz"))),
    }


def not_started(sweep_dir, task, common):
    """A sweep task without a run folder yet, as an unfinished run."""
    # (a sweep.json written before units and shortcuts has (variant, n, k))
    network = tuple(task["network"]) + (DEFAULT_UNIT, IDENTITY)[len(task["network"]) - 3:]
    recipe = task["recipe"]
    if recipe == "paper":
        recipe = "paper-wrn" if network[0] == "wide" else "paper-preresnet"
    return {"folder": run_dir(sweep_dir, task), "name": task["name"], "network": network,
            "arch": "paper", "display": network_display(*network), "dataset": task["dataset"],
            "recipe": recipe, "dropout": float(task["dropout"]), "seed": task["seed"],
            "overrides": overrides_of(task["args"] + common), "validation": recipe == "seed",
            "epochs": None, "done": 0, "finished": False, "final": None, "last_test": None,
            "curve": [], "best": None, "checkpoint": None}


def collect_runs(paths):
    """Every run folder under the given folders (a folder holding config.json
    is a run), and the tasks of any sweep among them that have no folder yet."""
    runs, seen = [], set()
    for path in paths:
        for root, folders, files in os.walk(path):
            folders[:] = sorted(f for f in folders if f not in ("report", "slurm", "theano"))
            if "config.json" in files:
                run = read_run(root)
                if run:
                    runs.append(run)
                    seen.add(os.path.realpath(root))
                folders[:] = []
        sweep_file = os.path.join(path, SWEEP_FILE)
        if os.path.isfile(sweep_file):
            with open(sweep_file) as f:
                sweep = json.load(f)
            for task in sweep["tasks"]:
                folder = run_dir(os.path.abspath(path), task)
                if os.path.realpath(folder) not in seen:
                    runs.append(not_started(os.path.abspath(path), task, sweep["common_args"]))
    return runs


def row_key(run):
    return (run["network"], run["arch"], run["dataset"], run["recipe"], run["dropout"],
            run["overrides"])


def row_order(key):
    network, arch, dataset, recipe, dropout, overrides = key
    return (DATASETS.index(dataset) if dataset in DATASETS else 9, network[0] == "wide",
            layers(network[0], network[1]) * 100 + network[2],
            list(UNIT_WORDS).index(network[3]) if network[3] in UNIT_WORDS else 9, network[4],
            arch, recipe, dropout, overrides)


def summarise(runs, published):
    """One row per (network, dataset, recipe, dropout, overrides)."""
    groups = {}
    for run in runs:
        groups.setdefault(row_key(run), []).append(run)
    rows = []
    for key in sorted(groups, key=row_order):
        members = sorted(groups[key], key=lambda r: (r["seed"] is None, r["seed"], r["name"]))
        finals = [r["final"] for r in members if r["finished"]]
        bests = [r["best"][2] for r in members if r["best"] and r["best"][2] is not None]
        ref = published_row(published, key[0], key[2], key[4], key[3]) \
            if key[1] == "paper" else None
        row = {"key": key, "runs": members, "network": members[0]["display"],
               "dataset": key[2], "recipe": key[3], "dropout": key[4], "overrides": key[5],
               "finished": len(finals), "unfinished": len(members) - len(finals),
               "median": statistics.median(finals) if finals else None,
               "mean": statistics.mean(finals) if finals else None,
               "std": statistics.stdev(finals) if len(finals) > 1 else None,
               "min": min(finals) if finals else None, "max": max(finals) if finals else None,
               "best_val_median": statistics.median(bests) if bests else None,
               "best_val_runs": len(bests),
               "validation": any(r["validation"] for r in members),
               "paper": ref["paper"] if ref else None,
               "paper_source": ref["paper_source"] if ref else "",
               "old_repository": ref["old_repository"] if ref else None,
               "old_repository_note": ref["old_repository_note"] if ref else ""}
        if row["median"] is not None and row["paper"] not in (None, FAILED):
            row["difference"] = row["median"] - row["paper"]
            row["uncertainty"] = (MEDIAN_SE * row["std"] / math.sqrt(len(finals))
                                  if row["std"] is not None else None)
        else:
            row["difference"] = row["uncertainty"] = None
        rows.append(row)
    return rows


def fmt(value, digits=2, signed=False):
    if value is None:
        return "-"
    return ("%+.*f" if signed else "%.*f") % (digits, value)


DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

CSV_COLUMNS = ["network", "dataset", "recipe", "dropout", "overrides", "finished",
               "unfinished", "median", "mean", "std", "min", "max", "best_val_median",
               "best_val_runs", "paper", "old_repository", "difference", "uncertainty",
               "paper_source", "old_repository_note"]
RUN_COLUMNS = ["run", "network", "dataset", "recipe", "dropout", "overrides", "seed", "status",
               "epochs_done", "epochs", "final_test_error", "last_tested_epoch",
               "last_test_error", "best_val_epoch", "best_val_error", "best_val_test_error",
               "checkpoint_epoch", "checkpoint_iteration", "folder"]


def markdown(rows, title):
    lines = ["# %s" % title, "",
             "Test error (%%) of the final epoch, over the finished runs of each row; "
             "written by `sweep/table.py report` on %s."
             % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "",
             "| network | dataset | recipe | dropout | runs | median | mean ± std | "
             "best-on-val. | paper | old repository | median − paper |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes = []

    def note(text):
        if text not in notes:
            notes.append(text)
        return "[%d]" % (notes.index(text) + 1)

    for row in rows:
        recipe = row["recipe"] + (" (%s)" % row["overrides"] if row["overrides"] else "")
        runs_text = "%d" % row["finished"] + (" (+%d unfinished)" % row["unfinished"]
                                              if row["unfinished"] else "")
        spread = ("%s ± %s" % (fmt(row["mean"]), fmt(row["std"])) if row["std"] is not None
                  else fmt(row["mean"]))
        best = (fmt(row["best_val_median"]) + (" (n=%d)" % row["best_val_runs"]
                                               if row["best_val_runs"] != row["finished"]
                                               else "")) if row["validation"] else "n/a"
        paper = "fail (> 20)" if row["paper"] == FAILED else fmt(row["paper"])
        if row["paper"] is not None:
            paper += " " + note("paper: " + row["paper_source"])
        old = fmt(row["old_repository"])
        if row["old_repository"] is not None:
            old += " " + note("old repository: " + row["old_repository_note"])
        difference = fmt(row["difference"], signed=True)
        if row["uncertainty"] is not None:
            difference += " ± %s" % fmt(row["uncertainty"])
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row["network"], DATASET_NAMES.get(row["dataset"], row["dataset"]), recipe,
            format_dropout(row["dropout"]), runs_text, fmt(row["median"]), spread, best,
            paper, old, difference))
    lines += ["", "runs: finished runs (unfinished ones are listed below, never counted); "
              "std: sample standard deviation; best-on-val.: median test error of the "
              "best-on-validation weights (recipes with a validation split); median − paper "
              "± sqrt(pi/2) x std / sqrt(n), the standard error of a median of n normal "
              "samples (the paper's own run-to-run spread is not included)."]
    if notes:
        lines += [""] + ["%d. %s" % (i + 1, text) for i, text in enumerate(notes)]
    unfinished = [run for row in rows for run in row["runs"] if not run["finished"]]
    if unfinished:
        lines += ["", "## Unfinished runs", "",
                  "| run | epochs done | last test error (epoch) | checkpoint |",
                  "| --- | --- | --- | --- |"]
        for run in unfinished:
            last = ("%s (%d)" % (fmt(run["last_test"][1]), run["last_test"][0])
                    if run["last_test"] else "-")
            if not run["checkpoint"]:
                checkpoint = "none"
            elif run["checkpoint"][1] == 0:
                checkpoint = "end of epoch %d" % run["checkpoint"][0]
            else:
                checkpoint = "epoch %d, iteration %d" % (run["checkpoint"][0] + 1,
                                                         run["checkpoint"][1])
            total = "%d / %s" % (run["done"], run["epochs"] if run["epochs"] else "?")
            lines.append("| %s | %s | %s | %s |" % (run["name"], total, last, checkpoint))
    return "\n".join(lines) + "\n"


def csv_text(columns, records):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if record.get(k) is None else record[k]) for k in columns})
    return buffer.getvalue()


def run_records(rows):
    for row in rows:
        for run in row["runs"]:
            status = "finished" if run["finished"] else (
                "not started" if run["epochs"] is None else "unfinished")
            yield {"run": run["name"], "network": row["network"], "dataset": row["dataset"],
                   "recipe": row["recipe"], "dropout": format_dropout(row["dropout"]),
                   "overrides": row["overrides"], "seed": run["seed"], "status": status,
                   "epochs_done": run["done"], "epochs": run["epochs"],
                   "final_test_error": run["final"],
                   "last_tested_epoch": run["last_test"][0] if run["last_test"] else None,
                   "last_test_error": run["last_test"][1] if run["last_test"] else None,
                   "best_val_epoch": run["best"][0] if run["best"] else None,
                   "best_val_error": run["best"][1] if run["best"] else None,
                   "best_val_test_error": run["best"][2] if run["best"] else None,
                   "checkpoint_epoch": run["checkpoint"][0] + 1 if run["checkpoint"] else None,
                   "checkpoint_iteration": run["checkpoint"][1] if run["checkpoint"] else None,
                   "folder": run["folder"]}


def plot(rows, path):
    """The test-error curves of every run, one panel per row, with the
    paper's (and the old repository's) number as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    columns = min(3, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5.2 * columns, 3.8 * lines),
                             squeeze=False)
    for ax, row in zip(axes.flat, rows):
        for run in row["runs"]:
            if not run["curve"]:
                continue
            epochs, errors = zip(*run["curve"])
            label = "seed %s%s" % (run["seed"], "" if run["finished"] else " (unfinished)")
            ax.plot(epochs, errors, linestyle="-" if run["finished"] else "--",
                    marker="." if len(epochs) < 20 else None, linewidth=1, label=label)
        if row["paper"] not in (None, FAILED):
            ax.axhline(row["paper"], color="k", linestyle="--", linewidth=1,
                       label="paper %.2f %%" % row["paper"])
        if row["old_repository"] is not None:
            ax.axhline(row["old_repository"], color="grey", linestyle=":", linewidth=1,
                       label="old repository %.2f %%" % row["old_repository"])
        if any(run["curve"] for run in row["runs"]):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        title = "%s, %s, %s" % (row["network"], DATASET_NAMES.get(row["dataset"], row["dataset"]),
                                row["recipe"])
        if row["dropout"]:
            title += ", dropout %s" % format_dropout(row["dropout"])
        if row["overrides"]:
            title += "\n" + row["overrides"]
        ax.set_title(title, fontsize=9)
        if not any(run["curve"] for run in row["runs"]):
            ax.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        last = max([run["epochs"] or run["done"] for run in row["runs"]] + [1])
        ax.set_xlim(0, last + (1 if last < 20 else 0))   # the runs' whole length
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args):
    paths = [os.path.abspath(p) for p in args.sweep_dirs]
    for path in paths:
        if not os.path.isdir(path):
            raise SweepError("%s: no such folder" % path)
    runs = collect_runs(paths)
    if not runs:
        raise SweepError("no run folders (with config.json) under %s" % ", ".join(paths))
    rows = summarise(runs, read_published())
    out = os.path.abspath(args.out or os.path.join(paths[0], "report"))
    os.makedirs(out, exist_ok=True)
    title = "Test error on CIFAR: %s" % ", ".join(os.path.basename(p) for p in paths)
    text = markdown(rows, title)
    files = {"table.md": text,
             "table.csv": csv_text(CSV_COLUMNS, [dict(row, dropout=format_dropout(row["dropout"]))
                                                 for row in rows]),
             "runs.csv": csv_text(RUN_COLUMNS, run_records(rows))}
    for name, content in files.items():
        with open(os.path.join(out, name), "w") as f:
            f.write(content)
    plot(rows, os.path.join(out, "curves.png"))
    print(text)
    print("wrote %s (table.md, table.csv, runs.csv, curves.png)" % out)
    return 0


# =============================================================================
# Command line


def add_selection(parser):
    parser.add_argument("sweep_dir", nargs="?", default=DEFAULT_SWEEP, metavar="SWEEP_DIR",
                        help="the sweep's folder (default: runs/table)")
    group = parser.add_argument_group(
        "the runs (default: the papers' table - PreResNet-110/164, WRN-16-4, WRN-28-10 on "
        "the datasets and dropouts the papers report - with seeds 0-4; a folder that "
        "holds a sweep keeps its runs and gets any new ones added)")
    group.add_argument("--table", metavar="TABLE",
                       help="the rows of a published table (sweep/published.csv): papers "
                            "(default), he2016-units (He et al. 2016 Table 2: the residual "
                            "units), he2016-shortcuts (its Table 1), he2016-1001 "
                            "(ResNet-1001), he2015 (He et al. 2015 Table 6)")
    group.add_argument("--networks", metavar="LIST",
                       help="comma-separated: paper names (PreResNet-110,WRN-16-4,ResNet-20) "
                            "or train_nn.py's TYPE DEPTH [WIDTH] [--unit U] [--shortcut S] "
                            "(\"normal 18,wide 2 4\")")
    group.add_argument("--dataset", "--datasets", dest="datasets", metavar="LIST",
                       type=lambda text: [d.strip() for d in text.split(",")],
                       help="cifar10, cifar100 or both (default: the papers')")
    group.add_argument("--dropout", "--dropouts", dest="dropouts", type=number_list,
                       metavar="LIST",
                       help="e.g. 0,0.3 (default: the papers'; wide networks only)")
    group.add_argument("--recipe", "--recipes", dest="recipes", metavar="LIST",
                       type=lambda text: [r.strip() for r in text.split(",")],
                       help="paper, seed (the old repository's), he2015, he2015-warmup, "
                            "resnet-1k-layers, or several: paper,seed (default: those the "
                            "papers report for each network)")
    group.add_argument("--seeds", type=seed_list, metavar="N|LIST",
                       help="5: seeds 0-4 (default); 0,3,7: those seeds")
    group.add_argument("--epochs", type=int, help="train_nn.py --epochs for every run")
    group.add_argument("--limit", type=int, metavar="N",
                       help="train_nn.py --limit for every run (smoke sweeps)")
    group.add_argument("--train-args", metavar="ARGS",
                       help="more train_nn.py arguments for every run, e.g. "
                            "\"--test-every 5\"")
    group.add_argument("--data-dir", metavar="D",
                       help="train_nn.py --data-dir (default: the project's data/)")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python that runs train_nn.py (default: this one, %s)"
                             % sys.executable)


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:4]))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit_parser = commands.add_parser(
        "submit", help="write the job-array script and submit it to Slurm",
        description="Write SWEEP_DIR/%s (one array task per unfinished run) and submit it "
                    "with sbatch." % SCRIPT_NAME)
    add_selection(submit_parser)
    slurm = submit_parser.add_argument_group(
        "Slurm (each becomes an #SBATCH line of the script)")
    slurm.add_argument("--partition", "-p")
    slurm.add_argument("--time", "-t", help="per task, e.g. 24:00:00; a task that reaches "
                                             "it saves, is requeued and continues")
    slurm.add_argument("--gres", help="e.g. gpu:1")
    slurm.add_argument("--cpus-per-task", "-c", type=int,
                       help="CPUs of each run (also its OMP_NUM_THREADS)")
    slurm.add_argument("--mem")
    slurm.add_argument("--account", "-A")
    slurm.add_argument("--qos")
    slurm.add_argument("--constraint", "-C")
    slurm.add_argument("--job-name", "-J", default="preresnet-table")
    slurm.add_argument("--max-parallel", type=int, metavar="K",
                       help="at most K tasks at once (--array=...%%K)")
    slurm.add_argument("--signal-before", type=int, default=600, metavar="SECONDS",
                       help="USR1 this long before the time limit (default 600: a step, "
                            "an evaluation and the save must fit; Slurm may send it up "
                            "to 60 s earlier)")
    slurm.add_argument("--sbatch-option", action="append", metavar="OPTION",
                       help="any other sbatch option, e.g. --sbatch-option=--exclusive "
                            "(repeatable)")
    slurm.add_argument("--container", metavar="IMAGE.sif",
                       help="run train_nn.py inside this Apptainer/Singularity image "
                            "(built from the project's Docker image: apptainer exec "
                            "[--nv] IMAGE python /app/train_nn.py); needs --data-dir")
    slurm.add_argument("--shared-compile-cache", action="store_true",
                       help="one Theano compile cache for all runs (default: one per run; "
                            "Theano's cache is not safe for runs that start together)")
    slurm.add_argument("--dry-run", action="store_true",
                       help="write the script and sweep.json, do not submit")

    run_parser = commands.add_parser(
        "run", help="train the same runs on this machine, one after another",
        description="Train the sweep's unfinished runs here, one after another; run it "
                    "again to continue after an interruption.")
    add_selection(run_parser)

    report_parser = commands.add_parser(
        "report", help="the table (Markdown, CSV) and the curves of the runs",
        description="Read every run folder under SWEEP_DIR (or any folders of "
                    "train_nn.py runs) and write table.md, table.csv, runs.csv and "
                    "curves.png.")
    report_parser.add_argument("sweep_dirs", nargs="*", default=[DEFAULT_SWEEP],
                               metavar="SWEEP_DIR",
                               help="sweep folders or folders of run folders "
                                    "(default: runs/table)")
    report_parser.add_argument("--out", metavar="DIR",
                               help="where the report goes (default: SWEEP_DIR/report)")
    return parser


def check_selection(parser, args):
    for dataset in args.datasets or []:
        if dataset not in DATASETS:
            parser.error("--dataset %s: choose from %s" % (dataset, ", ".join(DATASETS)))
    for recipe in args.recipes or []:
        if recipe not in RECIPES:
            parser.error("--recipe %s: choose from %s" % (recipe, ", ".join(RECIPES)))
    for flag in ("epochs", "limit", "max_parallel", "cpus_per_task"):
        value = getattr(args, flag, None)
        if value is not None and value < (0 if flag == "limit" else 1):
            parser.error("--%s must be at least %d" % (flag.replace("_", "-"),
                                                      0 if flag == "limit" else 1))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            return report(args)
        check_selection(parser, args)
        if args.command == "submit":
            return submit(args)
        return run_local(args)
    except SweepError as error:
        print("error: %s" % error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
