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
used by some quantization papers (but with a padded first convolution).

``lenet5_alq`` is the LeNet-5 of ALQ (Qu et al., CVPR 2020; their public code,
github zqu1992/ALQ, ``lenet5.py``), the network of BLAQ's Table 4 ("LeNet5
(Qu et al. 2020)"): 20C5-MP-50C5-MP-500-10, no padding, biases, no BatchNorm::

    conv5x5(C_in -> 20)   MP2  ReLU     28x28 -> 24x24 -> 12x12
    conv5x5(20 -> 50)     MP2  ReLU     12x12 ->  8x8  ->  4x4
    flatten (50*4*4 = 800) - FC 500 ReLU - FC num_classes      (431,080 params)

(ALQ pools before the ReLU; for max-pooling the order does not matter.)
``batch_norm=True`` adds BN after each hidden layer (not in ALQ's network).

Input (N, C_in, S, S), S >= 12 (``lenet5``) or S >= 16 (``lenet5_alq``) ->
logits (N, num_classes).
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


class LeNet5ALQ(nn.Module):
    """ALQ's LeNet-5 (module docstring): ``features`` then ``classifier``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 batch_norm: bool = False):
        super().__init__()
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        positive_int("input_size", input_size)
        size = conv_out(conv_out(conv_out(conv_out(input_size, 5), 2, 2), 5), 2, 2)
        if size < 1:
            raise ValueError(f"input_size must be >= 16 for the ALQ LeNet-5, got {input_size!r}")
        bn2 = (lambda c: [nn.BatchNorm2d(c)]) if batch_norm else (lambda c: [])
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5, bias=not batch_norm), *bn2(20), nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(20, 50, 5, bias=not batch_norm), *bn2(50), nn.MaxPool2d(2), nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(50 * size * size, 500, bias=not batch_norm),
            *([nn.BatchNorm1d(500)] if batch_norm else []), nn.ReLU(),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("lenet5_alq", "LeNet-5 of ALQ (Qu et al. 2020) / BLAQ Table 4: "
                               "20C5-MP-50C5-MP-500-10, no BN, 431k params")
def lenet5_alq(num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
               batch_norm: bool = False) -> LeNet5ALQ:
    """ALQ's LeNet-5 for 28x28 MNIST: 20C5-MP2-50C5-MP2-FC500-FC(num_classes)."""
    return LeNet5ALQ(num_classes, in_channels, input_size, batch_norm)


__all__ = ["LeNet5", "lenet5", "LeNet5ALQ", "lenet5_alq"]
