"""CIFAR ResNets of depth 6n+2 (He et al., CVPR 2016, Sec. 4.2).

Architecture (for 32x32 inputs)::

    conv3x3(C_in -> 16) - BN - ReLU                       32x32, 16 ch
    layer1: n BasicBlocks, 16 ch, stride 1                 32x32
    layer2: n BasicBlocks, 32 ch, first stride 2           16x16
    layer3: n BasicBlocks, 64 ch, first stride 2            8x8
    global average pool - fc(64 -> num_classes)

with n = (depth - 2) / 6: ResNet-20/32/44/56/110 have n = 3/5/7/9/18. The
shortcuts of the two down-sampling blocks are option (B) projections (1x1
conv + BN), as in the official FSG / MetaQuant code, so the state-dict keys
are ``conv1, bn1, layerK.i.{conv1,bn1,conv2,bn2,downsample.0,downsample.1},
fc`` and the published full-precision checkpoints load with ``strict=True``.
(The paper's CIFAR experiments used option (A), zero-padding shortcuts; the
checkpoints here were trained with (B).)

The official code pools with ``AvgPool2d(8)``; this uses adaptive average
pooling, identical for 32x32 inputs and valid for any input size.

``fc_bn=True`` (model option) adds the official FSG/MetaQuant CIFAR ResNet's
BatchNorm1d between the pooled features and fc (``bn2``, as it names it; its
full-precision checkpoints have no bn2, which then keeps gamma 1, beta 0). The
official code also binarizes conv1, fc and the 1x1 shortcut convs: that is the
policy ``keep_first = false, keep_last = false`` (shortcuts are quantized by default).

Input (N, C_in, H, W) float, normalised -> logits (N, num_classes).
"""
from __future__ import annotations

import torch
from torch import nn

from bnnopt.models._checks import positive_int
from bnnopt.models.blocks import init_resnet_, make_stage
from bnnopt.registry import MODELS

#: Depths registered by name; any 6n+2 works through :class:`CifarResNet`.
CIFAR_DEPTHS = (20, 32, 44, 56, 110)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images with 16/32/64 channels (times ``width``/16)."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 input_size: int = 32, width: int = 16, fc_bn: bool = False):
        super().__init__()
        if not isinstance(fc_bn, bool):
            raise ValueError(f"invalid fc_bn {fc_bn!r}; must be true or false")
        positive_int("depth", depth)
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), "
                f"got {depth!r}")
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        positive_int("input_size", input_size)
        positive_int("width", width)
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = make_stage(width, width, n, stride=1)
        self.layer2 = make_stage(width, 2 * width, n, stride=2)
        self.layer3 = make_stage(2 * width, 4 * width, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        if fc_bn:  # official FSG/MetaQuant ResNet: BatchNorm1d before fc
            self.bn2 = nn.BatchNorm1d(4 * width)
            self.optional_init_prefixes = ("bn2.",)
        self.fc = nn.Linear(4 * width, num_classes)
        init_resnet_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        if hasattr(self, "bn2"):
            x = self.bn2(x)
        return self.fc(x)


def _build(depth: int, num_classes: int, in_channels: int, input_size: int,
           width: int, fc_bn: bool = False) -> CifarResNet:
    return CifarResNet(depth, num_classes, in_channels, input_size, width, fc_bn)


@MODELS.register("resnet20", "CIFAR ResNet-20 (He et al. 2016, 1x1-conv shortcuts), 0.27M params")
def resnet20(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             width: int = 16, fc_bn: bool = False) -> CifarResNet:
    """CIFAR ResNet-20: n = 3 blocks per stage, 0.27M parameters (10 classes)."""
    return _build(20, num_classes, in_channels, input_size, width, fc_bn)


@MODELS.register("resnet32", "CIFAR ResNet-32 (He et al. 2016, 1x1-conv shortcuts), 0.47M params")
def resnet32(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             width: int = 16, fc_bn: bool = False) -> CifarResNet:
    """CIFAR ResNet-32: n = 5 blocks per stage, 0.47M parameters (10 classes)."""
    return _build(32, num_classes, in_channels, input_size, width, fc_bn)


@MODELS.register("resnet44", "CIFAR ResNet-44 (He et al. 2016, 1x1-conv shortcuts), 0.66M params")
def resnet44(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             width: int = 16, fc_bn: bool = False) -> CifarResNet:
    """CIFAR ResNet-44: n = 7 blocks per stage, 0.66M parameters (10 classes)."""
    return _build(44, num_classes, in_channels, input_size, width, fc_bn)


@MODELS.register("resnet56", "CIFAR ResNet-56 (He et al. 2016, 1x1-conv shortcuts), 0.86M params")
def resnet56(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             width: int = 16, fc_bn: bool = False) -> CifarResNet:
    """CIFAR ResNet-56: n = 9 blocks per stage, 0.86M parameters (10 classes)."""
    return _build(56, num_classes, in_channels, input_size, width, fc_bn)


@MODELS.register("resnet110", "CIFAR ResNet-110 (He et al. 2016, 1x1-conv shortcuts), 1.73M params")
def resnet110(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
              width: int = 16, fc_bn: bool = False) -> CifarResNet:
    """CIFAR ResNet-110: n = 18 blocks per stage, 1.73M parameters (10 classes)."""
    return _build(110, num_classes, in_channels, input_size, width, fc_bn)


__all__ = ["CifarResNet", "CIFAR_DEPTHS", "resnet20", "resnet32", "resnet44", "resnet56",
           "resnet110"]
