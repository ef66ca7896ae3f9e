"""Evaluate trained weights on the CIFAR test set.

    python test_model.py normal 18                  # data/weights/preresnet110.npz
    python test_model.py bottleneck 18 --weights runs/.../weights_final.npz
    python test_model.py wide 2 4 --dataset cifar100
    python test_model.py normal 18 --arch seed --weights resnet110_fullpreactivation_638.pklz

Prints the test error, the per-class accuracy and the confusion matrix, and
writes them as JSON (next to the weights unless --out says otherwise).
Weights files of this project carry their input normalisation; the old
repository's .pklz files do not, so the mean image is taken from --pixel-mean
(its data/pixel_mean.npy) or computed from the training set.
"""
import argparse
import os
import sys
import time

import numpy as np

import engine
import models
import utils
from utils import UserError


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    models.add_network_arguments(parser)
    parser.add_argument("--weights", help="weights file (.npz of this project, or the old "
                                          "repository's .pklz with --arch seed); default "
                                          "data/weights/<network>.npz")
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ "
                                           "(default: data/; downloaded when missing)")
    parser.add_argument("--batch-size", type=int, default=500,
                        help="images per evaluation batch (default 500)")
    parser.add_argument("--pixel-mean", metavar="NPY",
                        help="mean image for .pklz weights (the old data/pixel_mean.npy)")
    parser.add_argument("--out", help="JSON report (default: next to the weights)")
    return parser


def load_any_weights(parser, args, net, data_dir):
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
    weights = models.load_weights(args.weights, net)
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
    models.check_network_arguments(parser, args)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    try:
        arch = args.arch or "paper"
        dataset = args.dataset
        if dataset is None and args.weights and args.weights.endswith(".npz"):
            dataset = utils.read_weights(args.weights)["network"].get("dataset")
        dataset = dataset or "cifar10"
        try:
            info = models.network_info(args.variant, args.depth, args.width or 1, arch,
                                         dataset)
        except ValueError as error:
            parser.error(str(error))
        if args.weights is None:
            args.weights = utils.published_weights_path(args.data_dir, info["name"])
            if not os.path.isfile(args.weights):
                raise UserError("no weights at %s: train them first (python train_nn.py "
                                "%s %d%s) or pass --weights"
                                % (args.weights, args.variant, args.depth,
                                   " %d" % args.width if args.width else ""))
        data_dir = args.data_dir or utils.DEFAULT_DATA_DIR
        net = models.Network(info)
        stats = load_any_weights(parser, args, net, data_dir)
        data = utils.load_dataset(dataset, data_dir)
        print("compiling the evaluation function...", flush=True)
        net.compile_predict()
        started = time.time()
        predictions = models.predict_labels(net, data["test_x"], stats, args.batch_size)
        seconds = time.time() - started
        report = models.classification_report(data["test_y"], predictions,
                                                data["label_names"])
        paper = models.paper_error(info, info.get("dropout", 0.0))
        print_report(report, info, args.weights, paper)
        print("%.1f s, %.0f images/s at batch %d" % (seconds, report["count"] / seconds,
                                                     args.batch_size))
        out = args.out or os.path.splitext(args.weights)[0] + "-test.json"
        utils.write_json(out, dict(report, network=info, weights=os.path.abspath(args.weights),
                                   data_folder=data["folder"], paper_error=paper,
                                   seconds=seconds, batch_size=args.batch_size))
        print("report: %s" % out)
        return 0
    except UserError as error:
        print("error: %s" % error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
