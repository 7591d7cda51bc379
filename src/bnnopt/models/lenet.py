"""LeNet-5 for MNIST-sized images (LeCun et al., Proc. IEEE 1998), modernised.

Layout for 28x28 inputs (the first convolution pads by 2, so 28x28 is treated
as LeNet's original 32x32 with the border)::

    conv5x5(C_in -> 6, pad 2)  [BN] ReLU  MP2      28x28 -> 14x14
    conv5x5(6 -> 16)           [BN] ReLU  MP2      10x10 -> 5x5
    flatten (16*5*5 = 400) - FC 120 [BN] ReLU - FC 84 [BN] ReLU - FC num_classes

Changes from 1998, as in the quantization literature: ReLU instead of scaled
tanh, max-pooling instead of trainable sub-sampling, full C3 connectivity, a
linear output instead of RBF units, and (``batch_norm=True``, default) BN after
every hidden layer, which binary-weight training needs (LAB/LAQ put BN after
every layer). ``channels=(20, 50), hidden=(500,)`` gives the Caffe "LeNet"
used by some quantization papers.

Input (N, C_in, S, S), S >= 12 -> logits (N, num_classes).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bnnopt.models._checks import conv_out, positive_int, positive_ints
from bnnopt.registry import MODELS


class LeNet5(nn.Module):
    """Two conv-pool stages and a fully connected head; ``features`` / ``classifier``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 channels: Sequence[int] = (6, 16), hidden: Sequence[int] = (120, 84),
                 batch_norm: bool = True):
        super().__init__()
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        positive_int("input_size", input_size)
        channels = positive_ints("channels", channels)
        hidden = positive_ints("hidden", hidden)
        if len(channels) != 2:
            raise ValueError(f"channels must hold 2 conv widths, got {channels!r}")
        size = conv_out(conv_out(input_size, 5, 1, 2), 2, 2)   # conv1 (same) + pool
        size = conv_out(conv_out(size, 5), 2, 2)                # conv2 (valid) + pool
        if size < 1:
            raise ValueError(f"input_size must be >= 12 for LeNet-5, got {input_size!r}")
        c1, c2 = channels
        self.features = nn.Sequential(
            *self._conv(in_channels, c1, 2, batch_norm), nn.MaxPool2d(2),
            *self._conv(c1, c2, 0, batch_norm), nn.MaxPool2d(2),
        )
        head: list[nn.Module] = [nn.Flatten()]
        f = c2 * size * size
        for h in hidden:
            head.append(nn.Linear(f, h, bias=not batch_norm))
            if batch_norm:
                head.append(nn.BatchNorm1d(h))
            head.append(nn.ReLU())
            f = h
        head.append(nn.Linear(f, num_classes))
        self.classifier = nn.Sequential(*head)

    @staticmethod
    def _conv(cin: int, cout: int, padding: int, batch_norm: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 5, padding=padding, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU())
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("lenet5", "LeNet-5 for MNIST (LeCun 1998; ReLU, max-pool, BN): 6C5-MP-16C5-MP-120-84-FC, 61.9k params")
def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
           channels: Sequence[int] = (6, 16), hidden: Sequence[int] = (120, 84),
           batch_norm: bool = True) -> LeNet5:
    """LeNet-5 for 28x28 MNIST: 6C5(pad 2)-MP2-16C5-MP2-FC120-FC84-FC(num_classes)."""
    return LeNet5(num_classes, in_channels, input_size, channels, hidden, batch_norm)


__all__ = ["LeNet5", "lenet5"]
