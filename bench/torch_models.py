"""The project's networks (models.py, arch 'paper') written in PyTorch, for
bench/speed.py's side-by-side column only: PyTorch is a bench dependency
(bench/requirements.txt), never the project's.

Same graphs as models.build_model(variant, depth, width): a 3x3 stem of 16
channels, BN-ReLU, three stages of full pre-activation units (basic: two 3x3;
bottleneck: 1x1, 3x3, 1x1 with 4x expansion and the stride on the first 1x1),
projections (1x1) from the pre-activated input where the shape changes,
BN-ReLU, global average pooling, a linear classifier; no convolution biases;
batch norm eps 1e-5, momentum 0.1. The initialisation does not matter for
timing and is PyTorch's.
"""
import torch
from torch import nn

FILTERS = (16, 32, 64)
EXPANSION = 4


class Unit(nn.Module):
    def __init__(self, in_channels, filters, stride, bottleneck, preactivated):
        super().__init__()
        self.preactivated = preactivated
        self.pre = None if preactivated else nn.BatchNorm2d(in_channels)
        if bottleneck:
            shapes = [(in_channels, filters, 1, stride), (filters, filters, 3, 1),
                      (filters, filters * EXPANSION, 1, 1)]
        else:
            shapes = [(in_channels, filters, 3, stride), (filters, filters, 3, 1)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, k // 2, bias=False)
                                   for i, o, k, s in shapes)
        self.bns = nn.ModuleList(nn.BatchNorm2d(i) for i, _, _, _ in shapes[1:])
        out_channels = shapes[-1][1]
        self.projection = (nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
                           if stride != 1 or in_channels != out_channels else None)

    def forward(self, x):
        activated = x if self.preactivated else torch.relu(self.pre(x))
        branch = self.convs[0](activated)
        for bn, conv in zip(self.bns, self.convs[1:]):
            branch = conv(torch.relu(bn(branch)))
        shortcut = x if self.projection is None else self.projection(activated)
        return branch + shortcut


class PreResNet(nn.Module):
    def __init__(self, variant, depth, width=1, num_classes=10):
        super().__init__()
        bottleneck = variant == "bottleneck"
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        units, channels = [], 16
        for stage, filters in enumerate(FILTERS):
            for index in range(depth):
                units.append(Unit(channels, filters * width,
                                  2 if stage > 0 and index == 0 else 1, bottleneck,
                                  preactivated=stage == 0 and index == 0))
                channels = filters * width * (EXPANSION if bottleneck else 1)
        self.units = nn.Sequential(*units)
        self.head_bn = nn.BatchNorm2d(channels)
        self.dense = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = torch.relu(self.head_bn(self.units(x)))
        return self.dense(x.mean((2, 3)))


def forward_macs(variant, depth, width=1):
    """Multiply-adds of one image's forward pass through the convolutions and
    the classifier (as bench/speed.py counts them for ours)."""
    model = PreResNet(variant, depth, width)
    total, size = 0, {}

    def hook(module, inputs, output):
        size[module] = output.shape

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    for module, shape in size.items():
        if isinstance(module, nn.Conv2d):
            total += shape[1] * shape[2] * shape[3] * module.in_channels * \
                module.kernel_size[0] * module.kernel_size[1]
        else:
            total += module.in_features * module.out_features
    return total


# =============================================================================
# The residual units of He et al. 2016 (arXiv 1603.05027) and the CIFAR ResNets
# of He et al. 2015 (arXiv 1512.03385), written from the papers for the tests
# that compare them with models.py (tests/test_units.py): same weights, same
# function. Each unit's forward pass is written out as its figure draws it,
# not built from a table, so that it checks models.py's table-driven builder
# independently.
#
# He et al. 2016 Fig. 4 (x: the unit's input, w1..wK its weight layers, h(x)
# its shortcut):
#   (a) original:           w1 BN ReLU ... wK BN, add, ReLU
#   (b) BN after addition:  w1 BN ReLU ... wK, add, BN ReLU
#   (c) ReLU before add.:   w1 BN ReLU ... wK BN ReLU, add
#   (d) ReLU-only pre-act.: ReLU w1 BN ReLU ... wK BN, add
#   (e) full pre-act.:      BN ReLU w1 BN ReLU ... wK, add
# Appendix: the first unit's pre-activation is the stem's (conv1, BN, ReLU);
# the last unit of (d)/(e) gets its pre-activation once more after its
# addition (before the pooling). Shortcuts where the shape changes: basic
# networks with units (a)-(d) as He et al. 2015 (option A: every second pixel,
# zero channels appended); bottleneck networks and full pre-activation basic
# networks a 1x1 projection, reading the pre-activated input where the unit
# pre-activates ("these projection shortcuts are also with pre-activation"),
# followed by BN where the unit's last weight layer is (Fig. 2's caption:
# "BN layers ... adopted right after the weight layers").
#
# Shortcuts of Table 1 (ResNet-110, original unit; Fig. 2): scaling (h x
# lam_h, F x lam_F), exclusive gating (g F + (1 - g) h), shortcut-only gating
# (F + (1 - g) h), g = sigmoid(W_g x + b_g) a 1x1 convolution of the unit's
# input; a 1x1 convolution + BN on every unit; dropout of [11] on h (mask
# unscaled in training, x(1 - p) in evaluation).

UNIT_NAMES = ("original", "bn-after-add", "relu-before-add", "relu-preact", "full-preact")


class PaperUnit(nn.Module):
    """One residual unit; ``names`` maps models.py's parameter names (relative
    to the unit) to (module, attribute) of this module's tensors."""

    def __init__(self, in_channels, filters, stride, bottleneck, unit, shortcut=("identity", ()),
                 first=False):
        super().__init__()
        self.unit, self.kind, self.values, self.first = unit, shortcut[0], shortcut[1], first
        if bottleneck:
            shapes = [(in_channels, filters, 1, stride), (filters, filters, 3, 1),
                      (filters, filters * EXPANSION, 1, 1)]
        else:
            shapes = [(in_channels, filters, 3, stride), (filters, filters, 3, 1)]
        out = shapes[-1][1]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, k // 2, bias=False)
                                   for i, o, k, s in shapes)
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o, _, _ in shapes)
        self.names = {}
        for i, conv in enumerate(self.convs, 1):
            self.names["conv%d.W" % i] = (conv, "weight")
        for i, bn in enumerate(self.bns[:-1], 1):
            self._bn_names("conv%d.bn" % i, bn)
        last = len(shapes)
        self.pre_bn = None
        if unit in ("original", "relu-before-add", "relu-preact"):
            self._bn_names("conv%d.bn" % last, self.bns[-1])
        elif unit == "bn-after-add":
            self.bns[-1] = nn.BatchNorm2d(out)
            self._bn_names("post.bn", self.bns[-1])
        else:  # full-preact: a BN on the input, none after the last weight layer
            self.bns[-1] = None
            if not first:
                self.pre_bn = nn.BatchNorm2d(in_channels)
                self._bn_names("pre.bn", self.pre_bn)
        grows = stride != 1 or in_channels != out
        self.zero_pad = None
        self.projection = self.projection_bn = None
        if self.kind == "conv1x1" or (grows and (bottleneck or unit == "full-preact")):
            self.projection = nn.Conv2d(in_channels, out, 1, stride, bias=False)
            self.names["projection.W"] = (self.projection, "weight")
            if unit in ("original", "relu-before-add", "relu-preact"):
                self.projection_bn = nn.BatchNorm2d(out)
                self._bn_names("projection.bn", self.projection_bn)
        elif grows:
            self.zero_pad = (stride, out - in_channels)
        self.gate = None
        if self.kind.endswith("gating"):
            self.gate = nn.Conv2d(in_channels, out, 1, stride, bias=True)
            self.names["gate.W"], self.names["gate.b"] = (self.gate, "weight"), (self.gate, "bias")
        self.dropout_mask = None   # set by the caller for training-mode dropout

    def _bn_names(self, name, bn):
        self.names.update({name + ".gamma": (bn, "weight"), name + ".beta": (bn, "bias"),
                           name + ".mean": (bn, "running_mean"),
                           name + ".var": (bn, "running_var")})

    def _shortcut(self, x, preactivated):
        if self.projection is not None:
            reads = preactivated if self.unit in ("relu-preact", "full-preact") else x
            h = self.projection(reads)
            return self.projection_bn(h) if self.projection_bn is not None else h
        if self.zero_pad is not None:
            stride, extra = self.zero_pad
            kept = x[:, :, ::stride, ::stride]
            return torch.cat([kept, kept.new_zeros(kept.shape[0], extra, *kept.shape[2:])], 1)
        return x

    def _inner(self, t):
        """w1 BN ReLU w2 ... wK: the weight layers with BN-ReLU between them."""
        for i, conv in enumerate(self.convs):
            if i:
                t = torch.relu(self.bns[i - 1](t))
            t = conv(t)
        return t

    def forward(self, x):
        u = self.unit
        if u == "original":
            pre = x
            f = self.bns[-1](self._inner(x))
        elif u == "bn-after-add":
            pre = x
            f = self._inner(x)
        elif u == "relu-before-add":
            pre = x
            f = torch.relu(self.bns[-1](self._inner(x)))
        elif u == "relu-preact":
            pre = x if self.first else torch.relu(x)
            f = self.bns[-1](self._inner(pre))
        else:
            pre = x if self.first else torch.relu(self.pre_bn(x))
            f = self._inner(pre)
        h = self._shortcut(x, pre)
        if self.kind == "scaling":
            y = self.values[0] * h + self.values[1] * f
        elif self.kind == "exclusive-gating":
            g = torch.sigmoid(self.gate(x))
            y = g * f + (1 - g) * h
        elif self.kind == "shortcut-gating":
            g = torch.sigmoid(self.gate(x))
            y = f + (1 - g) * h
        elif self.kind == "dropout":
            p = self.values[0]
            h = h * self.dropout_mask if self.training else h * (1 - p)
            y = f + h
        else:
            y = f + h
        if u == "original":
            return torch.relu(y)
        if u == "bn-after-add":
            return torch.relu(self.bns[-1](y))
        return y


class PaperResNet(nn.Module):
    """A CIFAR network of He et al. 2015/2016 with ``unit`` (one of
    UNIT_NAMES) and ``shortcut`` ((kind, values)): stem conv1-BN-ReLU, three
    stages of n units (16, 32, 64 filters; x4 out for bottleneck), the last
    unit's extra activation for (d)/(e), global average pooling, a linear
    classifier. ``forward`` returns the logits; ``tensor(name)`` the tensor
    models.py names ``name`` (found anew each time: ``.double()`` replaces the
    batch norms' running averages)."""

    def __init__(self, variant, depth, unit="full-preact", shortcut=("identity", ()),
                 num_classes=10):
        super().__init__()
        bottleneck = variant == "bottleneck"
        self.unit = unit
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.names = {"stem.conv.W": (self.stem, "weight")}
        PaperUnit._bn_names(self, "stem.bn", self.stem_bn)
        units, channels = [], 16
        for stage, filters in enumerate(FILTERS):
            for index in range(depth):
                block = PaperUnit(channels, filters, 2 if stage > 0 and index == 0 else 1,
                                  bottleneck, unit, shortcut,
                                  first=stage == 0 and index == 0)
                prefix = "stage%d.unit%d." % (stage + 1, index + 1)
                self.names.update({prefix + k: v for k, v in block.names.items()})
                units.append(block)
                channels = filters * (EXPANSION if bottleneck else 1)
        self.units = nn.Sequential(*units)
        self.head_bn = nn.BatchNorm2d(channels) if unit == "full-preact" else None
        if self.head_bn is not None:
            PaperUnit._bn_names(self, "head.bn", self.head_bn)
        self.dense = nn.Linear(channels, num_classes)
        self.names["head.dense.W"] = (self.dense, "weight")
        self.names["head.dense.b"] = (self.dense, "bias")

    def tensor(self, name):
        module, attribute = self.names[name]
        return getattr(module, attribute)

    def forward(self, x):
        x = self.units(torch.relu(self.stem_bn(self.stem(x))))
        if self.unit == "full-preact":
            x = torch.relu(self.head_bn(x))
        elif self.unit == "relu-preact":
            x = torch.relu(x)
        return self.dense(x.mean((2, 3)))
