"""Pre-activation ResNets and Wide ResNets for 32x32 CIFAR images, as Lasagne graphs.

One unit builder, ``residual_unit``, serves all three variants; ``build_model``
stacks units into three stages. Beside the graphs live what belongs to a
network: its names, the papers' error rates, its weights (``Network``,
``save_weights``, ``load_weights``) and its evaluation (``predict_labels``,
``classification_report``).

- ``normal``: PreResNet of depth 6n+2 with basic units (He et al. 2016,
  "Identity Mappings in Deep Residual Networks", arXiv 1603.05027, Fig. 4e).
- ``bottleneck``: PreResNet of depth 9n+2 with bottleneck units (same paper,
  Sec. 4.1 and Table 3; the authors' code is resnet-pre-act.lua in
  KaimingHe/resnet-1k-layers).
- ``wide``: WRN-(6n+4)-k (Zagoruyko & Komodakis 2016, "Wide Residual Networks",
  arXiv 1605.07146, Table 1; the authors' code is models/wide-resnet.lua).

``depth`` keeps the old repository's meaning: n, the number of units per stage;
the number of weighted layers (110 in PreResNet-110) is ``layer_count``.

``arch="paper"`` is the papers' networks, layer for layer and parameter for
parameter. ``arch="seed"`` is the final graph of the 2016 Lasagne repository this
project re-creates (see ARCHITECTURES for each difference). Its published weights
were trained with earlier versions of its code: ``arch="seed-2016-06"`` (the
164-layer and wide files) and ``arch="seed-2016-04"`` (the 110-layer file) are
those graphs, so that the files can be loaded into the function they were
trained for and their numbers checked (``OLD_WEIGHTS_FILES``).
"""
import argparse
import math
from collections import OrderedDict

import numpy as np

# engine first: importing it configures Theano before Lasagne imports Theano.
from engine.layers import BatchNormLayer, CrossCorrelation2DLayer
import theano
import theano.tensor as T
import lasagne
from lasagne import init
from lasagne.layers import (DenseLayer, DropoutLayer, ElemwiseSumLayer,
                            GlobalPoolLayer, InputLayer, count_params, get_all_layers,
                            get_all_params, get_output)
from lasagne.nonlinearities import rectify, softmax

import utils

# -----------------------------------------------------------------------------
# What varies between the variants and between the two architectures: data.

VARIANTS = {
    # unit: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion);
    # filters: the 3x3 convolutions' channels per stage, before widening;
    # layers_per_unit and extra_layers: the weighted layers, 6n+2, 9n+2, 6n+4
    # (stem and classifier; WRN counts its three projections, Sec. 2).
    "normal": {"unit": "basic", "filters": (16, 32, 64), "layers_per_unit": 2,
               "extra_layers": 2},
    "bottleneck": {"unit": "bottleneck", "filters": (16, 32, 64), "layers_per_unit": 3,
                   "extra_layers": 2},
    "wide": {"unit": "basic", "filters": (16, 32, 64), "layers_per_unit": 2,
             "extra_layers": 4},
}
BOTTLENECK_EXPANSION = 4  # output channels of a bottleneck unit = 4 x inner (Sec. 4.1)
STEM_FILTERS = 16

ARCHITECTURES = {
    "paper": {
        "source": "resnet-pre-act.lua (KaimingHe/resnet-1k-layers), fb.resnet.torch "
                  "models/resnet.lua, wide-resnet.lua (szagoruyko/wide-residual-networks)",
        # Torch's ConvInit / utils.DisableBias remove every convolution bias.
        "last_conv_bias": False,
        # resnet-pre-act.lua: Convolution(nInputPlane, n, 1, 1, stride, stride)
        # -- the stride sits on the first 1x1 of a bottleneck unit.
        "bottleneck_stride_on": 0,
        # wide-resnet.lua: layer(wide_basic, ..., n, stride) for all three stages.
        "extra_units": (0, 0, 0),
        # cudnn/nn SpatialBatchNormalization defaults: eps 1e-5, momentum 0.1,
        # running average of the unbiased variance.
        "batch_norm": {"epsilon": 1e-5, "alpha": 0.1, "running": "var"},
        # MSRinit: N(0, sqrt(2 / (k*k*out_channels))) for every convolution
        # (projections too); Linear keeps Torch's U(+-1/sqrt(fan_in)), bias 0.
        "conv_init": "he_fan_out",
        "projection_init": "he_fan_out",
        "dense_init": "torch_linear",
        "description": None,
        "variants": ("normal", "bottleneck", "wide"),
        # resnet-pre-act.lua: every unit but the first pre-activates its input,
        # and a projection reads the pre-activated input ('both_preact').
        "stage1_preact_bn": True,
        "projection_reads": "preactivated",
        # No .pklz files: this project's weights carry their normalisation.
        "old_inputs": None,
    },
    "seed": {
        "source": "the 2016 Lasagne repository's final models.py, commit 51bc6b3 of "
                  "2016-08-12 (docs/old-repository.md)",
        # How display_name says which graph this is.
        "description": "old repository's graph",
        # Its last convolution of a unit is not wrapped by batch_norm(), so it
        # keeps a bias: 2,016 more parameters in PreResNet-110.
        "last_conv_bias": True,
        # Its bottleneck puts the stride on the 3x3 convolution.
        "bottleneck_stride_on": 1,
        # Its wide stages 2 and 3 loop to n+2 units: "n=2, k=4" is 2/4/4 units.
        "extra_units": (0, 2, 2),
        # Lasagne master's BatchNormLayer defaults.
        "batch_norm": {"epsilon": 1e-4, "alpha": 0.1, "running": "inv_std"},
        "conv_init": "he_fan_in_relu",
        "projection_init": "glorot_uniform",
        "dense_init": "he_fan_in",
        "variants": ("normal", "bottleneck", "wide"),
        # Units 2..n of stage 1 have their own BN-ReLU (residual_block(l) for
        # range(1, n)).
        "stage1_preact_bn": True,
        # "Fixed bug in projection shortcut": ConvLayer(bn_pre_relu, ...).
        "projection_reads": "preactivated",
        # Its utils.py subtracted the 45,000 training images' mean image
        # (data/pixel_mean.npy), no scaling.
        "old_inputs": "pixel_mean",
    },
}
# The graphs the old repository's published weights were trained with
# (docs/old-repository.md, "History"): its models.py at the commit that added
# each file. Everything not set here is as in "seed".
ARCHITECTURES.update({
    "seed-2016-06": dict(
        ARCHITECTURES["seed"],
        source="the old repository's models.py as of 3403cfb (2016-06-06, "
               "resnet164_fullpreactivation.pklz) and fb7ed2a (2016-06-15, "
               "wide_resnet_n2_k4.pklz), before 51bc6b3 (docs/old-repository.md)",
        description="old repository's graph of 2016-06",
        # `projection = ConvLayer(l, ...)` in a downsampling unit of all three
        # networks: the unit's input sum, not its BN-ReLU. Same parameters.
        projection_reads="sum",
        # Its wide units also had a DropoutLayer(p=0.3) between their two
        # convolutions (commented out in 51bc6b3): no parameters, the same
        # evaluation; training like it needs --dropout 0.3.
    ),
    "seed-2016-04": dict(
        ARCHITECTURES["seed"],
        source="the old repository's first models.py, 7c4c997 (2016-04-24, "
               "resnet110_fullpreactivation_638.pklz) (docs/old-repository.md)",
        description="old repository's graph of 2016-04",
        # Its stage 1 is `for _ in range(n): l = residual_block(l, first=True)`:
        # no unit of stage 1 has a BN-ReLU of its own, units 2..n read the
        # previous sum directly (535 arrays instead of 603 for n = 18).
        stage1_preact_bn=False,
        # `projection = ConvLayer(l, ...)`, as in 2016-06.
        projection_reads="sum",
        # Its bottleneck differs in more ways (a 64-filter stem, the stride on
        # the first 1x1, no stage-1 projection) and it had no wide network;
        # only its normal network has published weights.
        variants=("normal",),
        # Its utils.py divided the images by 255 and subtracted no mean.
        old_inputs="divide_by_255",
    ),
})


def _conv_init(name, in_channels, out_channels, size):
    if name == "he_fan_out":
        return init.Normal(std=math.sqrt(2.0 / (size * size * out_channels)))
    if name == "he_fan_in_relu":
        return init.HeNormal(gain="relu")
    if name == "glorot_uniform":
        return init.GlorotUniform()
    raise ValueError("unknown initialisation %r" % name)


def _dense_init(name, fan_in):
    if name == "torch_linear":  # nn.Linear:reset()
        return init.Uniform(range=1.0 / math.sqrt(fan_in))
    if name == "he_fan_in":
        return init.HeNormal()
    raise ValueError("unknown initialisation %r" % name)


# -----------------------------------------------------------------------------
# Building blocks


def bn_relu(incoming, spec, name):
    """Batch normalisation then ReLU (one layer): the "pre-activation" of He et
    al. 2016."""
    return BatchNormLayer(incoming, nonlinearity=rectify, name=name + ".bn",
                          **spec["batch_norm"])


def conv(incoming, filters, size, stride, init_name, name, bias=False):
    in_channels = incoming.output_shape[1]
    return CrossCorrelation2DLayer(incoming, filters, size, stride,
                                   W=_conv_init(init_name, in_channels, filters, size),
                                   b=init.Constant(0) if bias else None, name=name)


def residual_unit(incoming, filters, stride, unit, spec, preactivated=False,
                  dropout=0.0, name="unit"):
    """One full pre-activation residual unit (He et al. 2016, Fig. 4e).

    Parameters
    ----------
    incoming : Layer
        The previous unit's output (a sum, not yet activated), or, for the very
        first unit, the stem's already activated output.
    filters : int
        Channels of the unit's 3x3 convolution.
    stride : int
        2 where the unit halves the image (first unit of stages 2 and 3).
    unit : {'basic', 'bottleneck'}
        basic: BN-ReLU-conv3x3-BN-ReLU-conv3x3. bottleneck:
        BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 with 4x filters out.
    spec : dict
        An entry of ``ARCHITECTURES``.
    preactivated : bool
        True for the first unit: the stem's BN-ReLU is its pre-activation
        ('no_preact' in resnet-pre-act.lua; the same graph in wide-resnet.lua).
        True for every unit of stage 1 in the old repository's graph of
        2016-04 (``stage1_preact_bn`` False): there units 2..n feed the
        previous unit's sum to their first convolution as it is.
    dropout : float
        Dropout probability between the two 3x3 convolutions of a basic unit
        (WRN, Sec. 2.3); 0 for none.
    name : str
        Prefix of the layers' names (parameters are named after the layers).

    Returns
    -------
    ElemwiseSumLayer
        ``branch + shortcut``, listing the branch first as the old code did.
    """
    in_channels = incoming.output_shape[1]
    activated = incoming if preactivated else bn_relu(incoming, spec, name + ".pre")
    if unit == "basic":
        convs = [(3, filters), (3, filters)]
    else:
        convs = [(1, filters), (3, filters), (1, filters * BOTTLENECK_EXPANSION)]
    stride_on = 0 if unit == "basic" else spec["bottleneck_stride_on"]
    out_channels = convs[-1][1]

    branch = activated
    for i, (size, channels) in enumerate(convs):
        last = i == len(convs) - 1
        if i > 0:
            branch = bn_relu(branch, spec, "%s.conv%d" % (name, i))
            if dropout > 0 and last:
                branch = DropoutLayer(branch, p=dropout, name=name + ".dropout")
        branch = conv(branch, channels, size, stride if i == stride_on else 1,
                      spec["conv_init"], "%s.conv%d" % (name, i + 1),
                      bias=last and spec["last_conv_bias"])

    if stride != 1 or in_channels != out_channels:
        # Projection from the pre-activated input (resnet-pre-act.lua's
        # 'both_preact' block; wide-resnet.lua applies BN-ReLU before its
        # ConcatTable when the channel count changes), or, in the old
        # repository's graphs before 51bc6b3, from the unit's input sum.
        source = {"preactivated": activated, "sum": incoming}[spec["projection_reads"]]
        shortcut = conv(source, out_channels, 1, stride, spec["projection_init"],
                        name + ".projection")
    else:
        shortcut = incoming
    return ElemwiseSumLayer([branch, shortcut], name=name + ".sum")


def check_arguments(variant, depth, width=1, num_classes=10, dropout=0.0, arch="paper"):
    """Raise ValueError, with what is wrong, for a network that cannot be built."""
    if variant not in VARIANTS:
        raise ValueError("unknown variant %r: choose one of %s"
                         % (variant, ", ".join(VARIANTS)))
    if arch not in ARCHITECTURES:
        raise ValueError("unknown arch %r: choose one of %s"
                         % (arch, ", ".join(ARCHITECTURES)))
    if variant not in ARCHITECTURES[arch]["variants"]:
        raise ValueError("arch %r has %s networks only" % (
            arch, " and ".join(ARCHITECTURES[arch]["variants"])))
    for label, value in (("depth n", depth), ("width k", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError("%s must be an integer >= 1, got %r" % (label, value))
    if variant != "wide" and width != 1:
        raise ValueError("width k applies to wide networks only, not %r" % variant)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError("num_classes must be an integer >= 2, got %r" % (num_classes,))
    if not 0.0 <= dropout < 1.0:
        raise ValueError("dropout must be in [0, 1), got %r" % (dropout,))
    if dropout > 0 and variant != "wide":
        raise ValueError("dropout is defined for wide networks only (WRN Sec. 2.3)")


def layer_count(variant, depth):
    """Weighted layers of a network with n = ``depth`` units per stage: 6n+2
    (normal), 9n+2 (bottleneck) or 6n+4 (wide)."""
    spec = VARIANTS[variant]
    return 3 * spec["layers_per_unit"] * depth + spec["extra_layers"]


def stage_units(variant, depth, arch="paper"):
    """Units in each of the three stages."""
    extra = ARCHITECTURES[arch]["extra_units"] if variant == "wide" else (0, 0, 0)
    return tuple(depth + e for e in extra)


def build_model(variant, depth, width=1, num_classes=10, dropout=0.0,
                input_var=None, arch="paper"):
    """Build a network and return its softmax output layer.

    Parameters
    ----------
    variant : {'normal', 'bottleneck', 'wide'}
        The network's variant (see the module docstring).
    depth : int
        n, the number of residual units per stage (the old repository's
        argument): 18 gives PreResNet-110 (normal) or PreResNet-164
        (bottleneck); 2 with width 4 gives WRN-16-4.
    width : int
        k, the widening factor of wide networks; must be 1 for the others.
    num_classes : int
        10 for CIFAR-10, 100 for CIFAR-100.
    dropout : float
        Dropout between the 3x3 convolutions of wide units (0 or 0.3 in WRN).
    input_var : theano tensor4 or None
        The input variable, shape ``(batch, 3, 32, 32)``.
    arch : {'paper', 'seed', 'seed-2016-06', 'seed-2016-04'}
        The papers' networks, the old repository's final graphs, or the
        earlier graphs its published weights were trained with.

    Returns
    -------
    DenseLayer
        The softmax output layer; the whole network hangs from it.

    Raises
    ------
    ValueError
        For an unknown variant or arch, n < 1, k < 1, k != 1 for a non-wide
        network, fewer than 2 classes, or dropout outside [0, 1) or on a
        non-wide network.
    """
    check_arguments(variant, depth, width, num_classes, dropout, arch)
    spec = ARCHITECTURES[arch]
    unit_spec = VARIANTS[variant]

    network = InputLayer((None, 3, 32, 32), input_var=input_var, name="input")
    network = conv(network, STEM_FILTERS, 3, 1, spec["conv_init"], "stem.conv")
    network = bn_relu(network, spec, "stem")
    for stage, (filters, units) in enumerate(
            zip(unit_spec["filters"], stage_units(variant, depth, arch))):
        for index in range(units):
            network = residual_unit(
                network, filters * width, stride=2 if stage > 0 and index == 0 else 1,
                unit=unit_spec["unit"], spec=spec,
                preactivated=stage == 0 and (index == 0 or not spec["stage1_preact_bn"]),
                dropout=dropout, name="stage%d.unit%d" % (stage + 1, index + 1))
    network = bn_relu(network, spec, "head")
    network = GlobalPoolLayer(network, name="head.pool")
    features = network.output_shape[1]
    return DenseLayer(network, num_classes,
                      W=_dense_init(spec["dense_init"], features),
                      b=init.Constant(0), nonlinearity=softmax, name="head.dense")


def network_name(variant, depth, width=1, arch="paper", num_classes=10):
    """Short file-safe name, e.g. ``preresnet110``, ``wrn16-4``, ``seed-wide-n2-k4``.

    CIFAR-100 networks get a ``-cifar100`` suffix.
    """
    check_arguments(variant, depth, width, num_classes, 0.0, arch)
    layers = layer_count(variant, depth)
    if variant == "wide":
        name = ("wrn%d-%d" % (layers, width) if arch == "paper"
                else "wide-n%d-k%d" % (depth, width))
    else:
        name = "preresnet%d" % layers
    if arch != "paper":
        name = arch + "-" + name
    return name + ("-cifar100" if num_classes == 100 else
                   "" if num_classes == 10 else "-%dclasses" % num_classes)


def display_name(variant, depth, width=1, arch="paper"):
    """Human name, e.g. ``PreResNet-110``, ``WRN-16-4`` or ``PreResNet-110 (old
    repository's graph of 2016-04)``."""
    layers = layer_count(variant, depth)
    units = stage_units(variant, depth, arch)
    if variant == "wide" and units != (depth,) * 3:
        # Not a WRN-(6n+4)-k: the old repository's n+2 units in stages 2 and 3.
        name = ("wide net, n=%d k=%d: %d/%d/%d units, %d layers"
                % ((depth, width) + units + (2 * sum(units) + 2,)))
    elif variant == "wide":
        name = "WRN-%d-%d" % (layers, width)
    else:
        name = "PreResNet-%d" % layers
    description = ARCHITECTURES[arch]["description"]
    return name + (" (%s)" % description if description else "")


# -----------------------------------------------------------------------------
# What identifies a network, and the published numbers to compare it with.

# Published CIFAR test error (%) of each paper network: (name, dataset, dropout).
PAPER_TEST_ERROR = {
    # He et al. 2016 (arXiv 1603.05027), its CIFAR results (full pre-activation).
    ("preresnet110", "cifar10", False): 6.37,
    ("preresnet164", "cifar10", False): 5.46,
    ("preresnet164", "cifar100", False): 24.33,
    # Zagoruyko & Komodakis 2016 (arXiv 1605.07146), its CIFAR results (dropout 0.3).
    ("wrn16-4", "cifar10", False): 5.02,
    ("wrn16-4", "cifar10", True): 5.24,
    ("wrn16-4", "cifar100", False): 24.03,
    ("wrn28-10", "cifar10", False): 4.00,
    ("wrn28-10", "cifar10", True): 3.89,
    ("wrn28-10", "cifar100", False): 19.25,
}


def paper_error(network, dropout):
    """The paper's test error for ``network`` (a ``network_info`` dict), or None."""
    base = network["name"].replace("-cifar100", "")
    return PAPER_TEST_ERROR.get((base, network["dataset"], dropout > 0))


def network_info(variant, depth, width, arch, dataset, dropout=0.0):
    """What identifies a network (and its weights files). ValueError if it
    cannot be built."""
    num_classes = utils.DATASETS[dataset]["num_classes"]
    check_arguments(variant, depth, width, num_classes, dropout, arch)
    return {"name": network_name(variant, depth, width, arch, num_classes),
            "display": display_name(variant, depth, width, arch),
            "variant": variant, "depth": depth, "width": width, "arch": arch,
            "dataset": dataset, "num_classes": num_classes, "dropout": dropout}


# -----------------------------------------------------------------------------
# A built network: its parameters, weights files and evaluation.


class Network:
    """A network built from a ``network_info`` dict, with its parameters and
    its compiled evaluation function.

    ``predict(x) -> class probabilities`` uses the batch-norm running
    averages; it is compiled at its first use (``compile_predict``).
    """

    def __init__(self, info, seed=0, input_var=None):
        # Lasagne draws initial weights and dropout seeds from this generator.
        lasagne.random.set_rng(np.random.RandomState(seed))
        self.info = info
        self.input_var = T.tensor4("images") if input_var is None else input_var
        self.output = build_model(
            info["variant"], info["depth"], info["width"], info["num_classes"],
            info.get("dropout", 0.0), self.input_var, info["arch"])
        self.params = get_all_params(self.output)
        self.trainable_count = count_params(self.output, trainable=True)
        self._predict_fn = None

    def compile_predict(self):
        prediction = get_output(self.output, deterministic=True)
        self._predict_fn = theano.function([self.input_var], prediction)

    def predict(self, images):
        if self._predict_fn is None:
            self.compile_predict()
        return self._predict_fn(images)

    def param_names(self):
        return ["%s %s" % (p.name, p.get_value(borrow=True).shape) for p in self.params]

    def param_values(self):
        return [p.get_value() for p in self.params]

    def set_param_values(self, values, source, source_network):
        """Load ``values`` (in ``self.params`` order) after checking every shape."""
        expected = [(p.name, p.get_value(borrow=True).shape) for p in self.params]
        utils.check_parameters(expected, [v.shape for v in values], source,
                               source_network, self.info["name"])
        for param, value in zip(self.params, values):
            param.set_value(np.asarray(value, dtype=param.dtype))

    def random_state_vars(self):
        """Shared variables holding the dropout layers' random-stream states."""
        return [state for layer in get_all_layers(self.output)
                if hasattr(layer, "_srng")
                for state, *_ in layer._srng.state_updates]


# The old repository's published weights (its data/weights/): the network
# each was made for, the graph it was trained with (the models.py of the commit
# that added it, docs/old-repository.md) and the test error its README gave.
OLD_WEIGHTS_FILES = {
    "resnet110_fullpreactivation_638.pklz": {
        "network": ("normal", 18, 1), "arch": "seed-2016-04",
        "commit": "7c4c997 (2016-04-24)", "test_error": 6.38},
    "resnet164_fullpreactivation.pklz": {
        "network": ("bottleneck", 18, 1), "arch": "seed-2016-06",
        "commit": "3403cfb (2016-06-06)", "test_error": 5.66},
    "wide_resnet_n2_k4.pklz": {
        "network": ("wide", 2, 4), "arch": "seed-2016-06",
        "commit": "fb7ed2a (2016-06-15)", "test_error": 5.41},
}


def old_graphs(variant):
    """The old repository's graphs (those with ``old_inputs``) that have
    ``variant`` networks."""
    return [arch for arch, spec in ARCHITECTURES.items()
            if spec["old_inputs"] and variant in spec["variants"]]


def parameter_shapes(variant, depth, width=1, num_classes=10, arch="paper"):
    """``(name, shape)`` of every parameter in ``get_all_params`` order (the
    order the old repository's .pklz files list them in). Builds the graph, no
    compiling."""
    output = build_model(variant, depth, width, num_classes, arch=arch)
    return [(p.name, p.get_value(borrow=True).shape) for p in get_all_params(output)]


def save_weights(path, net, stats, groups=None, records=None):
    """Write ``net``'s parameters and input normalisation (``utils.write_weights``;
    a checkpoint adds ``groups`` of arrays and JSON ``records``)."""
    utils.write_weights(path, net.info, net.param_names(), net.param_values(), stats,
                        groups, records)


def load_weights(path, net):
    """Load a weights file of this project into ``net``; returns the whole file
    as ``utils.read_weights`` reads it."""
    weights = utils.read_weights(path)
    net.set_param_values(weights["values"], path, weights["network"].get("name", "?"))
    return weights


def predict_labels(net, images, stats, batch_size=500, on_batch=None):
    """Predicted class of every image, evaluated in batches (``stats`` is the
    normalisation the weights were trained with). ``on_batch(count)`` is
    called after each batch with the number of batches done."""
    predictions = []
    for count, start in enumerate(range(0, len(images), batch_size), 1):
        probabilities = net.predict(utils.normalise(images[start:start + batch_size], stats))
        predictions.append(np.argmax(probabilities, axis=1))
        if on_batch is not None:
            on_batch(count)
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)


def error_percent(net, images, labels, stats):
    """Test or validation error in %, or None for no images."""
    if len(images) == 0:
        return None
    return 100.0 * float(np.mean(predict_labels(net, images, stats) != labels))


def classification_report(labels, predictions, label_names):
    """Error %, per-class accuracy % and the confusion matrix
    (rows: true class, columns: predicted class)."""
    k = len(label_names)
    confusion = np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)
    per_class = 100.0 * np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return {"count": int(len(labels)),
            "error": 100.0 * float(np.mean(labels != predictions)) if len(labels) else None,
            "per_class_accuracy": OrderedDict(zip(label_names, per_class.tolist())),
            "confusion": confusion.tolist(),
            "label_names": list(label_names)}


# -----------------------------------------------------------------------------
# The network's command-line arguments, shared by train_nn.py and test_model.py.


class UsageParser(argparse.ArgumentParser):
    """An argument error is one line and the usage line, then exit 2."""

    def error(self, message):
        self.exit(2, "usage: %s\nerror: %s\n" % (self.usage, message))


def add_network_arguments(parser, optional=False):
    """VARIANT DEPTH [WIDTH], --arch and --dataset."""
    nargs = "?" if optional else None
    parser.add_argument("variant", metavar="VARIANT", nargs=nargs, choices=list(VARIANTS),
                        help="normal (PreResNet, 6n+2 layers), bottleneck "
                             "(PreResNet, 9n+2) or wide (WRN-(6n+4)-k)")
    parser.add_argument("depth", metavar="DEPTH", nargs=nargs, type=int,
                        help="n, residual units per stage (18: PreResNet-110/164)")
    parser.add_argument("width", metavar="WIDTH", nargs="?", type=int,
                        help="k, the widening factor (wide networks only)")
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default=None,
                        help="; ".join("%s: %s" % (arch, spec["description"] or
                                                   "the papers' networks (default)")
                                       for arch, spec in ARCHITECTURES.items()))
    parser.add_argument("--dataset", choices=list(utils.DATASETS), default=None,
                        help="cifar10 (default) or cifar100")


def check_network_arguments(parser, args):
    """Usage errors (exit code 2) for a VARIANT/DEPTH/WIDTH that cannot be built."""
    if args.variant is None or args.depth is None:
        parser.error("VARIANT and DEPTH are required, e.g. `normal 18`")
    if args.depth < 1:
        parser.error("DEPTH (units per stage) must be at least 1, got %d" % args.depth)
    if args.variant == "wide" and args.width is None:
        parser.error("wide networks need WIDTH, e.g. `wide 2 4` for WRN-16-4")
    if args.variant != "wide" and args.width is not None:
        parser.error("WIDTH applies to wide networks only; `%s %d` takes none"
                     % (args.variant, args.depth))
    if args.width is not None and args.width < 1:
        parser.error("WIDTH must be at least 1, got %d" % args.width)


# -----------------------------------------------------------------------------
# The old repository's function names, as thin aliases.


def ResNet_FullPreActivation(input_shape=(None, 3, 32, 32), input_var=None,
                             n_classes=10, n=18, **kwargs):
    """PreResNet with basic units, depth 6n+2 (old name)."""
    _check_input_shape(input_shape)
    return build_model("normal", n, num_classes=n_classes, input_var=input_var, **kwargs)


def ResNet_BottleNeck_FullPreActivation(input_shape=(None, 3, 32, 32), input_var=None,
                                        n_classes=10, n=18, **kwargs):
    """PreResNet with bottleneck units, depth 9n+2 (old name)."""
    _check_input_shape(input_shape)
    return build_model("bottleneck", n, num_classes=n_classes, input_var=input_var,
                       **kwargs)


def ResNet_FullPre_Wide(input_shape=(None, 3, 32, 32), input_var=None,
                        n_classes=10, n=2, k=4, **kwargs):
    """Wide ResNet, WRN-(6n+4)-k (old name)."""
    _check_input_shape(input_shape)
    return build_model("wide", n, width=k, num_classes=n_classes, input_var=input_var,
                       **kwargs)


def _check_input_shape(input_shape):
    if tuple(input_shape)[1:] != (3, 32, 32):
        raise ValueError("these networks take (batch, 3, 32, 32) images, got %r"
                         % (input_shape,))
