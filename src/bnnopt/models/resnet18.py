"""ResNet-18 (He et al., CVPR 2016, Table 1), torchvision-compatible names.

ImageNet layout (224x224 input)::

    conv1 7x7/2 (C_in -> 64) - bn1 - ReLU - maxpool 3x3/2        56x56
    layer1: 2 BasicBlocks,  64 ch                                 56x56
    layer2: 2 BasicBlocks, 128 ch, first stride 2                 28x28
    layer3: 2 BasicBlocks, 256 ch, first stride 2                 14x14
    layer4: 2 BasicBlocks, 512 ch, first stride 2                  7x7
    avgpool (global) - fc(512 -> num_classes)

Parameter and buffer names (``conv1, bn1, layerK.i.{conv1,bn1,conv2,bn2,
downsample.0,downsample.1}, fc``) equal torchvision's ``resnet18``, so its
state dicts load with strict=True (the BLAQ paper's ImageNet experiments start
from such a model). 11.69M parameters for 1000 classes.

``small_input=True`` (the usual CIFAR adaptation, e.g. in ReSTE / IR-Net code)
replaces the stem by conv1 3x3/1 and drops the max-pool, so 32x32 inputs keep
32x32 resolution in layer1; ``small_input=None`` (default) picks it when
``input_size <= 64``. Same keys either way except conv1's kernel shape.

Input (N, C_in, H, W) -> logits (N, num_classes).
"""
from __future__ import annotations

import torch
from torch import nn

from bnnopt.models._checks import positive_int
from bnnopt.models.blocks import init_resnet_, make_stage
from bnnopt.registry import MODELS


class ResNet18(nn.Module):
    """ResNet-18 with BasicBlocks [2, 2, 2, 2] and an ImageNet or small-image stem."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
                 small_input: bool | None = None):
        super().__init__()
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        positive_int("input_size", input_size)
        if small_input is None:
            small_input = input_size <= 64
        self.small_input = bool(small_input)
        if self.small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.layer1 = make_stage(64, 64, 2, stride=1)
        self.layer2 = make_stage(64, 128, 2, stride=2)
        self.layer3 = make_stage(128, 256, 2, stride=2)
        self.layer4 = make_stage(256, 512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        init_resnet_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@MODELS.register("resnet18", "ResNet-18 (He et al. 2016), torchvision key names; 3x3 stem "
                              "without max-pool for inputs <= 64 px; 11.7M params")
def resnet18(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
             small_input: bool | None = None) -> ResNet18:
    """ResNet-18; ImageNet stem by default, CIFAR stem when small_input (auto: input_size <= 64)."""
    return ResNet18(num_classes, in_channels, input_size, small_input)


__all__ = ["ResNet18", "resnet18"]
