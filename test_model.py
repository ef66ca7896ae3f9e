"""Evaluate trained weights on the CIFAR test set.

    python test_model.py --run runs/preresnet110-paper-preresnet-20261128-170000
    python test_model.py --weights runs/.../weights_final.npz
    python test_model.py normal 18                  # data/weights/preresnet110/*.npz
    python test_model.py wide 2 4 --dataset cifar100
    python test_model.py normal 18 --weights resnet110_fullpreactivation_638.pklz
    python test_model.py bottleneck 18 --weights resnet164_fullpreactivation.pklz \\
        --pixel-mean pixel_mean.npy                 # the old repository's weights

Prints which weights it evaluates (their run, recipe and epochs), the test
error, the per-class accuracy and the confusion matrix, and writes them as
JSON (next to the weights unless --out says otherwise). A run folder is
evaluated with its final weights, or, for an unfinished run, its last
checkpoint, on the data folder the run used (unless --data-dir says
otherwise); VARIANT DEPTH [WIDTH] finds the weights a full-recipe run
published in <data folder>/weights/<network>/. Weights files of this project
carry their network and input normalisation. The old repository's .pklz
files do not, so the network is
given as VARIANT DEPTH [WIDTH]; each was trained with its own version of that
repository's graph: the graph is chosen by the file's parameter list, and by
its published name where two graphs have the same list (--arch chooses one),
and the inputs are prepared as that version's code did (the mean image from
--pixel-mean, its data/pixel_mean.npy, or computed from the training set; or
no mean, divided by 255, for the graph of 2016-04).
"""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

import engine
from engine import loop
import models
import utils
from utils import UserError


def build_parser():
    parser = models.UsageParser(usage=USAGE, description=__doc__.split("\n\n")[0],
                         epilog="examples:\n" + __doc__.split("\n\n")[1],
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    models.add_network_arguments(parser, optional=True)
    parser.add_argument("--run", metavar="RUN_DIR",
                        help="evaluate a run folder of train_nn.py: its final weights, "
                             "or the last checkpoint of an unfinished run")
    parser.add_argument("--weights", metavar="FILE",
                        help="a weights file (.npz of this project, a checkpoint.npz, or "
                             "the old repository's .pklz); default: the one in "
                             "data/weights/<network>/")
    parser.add_argument("--data-dir", metavar="D",
                        help="folder holding cifar-10-batches-py/ (default: the run's for "
                             "weights in a run folder, else data/; downloaded there when "
                             "missing)")
    parser.add_argument("--batch-size", type=int, default=500,
                        help="images per evaluation batch (default: 500)")
    parser.add_argument("--pixel-mean", metavar="NPY",
                        help="mean image for .pklz weights (the old data/pixel_mean.npy; "
                             "the graph of 2016-04's code subtracted none)")
    parser.add_argument("--out", help="JSON report (default: next to the weights)")
    return parser


USAGE = ("test_model.py VARIANT DEPTH [WIDTH] [--weights FILE] [options]\n"
         "       test_model.py --run RUN_DIR | --weights FILE.npz [options]")


def run_weights(run_dir):
    """The weights to evaluate in a run folder: the ones its recipe publishes
    (final or best-on-validation) when it finished, else its last checkpoint."""
    if not os.path.isdir(run_dir):
        raise UserError("--run %s: no such folder" % run_dir)
    final = os.path.join(run_dir, "weights_final.npz")
    best = os.path.join(run_dir, "weights_best.npz")
    checkpoint = os.path.join(run_dir, "checkpoint.npz")
    if os.path.isfile(final):
        recipe = (run_config(run_dir)[0] or {}).get("recipe", {})
        if recipe.get("publish") == "best_val" and os.path.isfile(best):
            return best
        return final
    if os.path.isfile(checkpoint):
        return checkpoint
    raise UserError("%s holds neither weights_final.npz nor checkpoint.npz: not a run "
                    "folder of train_nn.py, or the run stopped before its first epoch ended"
                    % run_dir)


def run_config(run_dir):
    """A run's settings and where they were read: its checkpoint's (which a
    ``--resume --data-dir`` updates), else its config.json; (None, None)."""
    checkpoint = os.path.join(run_dir, "checkpoint.npz")
    if os.path.isfile(checkpoint):
        try:
            return utils.read_npz_record(checkpoint, "config"), "its checkpoint"
        except UserError:
            pass  # damaged: said when (if) the checkpoint itself is evaluated
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            return json.load(f), "config.json"
    except (OSError, ValueError):
        return None, None


def run_data_dir(run_dir):
    """The data folder a run used, as ``(folder, where it was read)``, or
    (None, None) when the run does not say."""
    config, source = run_config(run_dir)
    folder = (config or {}).get("data_dir")
    if not folder:
        return None, None
    if not os.path.isdir(folder):
        raise UserError("%s, the data folder %s used, no longer exists: give the folder "
                        "that holds its data with --data-dir" % (folder, run_dir))
    return folder, source


def weights_advice(path):
    """What to do about a damaged weights file ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(path) == "checkpoint.npz":
        return utils.damaged_checkpoint_advice(folder)
    checkpoint = os.path.join(folder, "checkpoint.npz")
    if os.path.isfile(checkpoint):
        return ("copy it again from where it came, or evaluate the last weights of its run: "
                "--weights %s" % checkpoint)
    return "copy it again from where it came"


def default_weights(args, info):
    """The one weights file in data/weights/<network>/, or UserError saying
    how to make one (the full train_nn.py command) or which to choose."""
    folder = utils.published_weights_dir(args.data_dir, info["name"])
    found = sorted(f for f in (os.listdir(folder) if os.path.isdir(folder) else [])
                   if f.endswith(".npz"))
    if len(found) == 1:
        return os.path.join(folder, found[0])
    if found:
        raise UserError("%s holds weights of %d runs (%s): choose one with --weights"
                        % (folder, len(found), ", ".join(found)))
    command = "python train_nn.py %s %d%s" % (args.variant, args.depth,
                                              " %d" % args.width if args.width else "")
    for flag, value in (("--arch", args.arch), ("--dataset", args.dataset),
                        ("--unit", args.unit), ("--shortcut", args.shortcut),
                        ("--data-dir", args.data_dir)):
        if value:
            command += " %s %s" % (flag, value)
    raise UserError("no weights of %s in %s: train them first (%s) or pass --weights FILE "
                    "or --run RUN_DIR" % (info["display"], folder, command))


def describe(path, weights):
    """``PATH (run R, recipe paper-preresnet, epoch 164 of 164, seed 0, commit abc1234)``."""
    run = weights["records"].get("run") if weights else None
    if not run:
        return path
    parts = ["run %s" % run["run_dir"], "recipe %s%s" % (
        run["recipe"], "" if run.get("full_recipe") else " (shortened: %s)"
        % ", ".join(run.get("changes", []))),
        "epoch %d of %d%s" % (run["epochs"], run["of_epochs"],
                              "" if run["epochs"] >= run["of_epochs"] else ", unfinished"),
        "seed %s" % run["seed"]]
    code = (run.get("source") or {}).get("code")
    if code:
        parts.append("commit %s%s" % (code["commit"][:10], " (modified)" if code["modified"]
                                      else ""))
    return "%s (%s)" % (path, ", ".join(parts))


def choose_old_graph(parser, args, shapes, num_classes):
    """The old repository's graph to load a .pklz file into, and why.

    Every old graph of VARIANT DEPTH [WIDTH] whose parameter list has the
    file's shapes (``shapes``) is a candidate. --arch picks one (with a warning
    where the file's published name says another); otherwise the published
    name decides (``models.OLD_WEIGHTS_FILES``, for the network it was published
    for), else the only candidate. Several candidates and no name: refused
    (they compute different functions, exit 2), as is a file that fits none
    (exit 1).
    """
    path, name = args.weights, os.path.basename(args.weights)
    network = (args.variant, args.depth, args.width or 1)
    label = " ".join(str(v) for v in network[:2] + network[2:] * (args.width is not None))
    candidates = models.old_graphs(args.variant)
    if args.arch is not None and args.arch not in candidates:
        parser.error("%s is an old-repository weights file: it fits the old repository's "
                     "graphs of %s (%s), not --arch %s; leave --arch out to choose by the "
                     "file" % (path, args.variant, ", ".join(candidates), args.arch))
    misfit, counts = {}, {}
    for arch in candidates:
        expected = models.parameter_shapes(*network, num_classes=num_classes, arch=arch)
        counts[arch] = len(expected)
        try:
            utils.check_parameters(expected, shapes, path, "the old repository",
                                   "--arch %s %s" % (arch, label))
            misfit[arch] = None
        except UserError as error:
            misfit[arch] = str(error)
    fits = [arch for arch in candidates if misfit[arch] is None]
    published = models.OLD_WEIGHTS_FILES.get(name)
    if published and published["network"] != network:
        variant, depth, width = published["network"]
        command = "%s %d%s" % (variant, depth, " %d" % width if variant == "wide" else "")
        if not fits:
            parser.error("%s is the old repository's %s file: run test_model.py %s "
                         "--weights %s" % (name, command, command, path))
        print("note: %s is the name of the old repository's %s file; this is a %s file, "
              "its name says nothing about its graph" % (name, command, label))
        published = None
    if args.arch is not None:
        if misfit[args.arch] is None:
            if published and published["arch"] != args.arch:
                print("warning: %s was trained with graph %s (the old repository's "
                      "models.py of %s); %s computes a different function"
                      % (name, published["arch"], published["commit"], args.arch))
            return args.arch, "--arch"
        hint = ("it fits --arch %s" % " or --arch ".join(fits) if fits else
                "it fits no old graph of %s: check VARIANT DEPTH [WIDTH]" % label)
        raise UserError("%s; %s" % (misfit[args.arch], hint))
    if published and published["arch"] in fits:
        return published["arch"], ("the graph %s was published with: the old repository's "
                                   "models.py of %s" % (name, published["commit"]))
    if published and fits:
        print("warning: %s has the name of the old repository's file for graph %s, but its "
              "parameter list does not fit that graph" % (name, published["arch"]))
    if len(fits) == 1:
        return fits[0], ("the only old graph of %s whose parameter list (%d arrays) the "
                         "file fits" % (label, len(shapes)))
    if fits:
        parser.error("%s fits several old graphs of %s that compute different "
                     "functions (%s) and its name does not say which: choose one with "
                     "--arch" % (path, label, ", ".join(fits)))
    raise UserError("%s (%d parameter arrays) fits no old graph of %s (%s): check VARIANT "
                    "DEPTH [WIDTH]" % (path, len(shapes), label, "; ".join(
                        "%s has %d" % (arch, counts[arch]) for arch in candidates)))


def old_input_stats(parser, args, info, data_dir):
    """The normalisation the old code applied before the graph ``info`` was
    trained (its ``old_inputs``)."""
    kind = models.ARCHITECTURES[info["arch"]]["old_inputs"]
    if kind == "divide_by_255":
        if args.pixel_mean:
            print("note: --pixel-mean is not used: the code of graph %s divided the images "
                  "by 255 and subtracted no mean" % info["arch"])
        return {"kind": kind, "mean": np.zeros((1, 1, 1), np.float32),
                "std": np.full((1, 1, 1), 255, np.float32)}
    if args.pixel_mean:
        mean = utils.read_npy(args.pixel_mean)
        if mean.shape != utils.IMAGE_SHAPE:
            raise UserError("%s: a mean image has shape %s, found %s"
                            % (args.pixel_mean, utils.IMAGE_SHAPE, mean.shape))
        return {"kind": "pixel_mean", "mean": mean.astype(np.float32),
                "std": np.ones((1, 1, 1), np.float32)}
    print("no --pixel-mean: using the mean image of all training images (the old "
          "code used its 45,000-image training split's)")
    data = utils.load_dataset(info["dataset"], data_dir)
    return utils.normalisation_stats("pixel_mean", data["train_x"])


def stem_input_check(values, images, stats):
    """How well inputs prepared with ``stats`` fit the first batch norm of an
    old .pklz file, or None where it cannot tell.

    Every old graph starts with a 3x3 convolution (16 kernels, no bias) and a
    batch norm whose running mean and inverse standard deviation the file holds
    as its arrays 3 and 4. Returns the median over channels of ``spread`` (the
    convolution's output standard deviation on ``images`` times the stored
    inverse standard deviation: about 1 when the images are prepared as in
    training, about 255 or 1/255 when they are scaled differently) and
    ``shift`` (the output mean's distance from the stored mean, in stored
    standard deviations). None for files whose stored statistics are still the
    initial ones (mean 0, inverse standard deviation 1): nothing to compare.
    """
    if len(values) < 5 or values[0].shape[1:] != (3, 3, 3):
        return None
    kernels, mean, inv_std = (np.asarray(values[i], np.float64) for i in (0, 3, 4))
    if mean.shape != inv_std.shape or mean.shape != kernels.shape[:1]:
        return None
    if not np.any(mean) and np.all(inv_std == 1):
        return None
    x = np.pad(utils.normalise(images, stats).astype(np.float64),
               ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
    out = np.tensordot(windows, kernels, axes=([1, 4, 5], [1, 2, 3]))  # (N, 32, 32, 16)
    out = out.reshape(-1, kernels.shape[0])
    spread = np.median(out.std(axis=0) * inv_std)
    shift = np.median(np.abs(out.mean(axis=0) - mean) * inv_std)
    return {"spread": float(spread), "shift": float(shift)}


def report_input_check(old_values, images, stats, old_record):
    """Print how well the prepared inputs fit the .pklz file's first batch norm
    (``stem_input_check``) and keep it in ``old_record``."""
    fit = stem_input_check(old_values, images, stats)
    old_record.update(inputs=stats["kind"], input_check=fit)
    if fit is None:
        print("input check: skipped (the file's first batch norm holds its initial "
              "statistics)")
        return
    good = 1 / 3 < fit["spread"] < 3 and fit["shift"] < 2
    print("%s: on these inputs the first batch norm sees %.3g times the spread it was "
          "trained with, its mean %.2f standard deviations away%s"
          % ("input check" if good else "warning", fit["spread"], fit["shift"],
             "" if good else ": these inputs are not prepared as in training, the test "
             "error will not mean much"))


def load_any_weights(parser, args, net, data_dir, weights=None, old_values=None):
    """Load the weights into ``net`` (``weights``: a file of this project as
    utils.read_weights reads it; ``old_values``: a .pklz file's arrays);
    return their normalisation statistics."""
    if old_values is not None:
        net.set_param_values(old_values, args.weights, "the old repository")
        return old_input_stats(parser, args, net.info, data_dir)
    if args.pixel_mean:
        parser.error("--pixel-mean is for .pklz files; %s carries its own normalisation"
                     % args.weights)
    net.set_param_values(weights["values"], args.weights, weights["network"].get("name", "?"))
    net.info["dropout"] = weights["network"].get("dropout", 0.0)
    return weights["stats"]


def print_report(report, info, weights, paper):
    print("%s on the %s test set (%d images), weights %s"
          % (info["display"], info["dataset"].upper().replace("CIFAR", "CIFAR-"),
             report["count"], weights))
    print("test error: %.2f %%%s" % (report["error"], "  (paper: %s)"
                                     % models.format_paper_error(paper)
                                     if paper is not None else ""))
    names = report["label_names"]
    print("per-class accuracy (%):")
    for name, accuracy in report["per_class_accuracy"].items():
        print("  %-14s %6.2f" % (name, accuracy))
    if len(names) <= 20:
        print("confusion matrix (rows: true class, columns: predicted):")
        print("  %-12s" % "" + "".join("%6s" % n[:5] for n in names))
        for name, row in zip(names, report["confusion"]):
            print("  %-12s" % name[:12] + "".join("%6d" % v for v in row))


def main(argv=None):
    engine.compat.keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.run and args.weights:
        parser.error("--run and --weights both name weights: give one")
    try:
        try:
            engine.compat.check_compiler()
        except engine.compat.MissingCompiler as error:
            raise UserError(str(error))
        if args.run:
            args.weights = run_weights(args.run)
        # Weights in a run folder (--run, or --weights RUN/weights_final.npz)
        # are tested on the data that run used, unless --data-dir says otherwise.
        run_dir = args.run or (os.path.dirname(os.path.abspath(args.weights))
                               if args.weights else None)
        if run_dir and args.data_dir is None and (
                args.run or os.path.isfile(os.path.join(run_dir, "config.json"))):
            args.data_dir, source = run_data_dir(run_dir)
            if args.data_dir:
                print("data: %s (the run's, from %s)" % (args.data_dir, source))
        weights = old_values = old_record = None
        if args.weights and not args.weights.endswith(".pklz"):
            weights = utils.read_weights(args.weights, advice=weights_advice(args.weights))
        elif args.weights:
            old_values = utils.read_old_pklz(args.weights)
        if weights is not None and args.variant is None:
            made_for = weights["network"]
            args.variant, args.depth = made_for.get("variant"), made_for.get("depth")
            args.width = made_for.get("width") if args.variant == "wide" else None
            args.arch = args.arch or made_for.get("arch")
        if weights is not None:
            # The residual unit and shortcut the weights were trained with; units
            # of one block have the same parameter shapes, so a shape check
            # would not tell them apart.
            for flag, key, default in (("--unit", "unit", models.DEFAULT_UNIT),
                                       ("--shortcut", "shortcut", models.IDENTITY)):
                trained = weights["network"].get(key, default)
                given = getattr(args, key)
                if given is not None and models.canonical(key, given) != trained:
                    parser.error("%s holds weights of %s with %s %s, not %s %s"
                                 % (args.weights, weights["network"].get("display", "?"),
                                    key, trained, flag, given))
                setattr(args, key, trained)
        models.check_network_arguments(parser, args)
        dataset = args.dataset or (weights["network"].get("dataset") if weights else None)
        dataset = dataset or "cifar10"
        arch = args.arch or "paper"
        if old_values is not None:
            arch, why = choose_old_graph(parser, args, [v.shape for v in old_values],
                                         utils.DATASETS[dataset]["num_classes"])
            print("using graph %s (%s)" % (arch, why))
            published = models.OLD_WEIGHTS_FILES.get(os.path.basename(args.weights))
            old_record = {"graph": arch, "why": why, "readme_error":
                          published["test_error"] if published else None}
        try:
            info = models.network_info(args.variant, args.depth, args.width or 1, arch,
                                       dataset, unit=args.unit or models.DEFAULT_UNIT,
                                       shortcut=args.shortcut or models.IDENTITY)
        except ValueError as error:
            parser.error(str(error))
        if args.weights is None:
            args.weights = default_weights(args, info)
            weights = utils.read_weights(args.weights)
        data_dir = args.data_dir or utils.DEFAULT_DATA_DIR
        net = models.Network(info)
        stats = load_any_weights(parser, args, net, data_dir, weights, old_values)
        data = utils.load_dataset(info["dataset"], data_dir)
        if old_values is not None:
            report_input_check(old_values, data["test_x"][:256], stats, old_record)
        print("weights: %s" % describe(args.weights, weights), flush=True)
        print("compiling the evaluation function...", flush=True)
        net.compile_predict()
        started = time.time()
        bar = loop.Progress("testing", -(-len(data["test_x"]) // args.batch_size), log=print,
                            every=30)
        try:
            predictions = models.predict_labels(net, data["test_x"], stats, args.batch_size,
                                                on_batch=bar.update)
        finally:
            bar.clear()
        seconds = time.time() - started
        report = models.classification_report(data["test_y"], predictions,
                                              data["label_names"])
        run = (weights or {}).get("records", {}).get("run") or {}
        paper = models.paper_error(info, info.get("dropout", 0.0), run.get("recipe"))
        print_report(report, info, args.weights, paper)
        if old_record and old_record["readme_error"] is not None:
            print("the old repository's README gave %.2f %% for this file"
                  % old_record["readme_error"])
        print("%.1f s, %.0f images/s at batch %d" % (seconds, report["count"] / seconds,
                                                     args.batch_size))
        out = args.out or os.path.splitext(args.weights)[0] + "-test.json"
        utils.write_json(out, dict(
            report, network=info, weights=os.path.abspath(args.weights),
            weights_run=(weights or {}).get("records", {}).get("run"),
            data={"folder": data["folder"], "official": not data["unofficial_files"],
                  "unofficial_files": data["unofficial_files"]},
            old_weights=old_record,
            code=loop.git_state(utils.PROJECT_DIR), paper_error=paper, seconds=seconds,
            batch_size=args.batch_size,
            evaluated=datetime.datetime.now().astimezone().isoformat(timespec="seconds")))
        print("report: %s" % out)
        return 0
    except UserError as error:
        print("error: %s" % error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
