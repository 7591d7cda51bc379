"""BinaryConnect-style VGG nets for 32x32 images: VGG-small, the LAB/LAQ VGG, SVHN-Net.

All three share one shape (K = base width)::

    (2 x K C3) - MP2 - (2 x 2K C3) - MP2 - (2 x 4K C3) - MP2 - [hidden FCs] - FC(num_classes)

Each 3x3 convolution (padding 1, no bias) is followed by BatchNorm and ReLU;
in a pooled pair the 2x2 max-pool sits between the convolution and its BN,
the order of BinaryConnect (Courbariaux et al. 2015) and of the official
LAB / LAQ code (Hou et al. 2017 / 2018). Hidden FCs are Linear (no bias) - BN - ReLU.
LAB/LAQ end with a BN on the logits (their nets were trained with a squared
hinge loss); ``out_bn`` reproduces it.

- ``vgg_small``: K = 128, no hidden FC, FC(8192 -> 10) - the VGG-Small of
  LQ-Nets (Zhang et al. 2018), the usual "VGG on CIFAR-10" of later
  quantization papers; 4.66M params. (The BLAQ paper does not spell out its
  VGG; ``vgg_lab`` is the alternative that follows LAQ's code exactly.)
- ``vgg_lab``: K = 128, hidden FCs (1024, 1024), output BN - the CIFAR-10 VGG
  of BinaryConnect / LAB / LAQ; 14.0M params.
- ``svhn_net``: K = 64, hidden FCs (1024, 1024), output BN - the SVHN net of
  LAB / LAQ (and the BLAQ paper's SVHN experiments); 6.4M params.

Input (N, C_in, S, S) with S divisible into 3 halvings (S >= 8) -> logits (N, num_classes).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bnnopt.models._checks import positive_int, positive_ints
from bnnopt.models.blocks import init_resnet_
from bnnopt.registry import MODELS

#: BN epsilon of the official LAB/LAQ Theano code (and a momentum of 0.1 there too).
LAB_BN_EPS = 1e-4


class BinaryConnectVGG(nn.Module):
    """Six 3x3 conv layers (widths K, K, 2K, 2K, 4K, 4K), three max-pools, then FCs.

    Module layout (state-dict keys): ``features.{i}`` (Conv2d / MaxPool2d /
    BatchNorm2d / ReLU in order), ``classifier.{j}`` (Flatten, hidden
    Linear-BN-ReLU triples, the output Linear, optional output BatchNorm1d).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                 width: int = 128, hidden: Sequence[int] = (), out_bn: bool = False,
                 bn_eps: float = 1e-5):
        super().__init__()
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        positive_int("input_size", input_size)
        positive_int("width", width)
        hidden = positive_ints("hidden", hidden)
        if input_size < 8:
            raise ValueError(f"input_size must be >= 8 (three 2x2 max-pools), got {input_size!r}")
        if not bn_eps > 0:
            raise ValueError(f"bn_eps must be > 0, got {bn_eps!r}")
        widths = (width, width, 2 * width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(c, w, 3, padding=1, bias=False))
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.BatchNorm2d(w, eps=bn_eps), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers)
        spatial = input_size // 8
        head: list[nn.Module] = [nn.Flatten()]
        f = c * spatial * spatial
        for h in hidden:
            head += [nn.Linear(f, h, bias=False), nn.BatchNorm1d(h, eps=bn_eps), nn.ReLU()]
            f = h
        head.append(nn.Linear(f, num_classes, bias=not out_bn))
        if out_bn:
            head.append(nn.BatchNorm1d(num_classes, eps=bn_eps))
        self.classifier = nn.Sequential(*head)
        init_resnet_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("vgg_small", "VGG-small (LQ-Nets) for CIFAR-10: 2x128C3-MP-2x256C3-MP-2x512C3-MP-FC, 4.66M params")
def vgg_small(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
              width: int = 128, hidden: Sequence[int] = (), out_bn: bool = False) -> BinaryConnectVGG:
    """VGG-small: (2x128C3)-MP2-(2x256C3)-MP2-(2x512C3)-MP2-FC(num_classes), 4.66M params."""
    return BinaryConnectVGG(num_classes, in_channels, input_size, width, hidden, out_bn)


@MODELS.register("vgg_lab", "BinaryConnect/LAB/LAQ CIFAR-10 VGG: VGG-small + 2x1024FC + output BN, 14.0M params")
def vgg_lab(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
            width: int = 128, hidden: Sequence[int] = (1024, 1024),
            out_bn: bool = True) -> BinaryConnectVGG:
    """LAB/LAQ CIFAR-10 net: (2x128C3)-MP2-(2x256C3)-MP2-(2x512C3)-MP2-(2x1024FC)-FC-BN."""
    return BinaryConnectVGG(num_classes, in_channels, input_size, width, hidden, out_bn,
                            bn_eps=LAB_BN_EPS)


@MODELS.register("svhn_net", "LAB/LAQ/BLAQ SVHN net: 2x64C3-MP-2x128C3-MP-2x256C3-MP-2x1024FC-FC-BN, 6.4M params")
def svhn_net(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             width: int = 64, hidden: Sequence[int] = (1024, 1024),
             out_bn: bool = True) -> BinaryConnectVGG:
    """SVHN-Net: (2x64C3)-MP2-(2x128C3)-MP2-(2x256C3)-MP2-(2x1024FC)-FC-BN (LAQ's svhn.py)."""
    return BinaryConnectVGG(num_classes, in_channels, input_size, width, hidden, out_bn,
                            bn_eps=LAB_BN_EPS)


__all__ = ["BinaryConnectVGG", "vgg_small", "vgg_lab", "svhn_net", "LAB_BN_EPS"]
