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
