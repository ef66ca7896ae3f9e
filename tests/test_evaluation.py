"""Evaluation, checked against an independent forward pass: the papers'
networks written in numpy (``conftest.ReferenceNetwork``) from the weights
file's parameters read by name, batch norm with the running averages. The
project's evaluation (the training loop's log, ``test_model.py``,
``models.predict_labels``) must give its predictions, in batches with a
partial last one; evaluating must change nothing the network holds; and a run
with a validation split must test its best weights and end holding its final
ones.

The comparison of test_model.py with the training log alone is circular (both
call the same function): a switch to batch statistics passed it.
"""
import json

import numpy as np
import pytest

import models
import utils
from conftest import (SHORT_RUN, confusion_of, pairs, read_log, reference_probabilities,
                      run_cli, without_seconds)

# Every test here trains runs or starts the programs.
pytestmark = pytest.mark.slow

# The tiny test set's 100 images in batches of 30: three and a partial one of 10.
EVAL_BATCH = 30


def assert_same_values(a, b):
    for x, y in pairs(a, b):
        np.testing.assert_array_equal(x, y)


def differs(a, b):
    return any(not np.array_equal(x, y) for x, y in pairs(a, b))


def project_evaluation(weights_path, images, batch_size):
    """The project's evaluation of a weights file (``models.predict_labels``,
    which test_model.py and the training loop call), with the class
    probabilities of each batch recorded from outside. Returns the network,
    the file as read, the predicted labels and the batches' probabilities."""
    weights = utils.read_weights(str(weights_path))
    net = models.Network(dict(weights["network"]))
    net.set_param_values(weights["values"], str(weights_path), "the test")
    batches = []
    real_predict = net.predict

    def predict(x):
        out = real_predict(x)
        batches.append(out)
        return out

    net.predict = predict
    labels = models.predict_labels(net, images, weights["stats"], batch_size)
    return net, weights, labels, batches


def error_of(labels, predicted):
    return 100.0 * float(np.mean(labels != predicted))


def test_the_log_test_model_and_predict_agree_with_the_numpy_forward_pass(short_run, tmp_path):
    run, images, labels = short_run["run"], short_run["test_images"], short_run["test_labels"]
    weights = run / "weights_final.npz"
    reference = reference_probabilities(weights, images, "normal", 1)
    predicted = reference.argmax(axis=1)
    # The check has power: evaluated with batch statistics the same network
    # predicts otherwise (and a network that gives one class whatever its
    # input could not tell evaluations apart).
    with_batch_statistics = reference_probabilities(weights, images, "normal", 1, batch_size=EVAL_BATCH,
                                                    batch_statistics=True).argmax(axis=1)
    assert (with_batch_statistics != predicted).sum() >= 3
    assert len(set(predicted.tolist())) >= 3
    error = error_of(labels, predicted)

    # The training loop's test error of its last epoch (one batch of 500).
    assert float(read_log(run)[-1]["test_error"]) == pytest.approx(error, abs=1e-9)

    # test_model.py in batches of 30, the last one partial.
    report_path = tmp_path / "report.json"
    tested = run_cli("test_model.py", "--run", run, "--data-dir", short_run["data"],
                     "--batch-size", EVAL_BATCH, "--out", report_path)
    assert tested.returncode == 0, tested.stderr
    report = json.loads(report_path.read_text())
    assert report["confusion"] == confusion_of(labels, predicted, 10)
    assert report["error"] == pytest.approx(error, abs=1e-9)

    # predict_labels, probability by probability.
    _, _, project_labels, batches = project_evaluation(weights, images, EVAL_BATCH)
    assert [len(batch) for batch in batches] == [30, 30, 30, 10]
    np.testing.assert_allclose(np.concatenate(batches), reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(project_labels, predicted)


def test_evaluating_changes_nothing_the_network_holds(short_run, tmp_path):
    """Every parameter, the batch-norm averages included, is the same bit for
    bit after an evaluation in several batches, and a second evaluation gives
    the same probabilities. In the loop: a run that tests every epoch (the
    shared run) ends with exactly the weights and training figures of one that
    tests at its last epoch only."""
    weights = short_run["run"] / "weights_final.npz"
    net, stored, _, batches = project_evaluation(weights, short_run["test_images"], EVAL_BATCH)
    assert_same_values(net.param_values(), stored["values"])
    first = np.concatenate(batches)
    del batches[:]
    models.predict_labels(net, short_run["test_images"], stored["stats"], EVAL_BATCH)
    np.testing.assert_array_equal(np.concatenate(batches), first)

    other = tmp_path / "tested-at-the-end"
    result = run_cli("train_nn.py", *SHORT_RUN, "--test-every", 0,
                     "--data-dir", short_run["data"], "--out", other)
    assert result.returncode == 0, result.stderr
    assert_same_values(utils.read_weights(str(other / "weights_final.npz"))["values"],
                       stored["values"])
    every, last_only = read_log(short_run["run"]), read_log(other)
    assert last_only[0]["test_error"] == "" and every[0]["test_error"] != ""
    for row in every[:1] + last_only[:1]:
        row.pop("test_error")
    assert without_seconds(last_only) == without_seconds(every)


def randomised(net, seed):
    """Parameters of a trained-looking network: batch-norm scales, shifts and
    running averages away from their initial values, a classifier bias."""
    rng = np.random.default_rng(seed)
    for param in net.params:
        value = param.get_value()
        kind = param.name.rsplit(".", 1)[1]
        if kind == "gamma":
            value = rng.uniform(0.5, 1.5, value.shape)
        elif kind in ("beta", "b"):
            value = rng.normal(0, 0.2, value.shape)
        elif kind == "mean":
            value = rng.normal(0, 0.5, value.shape)
        elif kind == "var":
            value = rng.uniform(0.5, 2.0, value.shape)
        param.set_value(value.astype(param.dtype))


@pytest.mark.parametrize("variant,depth,width,dropout", [("bottleneck", 1, 1, 0.0),
                                                         ("wide", 1, 2, 0.3)])
def test_bottleneck_and_wide_predictions_are_the_numpy_forward_passes(
        short_run, tmp_path, variant, depth, width, dropout):
    """The other two unit kinds (a wide one with dropout, which evaluation
    leaves out), with parameters and averages set away from their initial
    values."""
    images = short_run["test_images"]
    info = models.network_info(variant, depth, width, "paper", "cifar10", dropout)
    net = models.Network(info, seed=4)
    randomised(net, 5)
    path = tmp_path / "weights.npz"
    models.save_weights(str(path), net, utils.normalisation_stats("channel_mean_std", images))
    reference = reference_probabilities(path, images, variant, depth, width)
    _, _, labels, batches = project_evaluation(path, images, EVAL_BATCH)
    assert [len(batch) for batch in batches] == [30, 30, 30, 10]
    np.testing.assert_allclose(np.concatenate(batches), reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(labels, reference.argmax(axis=1))


def test_finish_tests_the_best_weights_then_puts_the_final_ones_back(best_not_last_run):
    """A run with a validation split whose best epoch (1) is not its last (2),
    publishing its final weights: weights_best.npz holds epoch 1's
    parameters, weights_final.npz and the published file epoch 2's; finish
    evaluates the test set with epoch 1's parameters in the network (its
    error is the numpy forward pass's of weights_best.npz) and leaves the
    network holding epoch 2's."""
    seen, run = best_not_last_run, best_not_last_run["run"]
    images, labels = seen["test_images"], seen["test_labels"]
    after_epoch_1, after_epoch_2 = seen["checkpoints"]
    assert differs(after_epoch_1, after_epoch_2)
    best = utils.read_weights(str(run / "weights_best.npz"))
    final = utils.read_weights(str(run / "weights_final.npz"))
    assert_same_values(best["values"], after_epoch_1)
    assert_same_values(final["values"], after_epoch_2)
    assert seen["published"].read_bytes() == (run / "weights_final.npz").read_bytes()

    evaluated, = seen["evaluated_in_finish"]
    assert_same_values(evaluated, after_epoch_1)
    assert_same_values(seen["after_finish"], after_epoch_2)

    best_error = error_of(labels, reference_probabilities(
        run / "weights_best.npz", images, "normal", 1).argmax(axis=1))
    assert [error for _, error, finishing in seen["errors"] if finishing] == [
        pytest.approx(best_error, abs=1e-9)]
    final_error = error_of(labels, reference_probabilities(
        run / "weights_final.npz", images, "normal", 1).argmax(axis=1))
    rows = read_log(run)
    assert [row["test_error"] != "" for row in rows] == [False, True]  # --test-every 0
    assert float(rows[-1]["test_error"]) == pytest.approx(final_error, abs=1e-9)


def test_error_percentages_are_one_division_of_the_wrong_count():
    """Every error of k wrong in n is the float nearest 100 k / n (57 of 100
    is 57.0, not 100 * mean's 56.99999999999999), in the report test_model.py
    writes and in the loop's error."""
    labels = np.zeros(100, np.int64)
    for wrong in range(101):
        predictions = np.zeros(100, np.int64)
        predictions[:wrong] = 1
        report = models.classification_report(labels, predictions, ["a", "b"])
        assert report["error"] == wrong, (wrong, report["error"])
        assert models.percent_wrong(labels, predictions) == wrong
    for n in (7, 30, 10000):
        for wrong in range(0, n + 1, max(1, n // 97)):
            predictions = np.zeros(n, np.int64)
            predictions[:wrong] = 1
            assert models.percent_wrong(np.zeros(n, np.int64), predictions) == 100.0 * wrong / n
