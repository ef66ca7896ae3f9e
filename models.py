"""Pre-activation ResNets and Wide ResNets for 32x32 CIFAR images, as Lasagne graphs.

This module builds graphs and nothing else. One unit builder, ``residual_unit``,
serves all three families; ``build_model`` stacks units into three stages.

- ``normal``: PreResNet of depth 6n+2 with basic units (He et al. 2016,
  "Identity Mappings in Deep Residual Networks", arXiv 1603.05027, Fig. 4e).
- ``bottleneck``: PreResNet of depth 9n+2 with bottleneck units (same paper,
  Sec. 4.1 and Table 3; the authors' code is resnet-pre-act.lua in
  KaimingHe/resnet-1k-layers).
- ``wide``: WRN-(6n+4)-k (Zagoruyko & Komodakis 2016, "Wide Residual Networks",
  arXiv 1605.07146, Table 1; the authors' code is models/wide-resnet.lua).

``depth`` keeps the old repository's meaning: n, the number of units per stage.

Two architectures are available. ``arch="paper"`` is the papers' networks, layer
for layer and parameter for parameter. ``arch="seed"`` is the graph of the 2016
Lasagne repository this project re-creates (see ARCHITECTURES for each
difference), kept so that its published weights can be loaded and its numbers
checked.
"""
import math

# engine first: importing it configures Theano before Lasagne imports Theano.
from engine.layers import BatchNormLayer, Conv2DLayer
from lasagne import init
from lasagne.layers import (DenseLayer, DropoutLayer, ElemwiseSumLayer,
                            GlobalPoolLayer, InputLayer)
from lasagne.nonlinearities import rectify, softmax

# -----------------------------------------------------------------------------
# What varies between the families and between the two architectures: data.

FAMILIES = {
    # unit: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion);
    # filters: the 3x3 convolutions' channels per stage, before widening.
    "normal": {"unit": "basic", "filters": (16, 32, 64), "depth": lambda n: 6 * n + 2},
    "bottleneck": {"unit": "bottleneck", "filters": (16, 32, 64), "depth": lambda n: 9 * n + 2},
    "wide": {"unit": "basic", "filters": (16, 32, 64), "depth": lambda n: 6 * n + 4},
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
    },
    "seed": {
        "source": "the 2016 Lasagne repository (../shared/reference/old-repository.md)",
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
    },
}


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
    return Conv2DLayer(incoming, filters, size, stride,
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
        # ConcatTable when the channel count changes).
        shortcut = conv(activated, out_channels, 1, stride, spec["projection_init"],
                        name + ".projection")
    else:
        shortcut = incoming
    return ElemwiseSumLayer([branch, shortcut], name=name + ".sum")


def check_arguments(variant, depth, width=1, num_classes=10, dropout=0.0, arch="paper"):
    """Raise ValueError, with what is wrong, for a network that cannot be built."""
    if variant not in FAMILIES:
        raise ValueError("unknown network type %r: choose one of %s"
                         % (variant, ", ".join(FAMILIES)))
    if arch not in ARCHITECTURES:
        raise ValueError("unknown arch %r: choose one of %s"
                         % (arch, ", ".join(ARCHITECTURES)))
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
        The family (see the module docstring).
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
    arch : {'paper', 'seed'}
        The papers' networks, or the old repository's graphs.

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
    family = FAMILIES[variant]

    network = InputLayer((None, 3, 32, 32), input_var=input_var, name="input")
    network = conv(network, STEM_FILTERS, 3, 1, spec["conv_init"], "stem.conv")
    network = bn_relu(network, spec, "stem")
    for stage, (filters, units) in enumerate(
            zip(family["filters"], stage_units(variant, depth, arch))):
        for index in range(units):
            network = residual_unit(
                network, filters * width, stride=2 if stage > 0 and index == 0 else 1,
                unit=family["unit"], spec=spec,
                preactivated=stage == 0 and index == 0,
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
    layers = FAMILIES[variant]["depth"](depth)
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
    """Human name, e.g. ``PreResNet-110`` or ``WRN-16-4``."""
    layers = FAMILIES[variant]["depth"](depth)
    if variant == "wide" and arch == "seed":
        units = stage_units(variant, depth, arch)
        return ("old repository's wide net (n=%d, k=%d: %d/%d/%d units, %d layers)"
                % ((depth, width) + units + (2 * sum(units) + 2,)))
    name = "WRN-%d-%d" % (layers, width) if variant == "wide" else "PreResNet-%d" % layers
    return name + (" (old repository's graph)" if arch == "seed" else "")


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
