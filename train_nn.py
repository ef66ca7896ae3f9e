"""Train a pre-activation ResNet or Wide ResNet on CIFAR-10/100.

    python train_nn.py normal 18              # PreResNet-110 (6n+2), paper recipe
    python train_nn.py bottleneck 18          # PreResNet-164 (9n+2)
    python train_nn.py wide 2 4               # WRN-16-4 (6n+4, k=4)
    python train_nn.py wide 2 4 --dropout 0.3
    python train_nn.py normal 18 --arch seed --recipe seed     # the old repository
    python train_nn.py normal 1 --epochs 1 --limit 2000        # a smoke run
    python train_nn.py --resume runs/preresnet110-paper-20261128-170000

Every recipe value can be overridden (see --help). A run folder holds the
resolved config (config.json), the per-epoch log (log.csv, output.log), the
curves (curves.png), a checkpoint after every epoch (checkpoint.npz) and the
weights (weights_final.npz, weights_best.npz with a validation split); the
published weights also go to data/weights/<network>.npz for test_model.py.
"""
import argparse
import datetime
import json
import os
import sys

import training
import utils
from utils import UserError

# How each recipe key is read from the command line.
RECIPE_FLAG_TYPES = {
    "epochs": int, "batch_size": int, "warmup_iters": int, "warmup_epochs": int,
    "pad": int, "val_size": int,
    "lr": float, "lr_factor": float, "warmup_lr": float, "momentum": float,
    "weight_decay": float, "dropout": float,
}
MIN_VALUES = {"epochs": 1, "batch_size": 1}


def milestones(text):
    """'80,121' -> [80, 121]; '' or 'none' -> []."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated epochs, e.g. 80,121")
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("epochs are counted from 0")
    return sorted(values)


def yes_no(text):
    if text.lower() in ("1", "yes", "true", "on"):
        return True
    if text.lower() in ("0", "no", "false", "off"):
        return False
    raise argparse.ArgumentTypeError("expected yes or no")


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Recipes: paper (the papers' code, default), seed (the old repository).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    training.add_network_arguments(parser, optional=True)
    parser.add_argument("--recipe", default="paper",
                        help="paper (default), seed, or paper-preresnet / paper-wrn")
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ "
                                           "(default: data/; downloaded when missing)")
    parser.add_argument("--out", help="run folder (default: runs/<network>-<recipe>-<time>)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of initialisation, split, shuffling, augmentation "
                             "and dropout (default 0)")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="train on the first N training images (smoke runs)")
    parser.add_argument("--test-every", type=int, default=1, metavar="K",
                        help="test-set error every K epochs (0: last epoch only); it is "
                             "reported, never used to select a model")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its checkpoint")
    recipe = parser.add_argument_group("recipe overrides (default: the recipe's value)")
    for key in training.RECIPES["paper-preresnet"]:
        if key == "source":
            continue
        flag = "--" + key.replace("_", "-")
        if key in training.CHOICES:
            recipe.add_argument(flag, choices=training.CHOICES[key])
        elif key == "lr_milestones":
            recipe.add_argument(flag, type=milestones, metavar="E1,E2",
                                help="multiply lr by --lr-factor after these many epochs "
                                     "(80,121: from epochs 81 and 122 of the log on)")
        elif key in RECIPE_FLAG_TYPES:
            recipe.add_argument(flag, type=RECIPE_FLAG_TYPES[key])
        else:
            recipe.add_argument(flag, type=yes_no, metavar="yes|no")
    return parser


def recipe_overrides(args):
    return {key: getattr(args, key) for key in training.RECIPES["paper-preresnet"]
            if key != "source"}


def new_run(parser, args):
    training.check_network_arguments(parser, args)
    overrides = recipe_overrides(args)
    for key, minimum in MIN_VALUES.items():
        if overrides[key] is not None and overrides[key] < minimum:
            parser.error("--%s must be at least %d" % (key.replace("_", "-"), minimum))
    for key, value in overrides.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            parser.error("--%s must not be negative" % key.replace("_", "-"))
    if args.limit < 0:
        parser.error("--limit must not be negative")
    try:
        recipe = training.resolve_recipe(args.recipe, args.type, overrides)
        info = training.network_info(args.type, args.depth, args.width or 1,
                                     args.arch or "paper", args.dataset or "cifar10",
                                     recipe["dropout"])
    except (ValueError, UserError) as error:
        parser.error(str(error))
    run_dir = args.out or os.path.join(
        utils.PROJECT_DIR, "runs", "%s-%s-%s" % (
            info["name"], recipe["name"], datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
    if os.path.exists(os.path.join(run_dir, training.CHECKPOINT_NAME)):
        parser.error("%s already holds a run; continue it with --resume %s, or choose "
                     "another --out" % (run_dir, run_dir))
    config = {"network": info, "recipe": recipe, "seed": args.seed, "limit": args.limit,
              "data_dir": os.path.abspath(args.data_dir or utils.DEFAULT_DATA_DIR),
              "test_every": args.test_every}
    return config, run_dir


def resumed_run(parser, args):
    given = [key for key, value in recipe_overrides(args).items() if value is not None]
    given += [flag for flag, value in (("--out", args.out), ("--limit", args.limit),
                                       ("--arch", args.arch), ("--dataset", args.dataset))
              if value]
    if given:
        parser.error("--resume continues a run exactly as it was configured; it takes "
                     "no %s (only --data-dir)" % ", ".join(given))
    _, arrays = training.read_checkpoint(args.resume)
    config = json.loads(str(arrays["config"]))
    progress = json.loads(str(arrays["progress"]))
    info = config["network"]
    if args.type is not None and (args.type, args.depth, args.width or 1) != (
            info["variant"], info["depth"], info["width"]):
        parser.error("%s holds a %s run, not `%s %s%s`" % (
            args.resume, info["display"], args.type, args.depth,
            " %d" % args.width if args.width else ""))
    if args.data_dir:
        config["data_dir"] = os.path.abspath(args.data_dir)
    return config, progress


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.resume:
            if not os.path.isdir(args.resume):
                parser.error("--resume %s: no such folder" % args.resume)
            try:
                config, progress = resumed_run(parser, args)
            except UserError as error:
                parser.error(str(error))
            if progress["epoch"] >= config["recipe"]["epochs"]:
                print("%s already finished all %d epochs; nothing to do"
                      % (args.resume, config["recipe"]["epochs"]))
                return 0
            run_dir = args.resume
        else:
            config, run_dir = new_run(parser, args)
        # Data first: a bad file stops the run before anything is written.
        data = utils.load_dataset(config["network"]["dataset"], config["data_dir"])
        if not args.resume:
            os.makedirs(run_dir, exist_ok=True)
            utils.write_json(os.path.join(run_dir, "config.json"), dict(
                config, command=" ".join(["python", "train_nn.py"] + sys.argv[1:]),
                versions=training.library_versions(),
                machine=training.machine_description(),
                started=datetime.datetime.now().isoformat(timespec="seconds")))
        with open(os.path.join(run_dir, "output.log"), "a") as log_file:
            def log(text):
                print(text, flush=True)
                log_file.write(text + "\n")
                log_file.flush()

            log("run folder: %s" % run_dir)
            training.train(config, data, run_dir, resume=bool(args.resume), log=log)
        return 0
    except UserError as error:
        print("error: %s" % error, file=sys.stderr)
        return 1
    except training.Interrupted as interruption:
        return interruption.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted; the last checkpoint (if any) is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
