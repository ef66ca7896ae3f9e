"""Batch normalisation that holds for any input: a channel whose mean is large
next to its spread (|mean| / std = r), the C ops against the plain Theano
expression, both against float64.

The variance of such a channel computed as mean(x**2) - mean**2 cancels: the
C op did so until it computed it from the deviations from the mean (at
r = 10000 its output was off by hundreds of standard deviations). Both paths
are held to the same bound: the C op's error at most 10 times the plain
path's, or 10 times float32's resolution where the plain path is exact by
chance."""

import numpy as np
import pytest

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
from lasagne.layers import InputLayer, get_output

from engine import layers, ops
from conftest import outputs_per_thread_count, pairs

RATIOS = [1000, 10000, 100000]
SHAPE = (16, 3, 16, 16)
CHANNEL = 1  # the channel with the large mean; the others are centred
STD = 0.37
# float32's resolution, the floor of the bounds: a few units in the last place
FLOOR = {"output": 1e-6, "gradient": 1e-6, "mean": 1e-6, "spread": 2.0 ** -22,
         "inference": 1e-6}
CONFIGS = {"seed": {"epsilon": 1e-4, "running": "inv_std"},
           "paper": {"epsilon": 1e-5, "running": "var"}}


def channel_data(r, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=SHAPE)
    x[:, CHANNEL] = x[:, CHANNEL] * STD + r * STD
    return x.astype(np.float32), rng.normal(size=SHAPE).astype(np.float32)


def float64_reference(x, dy, epsilon):
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    axes = (0, 2, 3)

    def channel(v):
        return v[None, :, None, None]
    mean, var = x.mean(axes), x.var(axes)
    inv_std = 1 / np.sqrt(var + epsilon)
    xhat = (x - channel(mean)) * channel(inv_std)
    dx = channel(inv_std) * (dy - channel(dy.mean(axes)) - xhat * channel((dy * xhat).mean(axes)))
    count = x.size / x.shape[1]
    return {"output": xhat, "gradient": dx, "mean": mean, "var": var, "inv_std": inv_std,
            "unbiased_var": var * count / (count - 1)}


def measure(use_c, config, monkeypatch):
    """The errors, on the large-mean channel, of one training step (output,
    input gradient, the averages it leaves with alpha = 1) and of inference
    with those averages, for each ratio."""
    monkeypatch.setattr(layers, "USE_C_OPS", use_c)
    x_var, dy_var = T.tensor4("x"), T.tensor4("dy")
    bn = layers.BatchNormLayer(InputLayer((None, SHAPE[1]) + SHAPE[2:], x_var), alpha=1.0,
                               **config)
    out = get_output(bn)
    train = theano.function([x_var, dy_var], [out, T.grad((out * dy_var).sum(), x_var)])
    infer = theano.function([x_var], get_output(bn, deterministic=True))
    used = {type(node.op) for f in (train, infer) for node in f.maker.fgraph.toposort()}
    assert bool(used & {ops.BatchNormTrain, ops.ScaleShift}) == use_c
    results = {}
    c = CHANNEL
    for r in RATIOS:
        x, dy = channel_data(r)
        reference = float64_reference(x, dy, config["epsilon"])
        std = np.sqrt(reference["var"][c])
        y, dx = train(x, dy)
        mean, spread = bn.mean.get_value()[c], bn.spread.get_value()[c]
        expected_spread = reference["inv_std" if config["running"] == "inv_std"
                                    else "unbiased_var"][c]
        # inference from the averages as stored (float32): the op's own error
        stored_mean = np.float64(mean)
        stored_inv_std = (np.float64(spread) if config["running"] == "inv_std"
                          else 1 / np.sqrt(np.float64(spread) + config["epsilon"]))
        inferred = (x[:, c].astype(np.float64) - stored_mean) * stored_inv_std
        results[r] = {
            # the output is in units of the channel's standard deviation
            "output": np.abs(y[:, c] - reference["output"][:, c]).max(),
            "gradient": (np.abs(dx[:, c] - reference["gradient"][:, c]).max()
                         / np.abs(reference["gradient"][:, c]).max()),
            "mean": abs(mean - reference["mean"][c]) / std,
            "spread": abs(spread - expected_spread) / expected_spread,
            "inference": np.abs(infer(x)[:, c] - inferred).max(),
        }
        # the centred channels are unaffected
        others = [k for k in range(SHAPE[1]) if k != c]
        np.testing.assert_allclose(y[:, others], reference["output"][:, others], atol=2e-6)
    return results


@pytest.mark.parametrize("config", [  # the quick loop checks the seed's settings
    pytest.param(name, marks=[] if name == "seed" else [pytest.mark.slow])
    for name in sorted(CONFIGS)])
def test_c_ops_are_as_accurate_as_plain_theano_for_a_large_mean(config, monkeypatch):
    c_errors = measure(True, CONFIGS[config], monkeypatch)
    plain_errors = measure(False, CONFIGS[config], monkeypatch)
    for r in RATIOS:
        for quantity, c_error in c_errors[r].items():
            bound = 10 * max(plain_errors[r][quantity], FLOOR[quantity])
            assert c_error <= bound, (r, quantity, c_error, plain_errors[r][quantity])
        # and both are small in absolute terms: float32 rounding of the mean
        # (r * 2**-24 standard deviations) is all that is lost
        assert c_errors[r]["output"] < 4 * r * 2.0 ** -24 + 1e-5
        assert c_errors[r]["spread"] < 1e-5


THREAD_SCRIPT = """
import sys
import numpy as np
import engine
import theano
import theano.tensor as T
from engine import ops
rng = np.random.default_rng(0)
x, dy, g, b, m = T.tensor4(), T.tensor4(), T.vector(), T.vector(), T.vector()
data = rng.normal(size=(20, 13, 8, 8)) * 0.37
data += (rng.normal(size=13) * 10.0 ** rng.integers(0, 5, 13))[None, :, None, None]
values = [data.astype("float32"), rng.normal(size=(20, 13, 8, 8)).astype("float32"),
          rng.normal(size=13).astype("float32"), rng.normal(size=13).astype("float32"),
          rng.normal(size=13).astype("float32") * 100]
outputs = []
for relu in (False, True):
    bn = ops.BatchNormTrain(1e-5, relu)(x, g, b)
    f = theano.function([x, dy, g, b], list(bn) + T.grad((bn[0] * dy).sum(), [x, g, b]))
    outputs += f(*values[:4])
    infer = ops.ScaleShift(relu)(x, g, b, m)
    f = theano.function([x, dy, g, b, m], [infer] + T.grad((infer * dy).sum(), [x, g, b, m]))
    outputs += f(*values)
np.savez(sys.argv[1], *outputs)
"""


@pytest.mark.slow
def test_results_do_not_depend_on_the_number_of_threads(tmp_path):
    """The same bits for one, two and three threads, for channels whose means
    span five orders of magnitude."""
    results = outputs_per_thread_count(THREAD_SCRIPT, tmp_path, ("1", "2", "3"))
    assert len(results[0]) == 2 * (7 + 5)
    for one, two, three in pairs(*results):
        np.testing.assert_array_equal(one, two)
        np.testing.assert_array_equal(one, three)
