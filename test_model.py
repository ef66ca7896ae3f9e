"""Evaluate trained weights on the CIFAR test set.

    python test_model.py normal 18                  # data/weights/preresnet110/*.npz
    python test_model.py --run runs/preresnet110-paper-preresnet-20261128-170000
    python test_model.py --weights runs/.../weights_final.npz
    python test_model.py wide 2 4 --dataset cifar100
    python test_model.py bottleneck 18 --weights resnet164_fullpreactivation.pklz \
        --pixel-mean pixel_mean.npy                 # the old repository's weights

Prints which weights it evaluates (their run, recipe and epochs), the test
error, the per-class accuracy and the confusion matrix, and writes them as
JSON (next to the weights unless --out says otherwise). A run folder is
evaluated with its final weights, or, for an unfinished run, its last
checkpoint. Weights files of this project carry their network and input
normalisation; the old repository's .pklz files do not, so the network is
given as VARIANT DEPTH [WIDTH] and the mean image is taken from --pixel-mean
(its data/pixel_mean.npy) or computed from the training set.
"""
import argparse
import datetime
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
                        help="folder holding cifar-10-batches-py/ (default: data/; "
                             "downloaded there when missing)")
    parser.add_argument("--batch-size", type=int, default=500,
                        help="images per evaluation batch (default: 500)")
    parser.add_argument("--pixel-mean", metavar="NPY",
                        help="mean image for .pklz weights (the old data/pixel_mean.npy)")
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
        config = utils.read_weights(checkpoint, "checkpoint")["records"].get("config", {}) \
            if os.path.isfile(checkpoint) else {}
        if config.get("recipe", {}).get("publish") == "best_val" and os.path.isfile(best):
            return best
        return final
    if os.path.isfile(checkpoint):
        return checkpoint
    raise UserError("%s holds neither weights_final.npz nor checkpoint.npz: not a run "
                    "folder of train_nn.py, or the run stopped before its first epoch ended"
                    % run_dir)


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


def load_any_weights(parser, args, net, data_dir, weights=None):
    """Load the weights into ``net``; return their normalisation statistics."""
    if args.weights.endswith(".pklz"):
        if net.info["arch"] != "seed":
            parser.error("%s is an old-repository weights file: it fits the old graphs, "
                         "add --arch seed" % args.weights)
        values = utils.read_old_pklz(args.weights)
        net.set_param_values(values, args.weights, "the old repository")
        if args.pixel_mean:
            mean = utils.read_npy(args.pixel_mean)
            if mean.shape != utils.IMAGE_SHAPE:
                raise UserError("%s: a mean image has shape %s, found %s"
                                % (args.pixel_mean, utils.IMAGE_SHAPE, mean.shape))
            return {"kind": "pixel_mean", "mean": mean.astype(np.float32),
                    "std": np.ones((1, 1, 1), np.float32)}
        print("no --pixel-mean: using the mean image of all training images (the old "
              "code used its 45,000-image training split's)")
        data = utils.load_dataset(net.info["dataset"], data_dir)
        return utils.normalisation_stats("pixel_mean", data["train_x"])
    if args.pixel_mean:
        parser.error("--pixel-mean is for .pklz files; %s carries its own normalisation"
                     % args.weights)
    made_for = weights["network"].get("name", "?")
    net.set_param_values(weights["values"], args.weights, made_for)
    net.info["dropout"] = weights["network"].get("dropout", 0.0)
    return weights["stats"]


def print_report(report, info, weights, paper):
    print("%s on the %s test set (%d images), weights %s"
          % (info["display"], info["dataset"].upper().replace("CIFAR", "CIFAR-"),
             report["count"], weights))
    print("test error: %.2f %%%s" % (report["error"], "  (paper: %.2f %%)" % paper
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
        weights = None
        if args.weights and not args.weights.endswith(".pklz"):
            weights = utils.read_weights(args.weights)
        if weights is not None and args.variant is None:
            made_for = weights["network"]
            args.variant, args.depth = made_for.get("variant"), made_for.get("depth")
            args.width = made_for.get("width") if args.variant == "wide" else None
            args.arch = args.arch or made_for.get("arch")
        models.check_network_arguments(parser, args)
        dataset = args.dataset or (weights["network"].get("dataset") if weights else None)
        try:
            info = models.network_info(args.variant, args.depth, args.width or 1,
                                       args.arch or "paper", dataset or "cifar10")
        except ValueError as error:
            parser.error(str(error))
        if args.weights is None:
            args.weights = default_weights(args, info)
            weights = utils.read_weights(args.weights)
        data_dir = args.data_dir or utils.DEFAULT_DATA_DIR
        net = models.Network(info)
        stats = load_any_weights(parser, args, net, data_dir, weights)
        data = utils.load_dataset(info["dataset"], data_dir)
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
        paper = models.paper_error(info, info.get("dropout", 0.0))
        print_report(report, info, args.weights, paper)
        print("%.1f s, %.0f images/s at batch %d" % (seconds, report["count"] / seconds,
                                                     args.batch_size))
        out = args.out or os.path.splitext(args.weights)[0] + "-test.json"
        utils.write_json(out, dict(
            report, network=info, weights=os.path.abspath(args.weights),
            weights_run=(weights or {}).get("records", {}).get("run"),
            data={"folder": data["folder"], "official": not data["unofficial_files"],
                  "unofficial_files": data["unofficial_files"]},
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
