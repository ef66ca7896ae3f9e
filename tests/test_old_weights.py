"""The old repository's published weights: each file loads into the graph it
was trained with (docs/old-repository.md, "History"), never silently into
another.

The real files are not needed: a file is written the way the old train_nn.py
wrote one (gzip, then Python 2's pickle.dump of the list of float32 arrays)
from a graph's own parameters: fresh ones where only the parameter list
matters, those of a network briefly trained on inputs prepared as the old code
of its graph did where the program evaluates it (an untrained network gives
one class for every image, whatever the input preparation).
"""
import gzip
import json

import numpy as np
import pytest
import scipy.signal

import engine  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
from lasagne import init
from lasagne.layers import (DenseLayer, ElemwiseSumLayer, GlobalPoolLayer, InputLayer,
                            NonlinearityLayer, count_params, get_all_layers,
                            get_all_params, get_output)
from lasagne.nonlinearities import rectify, softmax

from engine.layers import BatchNormLayer, CrossCorrelation2DLayer as Conv2DLayer
import models
import test_model
import train_nn
import utils
from conftest import coloured_images, confusion_of, python2_pickle, run_cli, write_tiny_cifar10
from utils import UserError

OLD_GRAPHS = ["seed", "seed-2016-06", "seed-2016-04"]
TEST = "test_model.py"
FILE_110 = "resnet110_fullpreactivation_638.pklz"
FILE_164 = "resnet164_fullpreactivation.pklz"
FILE_WIDE = "wide_resnet_n2_k4.pklz"


def write_old_pklz(path, values):
    """A weights file as the old train_nn.py saved one: gzip'd, the list
    pickled by Python 2 (conftest.python2_pickle)."""
    with gzip.open(str(path), "wb") as f:
        f.write(python2_pickle(values))
    return path


def fresh_net(arch, variant="normal", depth=2, width=1, seed=0):
    return models.Network(models.network_info(variant, depth, width, arch, "cifar10"), seed)


def shapes(variant, depth, width, arch):
    return [shape for _, shape in models.parameter_shapes(variant, depth, width, arch=arch)]


def by_name(output):
    return {layer.name: layer for layer in get_all_layers(output)}


# -- the graphs -----------------------------------------------------------------


@pytest.mark.parametrize("variant,n,k,arrays", [
    ("normal", 18, 1, {"seed": 603, "seed-2016-06": 603, "seed-2016-04": 535}),
    ("bottleneck", 18, 1, {"seed": 874, "seed-2016-06": 874}),
    ("wide", 2, 4, {"seed": 120, "seed-2016-06": 120}),
])
def test_parameter_lists_of_the_old_graphs(variant, n, k, arrays):
    assert {arch: len(models.parameter_shapes(variant, n, k, arch=arch))
            for arch in models.old_graphs(variant)} == arrays
    # 2016-06 changed what a projection reads, not the parameters.
    assert (models.parameter_shapes(variant, n, k, arch="seed-2016-06")
            == models.parameter_shapes(variant, n, k, arch="seed"))


def test_the_2016_04_graph_lacks_17_batch_norms_of_stage_1():
    counts = {arch: count_params(models.build_model("normal", 18, arch=arch), trainable=True)
              for arch in ("seed", "seed-2016-04")}
    assert counts == {"seed": 1732538, "seed-2016-04": 1732538 - 17 * 2 * 16}
    with pytest.raises(ValueError, match="normal networks only"):
        models.build_model("bottleneck", 18, arch="seed-2016-04")
    with pytest.raises(ValueError, match="normal networks only"):
        models.build_model("wide", 2, 4, arch="seed-2016-04")


@pytest.mark.parametrize("variant,width,arch", [
    (variant, width, arch) for arch in OLD_GRAPHS
    for variant, width in (("normal", 1), ("bottleneck", 1), ("wide", 2))
    if variant in models.ARCHITECTURES[arch]["variants"]])
def test_what_a_downsampling_projection_reads(variant, width, arch):
    layers = by_name(models.build_model(variant, 2, width, arch=arch))
    for stage in (2, 3):
        projection = layers["stage%d.unit1.projection" % stage]
        preactivation = layers["stage%d.unit1.pre.bn" % stage]
        if arch == "seed":
            assert projection.input_layer is preactivation
        else:  # the unit's input: the previous unit's sum
            assert projection.input_layer is preactivation.input_layer
            assert projection.input_layer.name.endswith(".sum")


def test_stage_1_units_of_2016_04_read_the_previous_sum_as_it_is():
    old = by_name(models.build_model("normal", 3, arch="seed-2016-04"))
    final = by_name(models.build_model("normal", 3, arch="seed"))
    for unit in (2, 3):
        assert "stage1.unit%d.pre.bn" % unit in final
        assert "stage1.unit%d.pre.bn" % unit not in old
        assert old["stage1.unit%d.conv1" % unit].input_layer is old["stage1.unit%d.sum"
                                                                     % (unit - 1)]
    for stage in (2, 3):
        for unit in (1, 2, 3):
            assert "stage%d.unit%d.pre.bn" % (stage, unit) in old


def old_code_normal_network(n, input_var, stage1_units_preactivated, projection_reads_sum):
    """The old repository's ResNet_FullPreActivation layer by layer, as its
    models.py wrote it (a BatchNormLayer and a NonlinearityLayer for each
    BN-ReLU; ``batch_norm(conv)`` is conv without bias, BN, ReLU), with the two
    switches its history flipped: every stage-1 unit built as a first unit
    (7c4c997) and projections reading the unit's input (before 51bc6b3)."""
    def bn_relu(layer):
        return NonlinearityLayer(BatchNormLayer(layer), rectify)

    def unit(layer, downsample, first):
        filters = layer.output_shape[1] * (2 if downsample else 1)
        pre = layer if first else bn_relu(layer)
        branch = bn_relu(Conv2DLayer(pre, filters, 3, 2 if downsample else 1))
        branch = Conv2DLayer(branch, filters, 3, 1, b=init.Constant(0))
        if downsample:
            shortcut = Conv2DLayer(layer if projection_reads_sum else pre, filters, 1, 2)
        else:
            shortcut = layer
        return ElemwiseSumLayer([branch, shortcut])

    layer = bn_relu(Conv2DLayer(InputLayer((None, 3, 32, 32), input_var), 16, 3))
    for stage in range(3):
        for index in range(n):
            layer = unit(layer, downsample=stage > 0 and index == 0,
                         first=stage == 0 and (index == 0 or stage1_units_preactivated))
    layer = GlobalPoolLayer(bn_relu(layer))
    return DenseLayer(layer, 10, nonlinearity=softmax)


OLD_CODE_SWITCHES = {"seed": (False, False), "seed-2016-06": (False, True),
                     "seed-2016-04": (True, True)}


@pytest.mark.slow  # compiles seven networks (half a minute)
def test_each_old_graph_computes_what_the_old_code_of_its_commit_computed():
    """Same parameter order, same outputs to float32 rounding; and the final
    graph computes a different function from the 2016-06 one with the same
    values (what loading the 164 or wide file into it would do)."""
    x = T.tensor4("x")
    outputs, values = [], {}
    for arch in OLD_GRAPHS:
        net = models.Network(models.network_info("normal", 2, 1, arch, "cifar10"), 1, x)
        reference = old_code_normal_network(2, x, *OLD_CODE_SWITCHES[arch])
        old_params = get_all_params(reference)
        assert ([p.get_value().shape for p in old_params]
                == [p.get_value().shape for p in net.params])
        rng = np.random.default_rng(len(values))
        values[arch] = []
        for param in net.params:  # running statistics as a trained network has them
            value = param.get_value()
            if param.name.endswith(".mean"):
                value = rng.normal(0, 0.3, value.shape).astype(np.float32)
            elif param.name.endswith(".inv_std"):
                value = rng.uniform(0.5, 2, value.shape).astype(np.float32)
            values[arch].append(value)
        net.set_param_values(values[arch], "test", "test")
        for param, value in zip(old_params, values[arch]):
            param.set_value(value)
        # the features the classifier reads, and the probabilities
        outputs += [get_output([by_name(net.output)["head.pool"], net.output],
                               deterministic=True),
                    get_output([reference.input_layer, reference], deterministic=True)]
    # The 2016-06 values in the final graph.
    final = models.Network(models.network_info("normal", 2, 1, "seed", "cifar10"), 1, x)
    final.set_param_values(values["seed-2016-06"], "test", "test")
    outputs.append(get_output(by_name(final.output)["head.pool"], deterministic=True))
    images = np.random.default_rng(2).normal(0, 1, (8, 3, 32, 32)).astype(np.float32)
    results = theano.function([x], [o for pair in outputs[:-1] for o in pair]
                              + outputs[-1:])(images)
    for i, arch in enumerate(OLD_GRAPHS):
        ours, old = results[4 * i:4 * i + 2], results[4 * i + 2:4 * i + 4]
        for a, b in zip(ours, old):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=arch)
    features_2016_06, features_final = results[4], results[-1]
    assert (np.abs(features_final - features_2016_06).max()
            > 0.05 * np.abs(features_2016_06).max())


# -- files written the old way ---------------------------------------------------


def choose(argv, found_shapes):
    """test_model.py's choice of graph for a .pklz file with ``found_shapes``."""
    parser = test_model.build_parser()
    args = parser.parse_args([str(a) for a in argv])
    return test_model.choose_old_graph(parser, args, found_shapes, 10)


@pytest.mark.parametrize("arch", [  # the quick loop loads the final graph's file
    pytest.param(arch, marks=[] if arch == "seed" else [pytest.mark.slow])
    for arch in OLD_GRAPHS])
def test_an_old_file_loads_into_its_graph_and_into_no_other(arch, tmp_path):
    net = fresh_net(arch, seed=3)
    path = write_old_pklz(tmp_path / "mine.pklz", net.param_values())
    values = utils.read_old_pklz(str(path))
    for other in OLD_GRAPHS:
        target = fresh_net(other)
        if target.param_names() == net.param_names():
            target.set_param_values(values, str(path), "the old repository")
            for a, b in zip(target.param_values(), net.param_values()):
                np.testing.assert_array_equal(a, b)
        else:
            with pytest.raises(UserError, match="parameter 12"):
                target.set_param_values(values, str(path), "the old repository")
    found = [v.shape for v in values]
    if arch == "seed-2016-04":  # its list is its own
        assert choose(["normal", 2, "--weights", path], found)[0] == arch
    else:  # the final and the 2016-06 graphs have the same list: --arch decides
        assert choose(["normal", 2, "--arch", arch, "--weights", path], found) == (arch,
                                                                                  "--arch")
        with pytest.raises(SystemExit) as exit:
            choose(["normal", 2, "--weights", path], found)
        assert exit.value.code == 2


def test_the_110_file_is_recognised_by_its_parameter_list():
    found = shapes("normal", 18, 1, "seed-2016-04")
    assert len(found) == 535
    for name in (FILE_110, "renamed.pklz"):
        arch, why = choose(["normal", 18, "--weights", "data/weights/" + name], found)
        assert arch == "seed-2016-04"
        assert ("7c4c997" if name == FILE_110 else "535 arrays") in why


def test_the_110_file_in_the_final_graph_points_at_its_graph():
    with pytest.raises(UserError) as error:
        choose(["normal", 18, "--arch", "seed", "--weights", FILE_110],
               shapes("normal", 18, 1, "seed-2016-04"))
    message = str(error.value)
    assert "parameter 12" in message and message.endswith("it fits --arch seed-2016-04")


@pytest.mark.parametrize("argv,name", [
    (["bottleneck", 18], FILE_164),
    pytest.param(["wide", 2, 4], FILE_WIDE, marks=pytest.mark.slow),
])
def test_the_164_and_wide_files_are_placed_by_their_published_names(argv, name, capsys):
    found = shapes(argv[0], argv[1], argv[2] if len(argv) > 2 else 1, "seed")
    arch, why = choose(argv + ["--weights", "data/weights/" + name], found)
    assert arch == "seed-2016-06"
    assert models.OLD_WEIGHTS_FILES[name]["commit"] in why
    # The same list under another name: refused, naming the candidates and the flag.
    with pytest.raises(SystemExit) as exit:
        choose(argv + ["--weights", "copy.pklz"], found)
    assert exit.value.code == 2
    stderr = capsys.readouterr().err
    assert "seed, seed-2016-06" in stderr and "--arch" in stderr
    # --arch seed is obeyed, with a warning that it is not the file's graph.
    assert choose(argv + ["--arch", "seed", "--weights", name], found)[0] == "seed"
    assert "warning" in capsys.readouterr().out


def test_files_that_fit_no_graph_or_the_wrong_command_are_refused(capsys):
    with pytest.raises(UserError, match="fits no old graph of normal 3.*seed-2016-04 has 100"):
        choose(["normal", 3, "--weights", "x.pklz"], shapes("normal", 2, 1, "seed"))
    with pytest.raises(SystemExit) as exit:  # the 110 file with another network's command
        choose(["bottleneck", 18, "--weights", FILE_110], shapes("normal", 18, 1,
                                                                 "seed-2016-04"))
    assert exit.value.code == 2
    assert "run test_model.py normal 18" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        choose(["normal", 2, "--arch", "paper", "--weights", "x.pklz"],
               shapes("normal", 2, 1, "seed"))
    assert exit.value.code == 2
    with pytest.raises(SystemExit):
        choose(["bottleneck", 2, "--arch", "seed-2016-04", "--weights", "x.pklz"],
               shapes("bottleneck", 2, 1, "seed"))


def test_every_architecture_sets_every_key():
    keys = set(models.ARCHITECTURES["paper"])
    assert all(set(spec) == keys for spec in models.ARCHITECTURES.values())


def test_the_published_files_table_agrees_with_the_graphs():
    for name, entry in models.OLD_WEIGHTS_FILES.items():
        variant, depth, width = entry["network"]
        assert variant in models.ARCHITECTURES[entry["arch"]]["variants"]
        assert entry["commit"].split()[0] in models.ARCHITECTURES[entry["arch"]]["source"]


# -- inputs ----------------------------------------------------------------------


def test_input_check_tells_inputs_prepared_as_in_training_from_others():
    net = fresh_net("seed-2016-04", depth=1)
    values = net.param_values()
    images = np.random.default_rng(4).integers(0, 256, (12, 3, 32, 32)).astype(np.uint8)
    assert test_model.stem_input_check(values, images, {"mean": 0, "std": 1}) is None
    scaled = {"kind": "divide_by_255", "mean": np.zeros((1, 1, 1), np.float32),
              "std": np.full((1, 1, 1), 255, np.float32)}
    x = utils.normalise(images, scaled)
    stem = np.array([[sum(scipy.signal.correlate2d(x[b, c], values[0][o, c], mode="same")
                          for c in range(3)) for o in range(16)] for b in range(len(x))])
    values[3] = stem.mean(axis=(0, 2, 3))
    values[4] = 1 / stem.std(axis=(0, 2, 3))
    fit = test_model.stem_input_check(values, images, scaled)
    assert fit["spread"] == pytest.approx(1, rel=1e-4) and fit["shift"] < 1e-4
    pixel_mean = utils.normalisation_stats("pixel_mean", images)
    assert test_model.stem_input_check(values, images, pixel_mean)["spread"] > 100


# -- the program -----------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """200 training and 100 test images whose colour is their class."""
    root = tmp_path_factory.mktemp("old-weights-data")
    write_tiny_cifar10(root, images=coloured_images)
    return root


def preparations(train_images):
    """The ways of preparing the inputs an evaluation might take, as
    utils.normalise's statistics, computed here: the old code's mean image of
    the training images (no scaling), its first version's division by 255,
    and the papers' per-channel mean and standard deviation."""
    x = train_images.astype(np.float64)
    return {"pixel_mean": {"kind": "pixel_mean", "mean": x.mean(axis=0).astype(np.float32),
                           "std": np.ones((1, 1, 1), np.float32)},
            "divide_by_255": {"kind": "divide_by_255", "mean": np.zeros((1, 1, 1), np.float32),
                              "std": np.full((1, 1, 1), 255, np.float32)},
            "channel_mean_std": {
                "kind": "channel_mean_std",
                "mean": x.mean(axis=(0, 2, 3)).reshape(3, 1, 1).astype(np.float32),
                "std": x.std(axis=(0, 2, 3)).reshape(3, 1, 1).astype(np.float32)}}


# How the old code of each graph prepared its inputs (docs/old-repository.md),
# and the depth the tests use (n = 2 for 2016-04: with one unit per stage its
# stage 1 is the final graph's).
TRAINED_WITH = {"seed": "pixel_mean", "seed-2016-06": "pixel_mean",
                "seed-2016-04": "divide_by_255"}
DEPTH = {"seed": 1, "seed-2016-06": 1, "seed-2016-04": 2}


@pytest.fixture(scope="module")
def trained_old(data):
    """``get(arch)``: a network of the old graph, trained for 5 epochs on the
    200 tiny training images prepared as its code did (the project's training
    step with the seed recipe, lr 0.02, batches of 20), and its predictions on
    the test images under each preparation. Made on first use."""
    dataset = utils.load_dataset("cifar10", str(data), log=lambda *a: None)
    ways = preparations(dataset["train_x"])
    made = {}

    def get(arch):
        if arch not in made:
            net = fresh_net(arch, depth=DEPTH[arch], seed=5)
            step, learning_rate, _ = train_nn.compile_training_step(
                net, train_nn.resolve_recipe("seed", "normal"))
            learning_rate.set_value(np.float32(0.02))
            x = utils.normalise(dataset["train_x"], ways[TRAINED_WITH[arch]])
            y = dataset["train_y"]
            rng = np.random.default_rng(1)
            for _ in range(5):
                order = rng.permutation(len(x))
                for start in range(0, len(x), 20):
                    step(x[order[start:start + 20]], y[order[start:start + 20]])
            predictions = {kind: models.predict_labels(net, dataset["test_x"], stats)
                           for kind, stats in ways.items()}
            made[arch] = {"net": net, "predictions": predictions, "stats": ways,
                          "test_y": dataset["test_y"]}
        return made[arch]
    return get


def expected_confusion(trained, arch, kind=None):
    """The confusion matrix of the network's predictions with the inputs
    prepared as ``kind`` (default: as its graph was trained), after checking
    that the comparison can fail: the predictions vary, and every other
    preparation predicts otherwise."""
    predictions = trained["predictions"]
    right = predictions[kind or TRAINED_WITH[arch]]
    assert len(set(right.tolist())) >= 3, "a network that gives few classes tells nothing"
    for other, wrong in predictions.items():
        if other != (kind or TRAINED_WITH[arch]):
            assert (wrong != right).sum() >= 5, other
    return confusion_of(trained["test_y"], right, 10)


def same_as_npz(trained, arch, data, tmp_path, pklz_args):
    """Evaluate a trained ``arch`` network's parameters from an old-style .pklz
    and from this project's .npz (with the normalisation its graph was trained
    with): both give the predictions made in-process with that normalisation.
    Returns the .pklz run's stdout and report."""
    net, kind = trained["net"], TRAINED_WITH[arch]
    pklz = write_old_pklz(tmp_path / "old.pklz", net.param_values())
    stats = trained["stats"][kind]
    if kind == "pixel_mean":
        np.save(tmp_path / "pixel_mean.npy", stats["mean"])
        pklz_args = pklz_args + ["--pixel-mean", tmp_path / "pixel_mean.npy"]
    models.save_weights(str(tmp_path / "new.npz"), net, stats)
    depth = str(DEPTH[arch])
    old = run_cli(TEST, "normal", depth, "--weights", pklz, "--data-dir", data, *pklz_args)
    assert old.returncode == 0, old.stderr
    new = run_cli(TEST, "normal", depth, "--arch", arch, "--weights", tmp_path / "new.npz",
                  "--data-dir", data)
    assert new.returncode == 0, new.stderr
    report = json.loads((tmp_path / "old-test.json").read_text())
    expected = expected_confusion(trained, arch)
    assert report["confusion"] == expected
    assert json.loads((tmp_path / "new-test.json").read_text())["confusion"] == expected
    assert report["old_weights"]["graph"] == arch
    # prepared as in training: the stem's batch norm sees what it was trained on
    check, = input_check_lines(old.stdout)
    assert check.startswith("input check:"), check
    return old.stdout, report


def input_check_lines(stdout):
    """What test_model.py says of the inputs' fit to the file's first batch norm."""
    return [line for line in stdout.splitlines() if "the first batch norm sees" in line]


@pytest.mark.slow
def test_program_evaluates_a_final_graph_file(data, trained_old, tmp_path):
    stdout, _ = same_as_npz(trained_old("seed"), "seed", data, tmp_path, ["--arch", "seed"])
    assert "using graph seed (--arch)" in stdout
    # Without --arch the file fits two graphs that compute different functions.
    result = run_cli(TEST, "normal", 1, "--weights", tmp_path / "old.pklz", "--data-dir", data)
    assert result.returncode == 2
    assert "seed, seed-2016-06" in result.stderr and "--arch" in result.stderr


@pytest.mark.slow
def test_program_evaluates_a_2016_06_file(data, trained_old, tmp_path):
    stdout, report = same_as_npz(trained_old("seed-2016-06"), "seed-2016-06", data, tmp_path,
                                 ["--arch", "seed-2016-06"])
    assert "using graph seed-2016-06 (--arch)" in stdout
    assert report["old_weights"]["inputs"] == "pixel_mean"


@pytest.mark.slow
def test_program_evaluates_a_2016_04_file_divided_by_255(data, trained_old, tmp_path):
    stdout, report = same_as_npz(trained_old("seed-2016-04"), "seed-2016-04", data, tmp_path,
                                 [])
    assert "using graph seed-2016-04 (the only old graph of normal 2" in stdout
    assert report["old_weights"]["inputs"] == "divide_by_255"


@pytest.mark.slow
def test_without_pixel_mean_the_training_images_mean_is_subtracted(data, trained_old,
                                                                   tmp_path):
    trained = trained_old("seed-2016-06")
    pklz = write_old_pklz(tmp_path / "old.pklz", trained["net"].param_values())
    result = run_cli(TEST, "normal", 1, "--arch", "seed-2016-06", "--weights", pklz,
                     "--data-dir", data)
    assert result.returncode == 0, result.stderr
    assert "no --pixel-mean: using the mean image of all training images" in result.stdout
    report = json.loads((tmp_path / "old-test.json").read_text())
    assert report["confusion"] == expected_confusion(trained, "seed-2016-06", "pixel_mean")


@pytest.mark.slow
def test_a_pixel_mean_of_another_shape_is_refused_in_one_line(data, tmp_path):
    pklz = write_old_pklz(tmp_path / "old.pklz", fresh_net("seed-2016-06", depth=1).param_values())
    np.save(tmp_path / "channel_mean.npy", np.full((3, 1, 1), 120, np.float32))
    result = run_cli(TEST, "normal", 1, "--arch", "seed-2016-06", "--weights", pklz,
                     "--pixel-mean", tmp_path / "channel_mean.npy", "--data-dir", data)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "channel_mean.npy: a mean image has shape (3, 32, 32), found (3, 1, 1)" in lines[0]
    assert not (tmp_path / "old-test.json").exists()


@pytest.mark.slow
def test_the_input_check_warns_when_inputs_are_not_prepared_as_in_training(data, trained_old,
                                                                           tmp_path):
    """A file trained on mean-subtracted images evaluated with a mean image of
    zeros (the raw pixels): the first batch norm's inputs lie far from the
    mean it was trained with, and the program says so."""
    pklz = write_old_pklz(tmp_path / "old.pklz",
                          trained_old("seed-2016-06")["net"].param_values())
    np.save(tmp_path / "zeros.npy", np.zeros((3, 32, 32), np.float32))
    result = run_cli(TEST, "normal", 1, "--arch", "seed-2016-06", "--weights", pklz,
                     "--pixel-mean", tmp_path / "zeros.npy", "--data-dir", data)
    assert result.returncode == 0, result.stderr
    check, = input_check_lines(result.stdout)
    assert check.startswith("warning:") and "not prepared as in training" in check, check
    fit = json.loads((tmp_path / "old-test.json").read_text())["old_weights"]["input_check"]
    assert fit["shift"] > 2


@pytest.mark.slow
def test_program_refuses_the_110_file_in_the_final_graph_in_one_line(tmp_path):
    pklz = write_old_pklz(tmp_path / FILE_110,
                          fresh_net("seed-2016-04", depth=18).param_values())
    result = run_cli(TEST, "normal", 18, "--arch", "seed", "--weights", pklz)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "parameter 12" in result.stderr and "--arch seed-2016-04" in result.stderr
