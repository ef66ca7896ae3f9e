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
                            GlobalPoolLayer, InputLayer, Layer, MergeLayer, NonlinearityLayer,
                            count_params, get_all_layers, get_all_params, get_output)
from lasagne.nonlinearities import rectify, sigmoid, softmax

import utils

# -----------------------------------------------------------------------------
# What varies between the variants and between the two architectures: data.

VARIANTS = {
    # block: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion);
    # filters: the 3x3 convolutions' channels per stage, before widening;
    # layers_per_unit and extra_layers: the weighted layers, 6n+2, 9n+2, 6n+4
    # (stem and classifier; WRN counts its three projections, Sec. 2).
    "normal": {"block": "basic", "filters": (16, 32, 64), "layers_per_unit": 2,
               "extra_layers": 2},
    "bottleneck": {"block": "bottleneck", "filters": (16, 32, 64), "layers_per_unit": 3,
                   "extra_layers": 2},
    "wide": {"block": "basic", "filters": (16, 32, 64), "layers_per_unit": 2,
             "extra_layers": 4},
}
BOTTLENECK_EXPANSION = 4  # output channels of a bottleneck unit = 4 x inner (Sec. 4.1)
STEM_FILTERS = 16

# The five residual units of He et al. 2016 (arXiv 1603.05027), Fig. 4 and
# Table 2: "All these units consist of the same components - only the orders
# are different." Each has K weight layers (2 basic, 3 bottleneck), one batch
# norm (B) and one ReLU (R) per weight layer, and the addition; B then R sits
# between two weight layers in all five. What differs is written here: the
# activation before the first weight layer ("pre"), after the last one
# ("last") and after the addition ("after"). Appendix: in the pre-activation
# units (d, e) the first unit takes the activation right after conv1 before
# splitting into two paths (the stem's), and the last unit gets an extra
# activation right after its addition (the head's, "pre" again).
# "basic_grow": the shortcut of a basic network where the channels grow:
# He et al. 2015 Sec. 4.2 uses identity with zero-padding (option A) and He et
# al. 2016's implementation details "are the same as [1]", with projection
# shortcuts named "for the bottleneck ResNets" only (appendix); full
# pre-activation keeps this project's projection from the pre-activated input
# (resnet-pre-act.lua's unit for increasing dimensions), as PreResNet-110
# always had here.
UNITS = OrderedDict([
    ("original", {
        "figure": "4(a)", "display": "original unit",
        # He et al. 2015 Sec. 3.2/4.2 (BN right after each convolution, ReLU
        # after the addition); fb.resnet.torch models/resnet.lua basicblock:
        # conv-BN-ReLU-conv-BN, CAddTable, ReLU.
        "pre": "", "last": "B", "after": "R", "basic_grow": "zero-pad"}),
    ("bn-after-add", {
        "figure": "4(b)", "display": "BN after addition",
        "pre": "", "last": "", "after": "BR", "basic_grow": "zero-pad"}),
    ("relu-before-add", {
        "figure": "4(c)", "display": "ReLU before addition",
        "pre": "", "last": "BR", "after": "", "basic_grow": "zero-pad"}),
    ("relu-preact", {
        "figure": "4(d)", "display": "ReLU-only pre-activation",
        "pre": "R", "last": "B", "after": "", "basic_grow": "zero-pad"}),
    ("full-preact", {
        # resnet-pre-act.lua (KaimingHe/resnet-1k-layers): BN-ReLU-conv ...,
        # CAddTable, nothing after it.
        "figure": "4(e)", "display": "full pre-activation",
        "pre": "BR", "last": "", "after": "", "basic_grow": "projection"}),
])
DEFAULT_UNIT = "full-preact"

# The shortcuts of He et al. 2016 Table 1 (Fig. 2, Sec. 3.1), studied on
# ResNet-110 with the original unit; "values" are what each takes after a
# colon (--shortcut exclusive-gating:-6).
SHORTCUTS = OrderedDict([
    ("identity", {"values": (), "display": "identity"}),
    # Fig. 2(b): h(x) = lambda x for all shortcuts, F scaled by 1 or by 1 - lambda.
    ("scaling", {"values": ("on the shortcut", "on F"), "display": "constant scaling"}),
    # Fig. 2(c): g(x) = sigmoid(W_g x + b_g) by a 1x1 convolution; F scaled by
    # g(x), the shortcut by 1 - g(x); b_g starts at the given value.
    ("exclusive-gating", {"values": ("initial b_g",), "display": "exclusive gating"}),
    # Fig. 2(d): F not scaled, the shortcut by 1 - g(x).
    ("shortcut-gating", {"values": ("initial b_g",), "display": "shortcut-only gating"}),
    # Fig. 2(e): a 1x1 convolution replaces every identity (He et al. 2015's
    # option C; fb.resnet.torch resnet.lua shortcutType 'C': conv then BN).
    ("conv1x1", {"values": (), "display": "1x1 conv shortcut"}),
    # Fig. 2(f): dropout [11] "on the output of the identity shortcut", which
    # "statistically imposes a scale of lambda with an expectation of 0.5 on
    # the shortcut" (Sec. 3.1): the dropout of [11] (Hinton et al. 2012), kept
    # values unscaled in training and the "mean network" (x 0.5) at test time,
    # not the inverted dropout (x 2 in training) under which the expectation
    # would be 1.
    ("dropout", {"values": ("ratio",), "display": "dropout shortcut"}),
])
IDENTITY = "identity"

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


def activation(incoming, ops, spec, name):
    """The activation ``ops`` after ``incoming``: '' (none), 'B' (batch norm),
    'R' (ReLU) or 'BR' (batch norm then ReLU, as one layer with the fused
    ReLU). Layers are named ``<name>.bn`` and ``<name>.relu``."""
    if ops == "":
        return incoming
    if ops in ("B", "BR"):
        return BatchNormLayer(incoming, nonlinearity=rectify if ops == "BR" else None,
                              name=name + ".bn", **spec["batch_norm"])
    if ops == "R":
        return NonlinearityLayer(incoming, rectify, name=name + ".relu")
    raise ValueError("unknown activation %r" % ops)


def conv(incoming, filters, size, stride, init_name, name, bias=None, nonlinearity=None):
    """A 'same' cross-correlation with the initialisation ``init_name``; ``bias``
    None for none, else the biases' initial value."""
    in_channels = incoming.output_shape[1]
    return CrossCorrelation2DLayer(incoming, filters, size, stride,
                                   W=_conv_init(init_name, in_channels, filters, size),
                                   b=None if bias is None else init.Constant(bias),
                                   nonlinearity=nonlinearity, name=name)


class ZeroPadShortcutLayer(Layer):
    """Identity shortcut where a unit halves the image and widens it: option A
    of He et al. 2015 (Sec. 3.3, used for CIFAR in Sec. 4.2).

    ``ZeroPadShortcutLayer(incoming, num_channels, stride, **kwargs)``

    ``y = concat(x[:, :, ::stride, ::stride], 0)`` along the channels: the
    input's channels first, then ``num_channels - C`` channels of zeros, as
    fb.resnet.torch models/resnet.lua builds it (``SpatialAveragePooling(1,
    1, stride, stride)``, then ``Concat(2)`` of ``Identity`` and
    ``MulConstant(0)``). No parameters.

    Parameters
    ----------
    incoming : Layer
        The unit's input, ``(batch, C, H, W)``.
    num_channels : int
        Output channels, at least C.
    stride : int
        Subsampling step (1 or 2); rows and columns 0, stride, 2 stride, ...
        are kept, the centres of a 'same' stride-2 3x3 convolution.
    """

    def __init__(self, incoming, num_channels, stride, **kwargs):
        super(ZeroPadShortcutLayer, self).__init__(incoming, **kwargs)
        if num_channels < self.input_shape[1]:
            raise ValueError("a zero-padded shortcut cannot drop channels (%d -> %d)"
                             % (self.input_shape[1], num_channels))
        self.num_channels, self.stride = num_channels, stride

    def get_output_shape_for(self, input_shape):
        def out(length):
            return None if length is None else (length + self.stride - 1) // self.stride
        return (input_shape[0], self.num_channels, out(input_shape[2]), out(input_shape[3]))

    def get_output_for(self, input, **kwargs):
        kept = input[:, :, ::self.stride, ::self.stride]
        extra = self.num_channels - self.input_shape[1]
        if not extra:
            return kept
        zeros = T.zeros((kept.shape[0], extra, kept.shape[2], kept.shape[3]), kept.dtype)
        return T.concatenate([kept, zeros], axis=1)


class GatedSumLayer(MergeLayer):
    """The gated addition of He et al. 2016 (Sec. 3.1, Fig. 2(c) and 2(d)).

    ``GatedSumLayer([branch, shortcut, gate], exclusive, **kwargs)``

    Exclusive gating: ``y = g * F + (1 - g) * h``; shortcut-only gating:
    ``y = F + (1 - g) * h``, element by element, where ``F`` is the residual
    branch, ``h`` the shortcut and ``g = sigmoid(W_g x + b_g)`` the gate.

    Parameters
    ----------
    incomings : list of three Layers
        ``F``, ``h`` and ``g``, of one shape.
    exclusive : bool
        True: ``F`` is scaled by ``g`` too.
    """

    def __init__(self, incomings, exclusive, **kwargs):
        super(GatedSumLayer, self).__init__(incomings, **kwargs)
        if len(set(self.input_shapes)) != 1:
            raise ValueError("branch, shortcut and gate must have one shape, got %s"
                             % (self.input_shapes,))
        self.exclusive = exclusive

    def get_output_shape_for(self, input_shapes):
        return input_shapes[0]

    def get_output_for(self, inputs, **kwargs):
        branch, shortcut, gate = inputs
        return (gate * branch if self.exclusive else branch) + (1 - gate) * shortcut


def parse_shortcut(text):
    """``'exclusive-gating:-6'`` -> ``('exclusive-gating', (-6.0,))``; ValueError,
    saying what is expected, for anything that is not a shortcut of SHORTCUTS."""
    kind, _, given = text.partition(":")
    if kind not in SHORTCUTS:
        raise ValueError("unknown shortcut %r: choose one of %s" % (kind, ", ".join(SHORTCUTS)))
    wanted = SHORTCUTS[kind]["values"]
    try:
        values = tuple(float(v) for v in given.split(",")) if given else ()
    except ValueError:
        values = None
    if values is None or len(values) != len(wanted):
        raise ValueError("shortcut %s takes %s" % (kind, "no values" if not wanted else
                                                   "%s, e.g. %s" % (" and ".join(wanted),
                                                                    SHORTCUT_EXAMPLES[kind])))
    if kind == "dropout" and not 0 < values[0] < 1:
        raise ValueError("the dropout shortcut's ratio must be in (0, 1), got %g" % values[0])
    return kind, values


SHORTCUT_EXAMPLES = {"scaling": "scaling:0.5,0.5", "exclusive-gating": "exclusive-gating:-6",
                     "shortcut-gating": "shortcut-gating:-6", "dropout": "dropout:0.5"}


def shortcut_text(kind, values):
    """The canonical spelling: ``('scaling', (0.5, 1.0))`` -> ``'scaling:0.5,1'``."""
    return kind + (":" + ",".join("%g" % v for v in values) if values else "")


def canonical(key, value):
    """How ``network_info`` records a ``unit`` or ``shortcut`` argument
    (``'scaling:0.50,1'`` -> ``'scaling:0.5,1'``); a shortcut it cannot read
    is returned as given."""
    if key == "shortcut":
        try:
            return shortcut_text(*parse_shortcut(value))
        except ValueError:
            return value
    return value


def residual_unit(incoming, filters, stride, block, spec, unit=DEFAULT_UNIT,
                  shortcut=(IDENTITY, ()), grow="projection", preactivated=False,
                  dropout=0.0, name="unit"):
    """One residual unit of He et al. 2016: ``y = h(x) + F(x)``, then ``f(y)``.

    The order of batch norm, ReLU and the weight layers is ``UNITS[unit]``
    (Fig. 4); ``F`` is pre-activation, the weight layers with B-R between
    them, and the unit's "last" activation; ``f`` its "after" activation.

    Parameters
    ----------
    incoming : Layer
        The previous unit's output, or, for the very first unit, the stem's
        already activated output.
    filters : int
        Channels of the unit's 3x3 convolution.
    stride : int
        2 where the unit halves the image (first unit of stages 2 and 3).
    block : {'basic', 'bottleneck'}
        basic: two 3x3 convolutions; bottleneck: 1x1, 3x3, 1x1 with 4x
        filters out (the stride on ``spec['bottleneck_stride_on']``).
    spec : dict
        An entry of ``ARCHITECTURES``.
    unit : str
        A key of ``UNITS``: where batch norm and ReLU sit.
    shortcut : (str, tuple)
        ``h`` and how it meets ``F`` (Table 1), as ``parse_shortcut`` returns
        it: identity (where shapes match; ``grow`` where they do not), constant
        scaling ``lambda_h h + lambda_F F``, exclusive or shortcut-only gating,
        a 1x1 convolution (then batch norm: "BN layers ... are adopted right
        after the weight layers for all units here", Fig. 2's caption) on every
        unit, or dropout of ratio p on ``h``'s output as in [11]: ``h * mask``
        in training, ``(1 - p) h`` at test time (Lasagne's ``DropoutLayer``,
        whose training output is ``h * mask / (1 - p)``, summed with the
        coefficient ``1 - p``).
    grow : {'projection', 'zero-pad'}
        ``h`` where the shape changes: a 1x1 convolution (reading the
        pre-activated input in pre-activation units, "these projection
        shortcuts are also with pre-activation", He et al. 2016 appendix;
        batch norm after it where the unit has one after its last weight
        layer), or ``ZeroPadShortcutLayer`` (option A).
    preactivated : bool
        True for the first unit: the stem's activation is its pre-activation
        (He et al. 2016 appendix; 'no_preact' in resnet-pre-act.lua). True for
        every unit of stage 1 in the old repository's graph of 2016-04
        (``stage1_preact_bn`` False): there units 2..n feed the previous
        unit's sum to their first convolution as it is.
    dropout : float
        Dropout probability between the two 3x3 convolutions of a basic unit
        (WRN, Sec. 2.3); 0 for none.
    name : str
        Prefix of the layers' names (parameters are named after the layers).

    Returns
    -------
    Layer
        ``f(y)``; ``y`` is the layer named ``<name>.sum``, which lists the
        branch first as the old code did.
    """
    order = UNITS[unit]
    kind, values = shortcut
    in_channels = incoming.output_shape[1]
    activated = incoming if preactivated else activation(incoming, order["pre"], spec,
                                                         name + ".pre")
    if block == "basic":
        convs = [(3, filters), (3, filters)]
    else:
        convs = [(1, filters), (3, filters), (1, filters * BOTTLENECK_EXPANSION)]
    stride_on = 0 if block == "basic" else spec["bottleneck_stride_on"]
    out_channels = convs[-1][1]

    branch = activated
    for i, (size, channels) in enumerate(convs):
        last = i == len(convs) - 1
        if i > 0:
            branch = activation(branch, "BR", spec, "%s.conv%d" % (name, i))
            if dropout > 0 and last:
                branch = DropoutLayer(branch, p=dropout, name=name + ".dropout")
        branch = conv(branch, channels, size, stride if i == stride_on else 1,
                      spec["conv_init"], "%s.conv%d" % (name, i + 1),
                      bias=0.0 if last and spec["last_conv_bias"] else None)
    branch = activation(branch, order["last"], spec, "%s.conv%d" % (name, len(convs)))

    grows = stride != 1 or in_channels != out_channels
    if kind == "conv1x1" or (grows and grow == "projection"):
        # Projection from the pre-activated input (resnet-pre-act.lua's
        # 'both_preact' block; wide-resnet.lua applies BN-ReLU before its
        # ConcatTable when the channel count changes), or, in the old
        # repository's graphs before 51bc6b3, from the unit's input sum.
        source = {"preactivated": activated, "sum": incoming}[spec["projection_reads"]]
        shortcut_out = conv(source, out_channels, 1, stride, spec["projection_init"],
                            name + ".projection")
        shortcut_out = activation(shortcut_out, order["last"].replace("R", ""), spec,
                                  name + ".projection")
    elif grows:
        shortcut_out = ZeroPadShortcutLayer(incoming, out_channels, stride,
                                            name=name + ".shortcut")
    else:
        shortcut_out = incoming
    on_shortcut, on_branch = values if kind == "scaling" else (1, 1)
    if kind == "dropout":
        shortcut_out = DropoutLayer(shortcut_out, p=values[0], name=name + ".shortcut.dropout")
        on_shortcut = 1 - values[0]

    if kind in ("exclusive-gating", "shortcut-gating"):
        # g(x) = sigmoid(W_g x + b_g), "realized by a 1x1 convolutional layer"
        # on the unit's input (Sec. 3.1), b_g starting at the given value.
        gate = conv(incoming, out_channels, 1, stride, spec["conv_init"], name + ".gate",
                    bias=values[0], nonlinearity=sigmoid)
        total = GatedSumLayer([branch, shortcut_out, gate], kind == "exclusive-gating",
                              name=name + ".sum")
    else:
        total = ElemwiseSumLayer([branch, shortcut_out], coeffs=[on_branch, on_shortcut],
                                 name=name + ".sum")
    return activation(total, order["after"], spec, name + ".post")


def check_arguments(variant, depth, width=1, num_classes=10, dropout=0.0, arch="paper",
                    unit=DEFAULT_UNIT, shortcut=IDENTITY):
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
    if unit not in UNITS:
        raise ValueError("unknown unit %r: choose one of %s" % (unit, ", ".join(UNITS)))
    kind, _ = parse_shortcut(shortcut)
    if unit != DEFAULT_UNIT and (variant == "wide" or arch != "paper"):
        raise ValueError("unit %s is He et al. 2016's (Fig. 4) for its normal and bottleneck "
                         "networks; %s networks have full pre-activation units"
                         % (unit, "wide" if variant == "wide" else "arch %s" % arch))
    if kind != IDENTITY and (unit != "original" or variant != "normal" or arch != "paper"):
        raise ValueError("shortcut %s is one of He et al. 2016's Table 1, studied on "
                         "ResNet-110 with the original unit: use a normal network with unit "
                         "original" % kind)


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
                input_var=None, arch="paper", unit=DEFAULT_UNIT, shortcut=IDENTITY):
    """Build a network and return its softmax output layer.

    A stem (3x3 convolution, batch norm, ReLU), three stages of residual units
    (``residual_unit``) of 16k, 32k and 64k filters, the second and third
    starting with a stride of 2, the head (the unit's pre-activation again for
    pre-activation units, He et al. 2016 appendix), global average pooling and
    a softmax classifier.

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
    unit : str
        A key of ``UNITS``, the residual unit of He et al. 2016 Fig. 4
        (normal and bottleneck networks of arch 'paper'); 'original' with
        n = 3, 5, 7, 9, 18, 200 gives the CIFAR ResNets of He et al. 2015.
    shortcut : str
        The shortcut of He et al. 2016 Table 1 (``parse_shortcut``), with the
        original unit: 'identity' (default), 'scaling:S,F',
        'exclusive-gating:B', 'shortcut-gating:B', 'conv1x1', 'dropout:P'.

    Returns
    -------
    DenseLayer
        The softmax output layer; the whole network hangs from it.

    Raises
    ------
    ValueError
        For an unknown variant, arch, unit or shortcut, n < 1, k < 1, k != 1
        for a non-wide network, fewer than 2 classes, dropout outside [0, 1)
        or on a non-wide network, another unit than full pre-activation on a
        wide or old-repository network, or a shortcut variant without the
        original unit.
    """
    check_arguments(variant, depth, width, num_classes, dropout, arch, unit, shortcut)
    spec = ARCHITECTURES[arch]
    variant_spec = VARIANTS[variant]
    order = UNITS[unit]
    block = variant_spec["block"]

    network = InputLayer((None, 3, 32, 32), input_var=input_var, name="input")
    network = conv(network, STEM_FILTERS, 3, 1, spec["conv_init"], "stem.conv")
    network = activation(network, "BR", spec, "stem")
    for stage, (filters, units) in enumerate(
            zip(variant_spec["filters"], stage_units(variant, depth, arch))):
        for index in range(units):
            network = residual_unit(
                network, filters * width, stride=2 if stage > 0 and index == 0 else 1,
                block=block, spec=spec, unit=unit, shortcut=parse_shortcut(shortcut),
                grow="projection" if block == "bottleneck" else order["basic_grow"],
                preactivated=stage == 0 and (index == 0 or not spec["stage1_preact_bn"]),
                dropout=dropout, name="stage%d.unit%d" % (stage + 1, index + 1))
    network = activation(network, order["pre"], spec, "head")
    network = GlobalPoolLayer(network, name="head.pool")
    features = network.output_shape[1]
    return DenseLayer(network, num_classes,
                      W=_dense_init(spec["dense_init"], features),
                      b=init.Constant(0), nonlinearity=softmax, name="head.dense")


def _shortcut_label(shortcut, slug):
    """File-safe (``slug``) or human words for a shortcut other than identity."""
    kind, values = parse_shortcut(shortcut)
    if kind == "scaling":
        return ("scaling%g-%g" % values if slug else
                "constant scaling, %g on the shortcut, %g on F" % values)
    if kind.endswith("gating"):
        return ("%s-bg%g" % (kind, values[0]) if slug else
                "%s, b_g %g" % (SHORTCUTS[kind]["display"], values[0]))
    if kind == "dropout":
        return "dropout%g" % values[0] if slug else "dropout %g shortcut" % values[0]
    return kind if slug else SHORTCUTS[kind]["display"]


def network_name(variant, depth, width=1, arch="paper", num_classes=10, unit=DEFAULT_UNIT,
                 shortcut=IDENTITY):
    """Short file-safe name, e.g. ``preresnet110``, ``wrn16-4``, ``seed-wide-n2-k4``,
    ``resnet20`` (original unit), ``resnet110-bn-after-add``,
    ``resnet110-exclusive-gating-bg-6``.

    CIFAR-100 networks get a ``-cifar100`` suffix.
    """
    check_arguments(variant, depth, width, num_classes, 0.0, arch, unit, shortcut)
    layers = layer_count(variant, depth)
    if variant == "wide":
        name = ("wrn%d-%d" % (layers, width) if arch == "paper"
                else "wide-n%d-k%d" % (depth, width))
    elif unit == DEFAULT_UNIT:
        name = "preresnet%d" % layers
    else:
        name = "resnet%d" % layers + ("" if unit == "original" else "-" + unit)
    if parse_shortcut(shortcut)[0] != IDENTITY:
        name += "-" + _shortcut_label(shortcut, slug=True)
    if arch != "paper":
        name = arch + "-" + name
    return name + ("-cifar100" if num_classes == 100 else
                   "" if num_classes == 10 else "-%dclasses" % num_classes)


def display_name(variant, depth, width=1, arch="paper", unit=DEFAULT_UNIT, shortcut=IDENTITY):
    """Human name, e.g. ``PreResNet-110``, ``WRN-16-4``, ``PreResNet-110 (old
    repository's graph of 2016-04)``, ``ResNet-20`` (original unit),
    ``ResNet-110 (BN after addition)``."""
    layers = layer_count(variant, depth)
    units = stage_units(variant, depth, arch)
    if variant == "wide" and units != (depth,) * 3:
        # Not a WRN-(6n+4)-k: the old repository's n+2 units in stages 2 and 3.
        name = ("wide net, n=%d k=%d: %d/%d/%d units, %d layers"
                % ((depth, width) + units + (2 * sum(units) + 2,)))
    elif variant == "wide":
        name = "WRN-%d-%d" % (layers, width)
    else:
        name = "%sResNet-%d" % ("Pre" if unit == DEFAULT_UNIT else "", layers)
    details = [UNITS[unit]["display"]] if unit not in (DEFAULT_UNIT, "original") else []
    if parse_shortcut(shortcut)[0] != IDENTITY:
        details.append(_shortcut_label(shortcut, slug=False))
    if ARCHITECTURES[arch]["description"]:
        details.append(ARCHITECTURES[arch]["description"])
    return name + (" (%s)" % "; ".join(details) if details else "")


# -----------------------------------------------------------------------------
# What identifies a network, and the published numbers to compare it with.

# Published CIFAR test error (%) of each paper network, or "fail" (He et al.
# 2016 Table 1: "when the test error is higher than 20%"), by (name, dataset,
# dropout, recipe): the recipe train_nn.py reproduces it with ("paper": the
# variant's paper recipe, the authors' code). Sources in sweep/published.csv.
PAPER_TEST_ERROR = {
    # He et al. 2016 (arXiv 1603.05027), full pre-activation: Tables 2, 3, 4.
    ("preresnet110", "cifar10", False, "paper"): 6.37,
    ("preresnet164", "cifar10", False, "paper"): 5.46,
    ("preresnet164", "cifar100", False, "paper"): 24.33,
    ("preresnet1001", "cifar10", False, "paper"): 4.92,
    ("preresnet1001", "cifar100", False, "paper"): 22.71,
    # Table 4's dagger and resnet-1k-layers' README: mini-batch 64, its code.
    ("preresnet1001", "cifar10", False, "resnet-1k-layers"): 4.62,
    # Zagoruyko & Komodakis 2016 (arXiv 1605.07146), its CIFAR results (dropout 0.3).
    ("wrn16-4", "cifar10", False, "paper"): 5.02,
    ("wrn16-4", "cifar10", True, "paper"): 5.24,
    ("wrn16-4", "cifar100", False, "paper"): 24.03,
    ("wrn28-10", "cifar10", False, "paper"): 4.00,
    ("wrn28-10", "cifar10", True, "paper"): 3.89,
    ("wrn28-10", "cifar100", False, "paper"): 19.25,
    # He et al. 2016 Table 2 (units, Fig. 4) and Table 3 (original units).
    ("resnet110", "cifar10", False, "paper"): 6.61,
    ("resnet110-bn-after-add", "cifar10", False, "paper"): 8.17,
    ("resnet110-relu-before-add", "cifar10", False, "paper"): 7.84,
    ("resnet110-relu-preact", "cifar10", False, "paper"): 6.71,
    ("resnet164", "cifar10", False, "paper"): 5.93,
    ("resnet164-bn-after-add", "cifar10", False, "paper"): 6.50,
    ("resnet164-relu-before-add", "cifar10", False, "paper"): 6.14,
    ("resnet164-relu-preact", "cifar10", False, "paper"): 5.91,
    ("resnet1001", "cifar10", False, "paper"): 7.61,
    ("resnet164", "cifar100", False, "paper"): 25.16,
    ("resnet1001", "cifar100", False, "paper"): 27.82,
    # He et al. 2016 Table 1 (shortcuts, Fig. 2) on ResNet-110, original unit.
    ("resnet110-scaling0-1", "cifar10", False, "paper"): "fail",
    ("resnet110-scaling0.5-1", "cifar10", False, "paper"): "fail",
    ("resnet110-scaling0.5-0.5", "cifar10", False, "paper"): 12.35,
    ("resnet110-exclusive-gating-bg0", "cifar10", False, "paper"): "fail",
    ("resnet110-exclusive-gating-bg-1", "cifar10", False, "paper"): "fail",
    ("resnet110-exclusive-gating-bg-2", "cifar10", False, "paper"): "fail",
    ("resnet110-exclusive-gating-bg-3", "cifar10", False, "paper"): "fail",
    ("resnet110-exclusive-gating-bg-4", "cifar10", False, "paper"): "fail",
    ("resnet110-exclusive-gating-bg-5", "cifar10", False, "paper"): "fail",
    ("resnet110-exclusive-gating-bg-6", "cifar10", False, "paper"): 8.70,
    ("resnet110-exclusive-gating-bg-7", "cifar10", False, "paper"): 9.81,
    ("resnet110-shortcut-gating-bg0", "cifar10", False, "paper"): 12.86,
    ("resnet110-shortcut-gating-bg-6", "cifar10", False, "paper"): 6.91,
    ("resnet110-conv1x1", "cifar10", False, "paper"): 12.22,
    ("resnet110-dropout0.5", "cifar10", False, "paper"): "fail",
    # He et al. 2015 (arXiv 1512.03385) Table 6; ResNet-110: best of 5 runs
    # (mean 6.61 +- 0.16).
    ("resnet20", "cifar10", False, "he2015"): 8.75,
    ("resnet32", "cifar10", False, "he2015"): 7.51,
    ("resnet44", "cifar10", False, "he2015"): 7.17,
    ("resnet56", "cifar10", False, "he2015"): 6.97,
    ("resnet110", "cifar10", False, "he2015-warmup"): 6.43,
    ("resnet1202", "cifar10", False, "he2015-warmup"): 7.93,
}
FAILED = "fail"


def paper_error(network, dropout, recipe=None):
    """The paper's test error (%) for ``network`` (a ``network_info`` dict)
    trained with ``recipe`` (a recipe name; paper-preresnet and paper-wrn are
    'paper'), the string 'fail', or None. Without a number for that recipe:
    the 'paper' recipe's, else the network's only number."""
    base = network["name"].replace("-cifar100", "")
    found = {key[3]: value for key, value in PAPER_TEST_ERROR.items()
             if key[:3] == (base, network["dataset"], dropout > 0)}
    recipe = "paper" if recipe in (None, "paper-preresnet", "paper-wrn") else recipe
    for choice in (recipe, "paper"):
        if choice in found:
            return found[choice]
    return next(iter(found.values())) if len(found) == 1 else None


def format_paper_error(value):
    """'4.92 %', 'fail (over 20 %)' or '-'."""
    if value == FAILED:
        return "fail (over 20 %)"
    return "-" if value is None else "%.2f %%" % value


def network_info(variant, depth, width, arch, dataset, dropout=0.0, unit=DEFAULT_UNIT,
                 shortcut=IDENTITY):
    """What identifies a network (and its weights files). ValueError if it
    cannot be built."""
    num_classes = utils.DATASETS[dataset]["num_classes"]
    check_arguments(variant, depth, width, num_classes, dropout, arch, unit, shortcut)
    shortcut = shortcut_text(*parse_shortcut(shortcut))
    return {"name": network_name(variant, depth, width, arch, num_classes, unit, shortcut),
            "display": display_name(variant, depth, width, arch, unit, shortcut),
            "variant": variant, "depth": depth, "width": width, "arch": arch,
            "unit": unit, "shortcut": shortcut,
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
            info.get("dropout", 0.0), self.input_var, info["arch"],
            info.get("unit", DEFAULT_UNIT), info.get("shortcut", IDENTITY))
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
    return percent_wrong(labels, predict_labels(net, images, stats))


def percent_wrong(labels, predictions):
    """100 * wrong / count, one division: 57 of 100 is 57.0, where
    100 * mean(wrong) gives 56.99999999999999."""
    return 100.0 * int(np.count_nonzero(np.asarray(labels) != predictions)) / len(labels)


def classification_report(labels, predictions, label_names):
    """Error %, per-class accuracy % and the confusion matrix
    (rows: true class, columns: predicted class)."""
    k = len(label_names)
    confusion = np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)
    per_class = 100.0 * np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return {"count": int(len(labels)),
            "error": percent_wrong(labels, predictions) if len(labels) else None,
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
    """VARIANT DEPTH [WIDTH], --arch, --dataset, --unit and --shortcut."""
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
    parser.add_argument("--unit", choices=list(UNITS), default=None,
                        help="the residual unit of He et al. 2016 (normal and "
                             "bottleneck): %s (default); original with normal 3, 5, 7, 9, "
                             "18, 200 is He et al. 2015's ResNet-20 to -1202"
                             % ", ".join("%s: %s, Fig. %s" % (u, s["display"], s["figure"])
                                         for u, s in UNITS.items()))
    parser.add_argument("--shortcut", metavar="KIND[:VALUES]", default=None,
                        help="He et al. 2016 Table 1's shortcuts, with --unit original: "
                             "identity (default), scaling:S,F (S on the shortcut, F on the "
                             "branch), exclusive-gating:B or shortcut-gating:B (B: the "
                             "gate's initial bias), conv1x1, dropout:P")


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
    if args.shortcut is not None:
        try:
            parse_shortcut(args.shortcut)
        except ValueError as error:
            parser.error("--shortcut %s: %s" % (args.shortcut, error))


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
