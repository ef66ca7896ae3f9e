"""Recipes: schedules at their boundary epochs, weight decay, the optimisers."""
import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
from lasagne.layers import get_all_params, get_output

import models
import train_nn
import utils
from conftest import pairs
from engine import updates
from utils import UserError


def lr(recipe_name, epoch, iteration=10 ** 6, **overrides):
    recipe = train_nn.resolve_recipe(recipe_name, "normal", overrides)
    return train_nn.learning_rate(recipe, epoch, iteration)


@pytest.mark.parametrize("epoch,expected", [
    (0, 0.1), (79, 0.1), (80, 0.01), (120, 0.01), (121, 0.001), (163, 0.001)])
def test_preresnet_schedule_drops_after_epochs_80_and_121(epoch, expected):
    assert lr("paper-preresnet", epoch) == pytest.approx(expected)


@pytest.mark.parametrize("epoch,expected", [
    (0, 0.1), (58, 0.1), (59, 0.02), (118, 0.02), (119, 0.004), (158, 0.004),
    (159, 0.0008), (199, 0.0008)])
def test_wrn_schedule_decays_by_five_at_torch_epochs_60_120_160(epoch, expected):
    assert lr("paper-wrn", epoch) == pytest.approx(expected)


@pytest.mark.parametrize("epoch,expected", [
    (0, 0.01), (9, 0.01), (10, 0.1), (79, 0.1), (80, 0.01), (119, 0.01), (120, 0.001)])
def test_seed_schedule(epoch, expected):
    assert lr("seed", epoch) == pytest.approx(expected)


def test_optional_warmup_counts_iterations():
    assert lr("paper-preresnet", 0, iteration=399, warmup_iters=400) == 0.01
    assert lr("paper-preresnet", 1, iteration=400, warmup_iters=400) == 0.1
    assert lr("paper-preresnet", 0, iteration=0) == 0.1  # off by default


def test_overridden_milestones():
    assert lr("paper-preresnet", 6, lr_milestones=[7, 9], lr_factor=0.5) == 0.1
    assert lr("paper-preresnet", 7, lr_milestones=[7, 9], lr_factor=0.5) == 0.05
    assert lr("paper-preresnet", 9, lr_milestones=[7, 9], lr_factor=0.5) == 0.025


def test_paper_recipe_follows_the_variant():
    assert train_nn.resolve_recipe("paper", "normal")["name"] == "paper-preresnet"
    assert train_nn.resolve_recipe("paper", "bottleneck")["weight_decay"] == 1e-4
    wrn = train_nn.resolve_recipe("paper", "wide")
    assert (wrn["name"], wrn["weight_decay"], wrn["epochs"]) == ("paper-wrn", 5e-4, 200)
    seed = train_nn.resolve_recipe("seed", "normal")
    assert (seed["batch_size"], seed["val_size"], seed["epochs"]) == (64, 5000, 200)
    with pytest.raises(UserError, match="unknown recipe"):
        train_nn.resolve_recipe("fast", "normal")
    with pytest.raises(UserError, match="pad_mode"):
        train_nn.resolve_recipe("paper", "normal", {"pad_mode": "wrap"})


def test_every_recipe_cites_its_source_and_has_the_same_keys():
    keys = set(train_nn.RECIPES["paper-preresnet"])
    for recipe in train_nn.RECIPES.values():
        assert set(recipe) == keys and len(recipe["source"]) > 20


def _decay_gradients(decay_style):
    """The gradients of a zero loss: only the decay term is left."""
    images = T.tensor4()
    net = models.build_model("normal", 1, input_var=images)
    params = get_all_params(net, trainable=True)
    loss = 0 * get_output(net).sum()
    recipe = dict(train_nn.RECIPES["paper-preresnet"], decay=decay_style, weight_decay=1e-4)
    grads = updates.gradients_with_decay(loss, net, params, recipe["weight_decay"],
                                         recipe["decay"])
    compute = theano.function([images], grads, on_unused_input="ignore")
    return params, compute(np.zeros((2, 3, 32, 32), np.float32))


@pytest.mark.slow  # compiles the gradients of PreResNet-164 (2 s)
def test_torch_decay_is_1e4_times_every_parameter():
    params, grads = _decay_gradients("gradient_all")
    for param, grad in pairs(params, grads):
        np.testing.assert_allclose(grad, 1e-4 * param.get_value(), rtol=1e-6, atol=1e-12,
                                   err_msg=param.name)
    names = {p.name.split(".")[-1] for p in params}
    assert {"W", "b", "beta", "gamma"} <= names  # batch-norm and bias decayed too


@pytest.mark.slow  # compiles a network's gradients (3 s)
def test_seed_penalty_doubles_on_regularizable_parameters_only():
    params, grads = _decay_gradients("l2_loss_regularizable")
    for param, grad in pairs(params, grads):
        kind = param.name.split(".")[-1]
        factor = 2e-4 if kind in ("W", "gamma") else 0.0
        np.testing.assert_allclose(grad, factor * param.get_value(), rtol=1e-5, atol=1e-12,
                                   err_msg=param.name)


def torch_sgd_reference(w, grads, lrs, momentum, decay):
    """optim.sgd (nesterov=true, dampening=0) step by step, as Torch's sgd.lua."""
    buffer = None
    for g, rate in pairs(grads, lrs):
        d = g + decay * w
        buffer = d.copy() if buffer is None else momentum * buffer + d
        w = w - rate * (d + momentum * buffer)
    return w


def test_nesterov_torch_matches_torch_sgd_across_a_learning_rate_change():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=5).astype(np.float32)
    grads = [rng.normal(size=5).astype(np.float32) for _ in range(4)]
    lrs = [0.1, 0.1, 0.01, 0.01]
    w = theano.shared(w0.copy(), name="w")
    g = T.vector("g")
    rate = theano.shared(np.float32(0))
    step_updates, buffers = updates.nesterov_torch([g + np.float32(1e-4) * w], [w], rate,
                                                   np.float32(0.9))
    step = theano.function([g], [], updates=step_updates)
    for grad, value in pairs(grads, lrs):
        rate.set_value(np.float32(value))
        step(grad)
    expected = torch_sgd_reference(w0.astype(np.float64), grads, lrs, 0.9, 1e-4)
    np.testing.assert_allclose(w.get_value(), expected, rtol=1e-5)
    assert buffers[0].name == "w.momentum"


def test_batches_keep_or_drop_the_last_partial_one():
    assert utils.batch_positions(10, 4, drop_last=False) == [(0, 4), (4, 8), (8, 10)]
    assert utils.batch_positions(10, 4, drop_last=True) == [(0, 4), (4, 8)]
    assert utils.batch_positions(50000, 128, False)[-1] == (49920, 50000)
