"""The residual basic block shared by the CIFAR ResNets and ResNet-18.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Fig. 2 /
Eq. (1)-(2)::

    y = relu( BN2(conv2( relu(BN1(conv1(x))) )) + shortcut(x) )

``conv1`` is 3x3 with the block's stride, ``conv2`` 3x3 stride 1, both without
bias (BN follows). The shortcut is the identity when shape is preserved, else
the paper's option (B) projection: a 1x1 convolution with the block's stride
followed by BN, stored as ``downsample = Sequential(conv1x1, BN)`` so that the
state-dict keys are ``downsample.0.weight`` / ``downsample.1.*`` as in both
torchvision and the official FSG/MetaQuant code.

Shapes: x (N, C_in, H, W) -> y (N, C_out, ceil(H/s), ceil(W/s)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (identity, or 1x1 conv + BN)."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def make_stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` BasicBlocks; only the first changes resolution / width."""
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def init_resnet_(model: nn.Module) -> None:
    """He initialisation (fan_out, ReLU gain) for convolutions; BN gamma 1, beta 0.

    This is N(0, 2 / (k*k*C_out)), the init of He et al. 2015 used by the
    official FSG/MetaQuant ResNets and by torchvision.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
