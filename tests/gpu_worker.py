"""The work of tests/test_gpu.py, in a process of its own on the device that
THEANO_FLAGS names (Theano fixes its device when it is imported).

    python tests/gpu_worker.py compile OUT.json
    python tests/gpu_worker.py step INIT.npz BATCH.npz OUT.npz [--save-init]
    python tests/gpu_worker.py train STEPS OUT.json

The network is PreResNet-20 (``models.build_model("normal", 3, ...)``); the
train function is the categorical cross-entropy with Lasagne's Nesterov
updates, the eval function the deterministic output (batch norm's running
averages). Only stable entry points: ``engine`` and ``models.build_model``.
"""
import json
import os
import sys

import numpy as np

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TESTS_DIR))
sys.path.insert(0, TESTS_DIR)

import engine  # noqa: E402,F401  (configures Theano; one line and exit 1 without a GPU)
import lasagne  # noqa: E402
import theano  # noqa: E402
import theano.tensor as T  # noqa: E402
from lasagne.layers import get_all_params, get_output  # noqa: E402
from lasagne.objectives import categorical_crossentropy  # noqa: E402

import models  # noqa: E402
from conftest import make_images  # noqa: E402

LEARNING_RATE = 0.1
MOMENTUM = 0.9


def build(seed=0):
    lasagne.random.set_rng(np.random.RandomState(seed))
    images = T.tensor4("images")
    labels = T.ivector("labels")
    net = models.build_model("normal", 3, 1, 10, 0.0, images, "paper")
    prediction = get_output(net)
    loss = categorical_crossentropy(prediction, labels).mean()
    params = get_all_params(net, trainable=True)
    updates = lasagne.updates.nesterov_momentum(
        loss, params, learning_rate=np.float32(LEARNING_RATE), momentum=MOMENTUM)
    train = theano.function([images, labels], loss, updates=updates)
    evaluate = theano.function([images], get_output(net, deterministic=True))
    return net, train, evaluate


def batch(count, seed):
    images, labels = make_images(count, seed)
    return ((images / np.float32(255) - np.float32(0.5)).astype(np.float32),
            labels.astype(np.int32))


def on_gpu(variable):
    return type(variable.type).__name__ == "GpuArrayType"


def describe(function):
    """The ops of a compiled function: which are GPU ops, which convolutions
    and which nodes compute a 4-D (activation-sized) result on the host."""
    nodes = function.maker.fgraph.toposort()
    names = [type(node.op).__name__ for node in nodes]
    host_4d = sorted({type(node.op).__name__ for node in nodes
                      if any(getattr(out.type, "ndim", 0) == 4 and not on_gpu(out)
                             for out in node.outputs)
                      and type(node.op).__name__ != "HostFromGpu"})
    return {"ops": len(nodes),
            "gpu_ops": sum(name.startswith("Gpu") for name in names),
            "convolutions": sorted({n for n in names if "Corr" in n or "Conv" in n}),
            "host_4d": host_4d,
            "project_c_ops": sorted({type(node.op).__name__ for node in nodes
                                     if type(node.op).__module__.startswith("engine.")})}


def command_compile(out):
    _, train, evaluate = build()
    images, labels = batch(8, 1)
    loss = float(train(images, labels))
    probabilities = evaluate(images)
    result = {"device": theano.config.device, "train": describe(train),
              "eval": describe(evaluate), "loss": loss,
              "eval_row_sums": probabilities.sum(axis=1).tolist()}
    with open(out, "w") as f:
        json.dump(result, f)


def command_step(init, batch_file, out, save_init=False):
    net, train, evaluate = build()
    params = lasagne.layers.get_all_params(net)  # trainable and running averages
    if save_init:
        np.savez(init, *[p.get_value() for p in params])
    else:
        with np.load(init, allow_pickle=False) as values:
            for i, p in enumerate(params):
                p.set_value(values["arr_%d" % i])
    with np.load(batch_file, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    loss = train(images, labels)
    probabilities = evaluate(images)
    np.savez(out, loss=np.float32(loss), probabilities=probabilities,
             **{"param_%d" % i: p.get_value() for i, p in enumerate(params)})


def command_train(steps, out):
    _, train, evaluate = build()
    images, labels = batch(64, 2)
    losses = [float(train(images[i:i + 32], labels[i:i + 32]))
              for _ in range(steps) for i in (0, 32)]
    errors = float(np.mean(evaluate(images).argmax(axis=1) != labels))
    with open(out, "w") as f:
        json.dump({"device": theano.config.device, "losses": losses,
                   "train_error": errors}, f)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "compile":
        command_compile(args[0])
    elif command == "step":
        command_step(args[0], args[1], args[2], save_init="--save-init" in args)
    elif command == "train":
        command_train(int(args[0]), args[1])
    else:
        raise SystemExit("unknown command %r" % command)
