"""The 4-layer MLP of BinaryConnect / LAB / LAQ / BLAQ for MNIST.

784FC-2048FC-2048FC-2048FC-10 (Courbariaux et al. 2015; Hou et al. 2017,
2018, Sec. 4 "MNIST")::

    flatten (N, C, S, S) -> (N, in_features)
    hidden_layers x [ Linear(f -> hidden, no bias) - BN - ReLU ]
    Linear(hidden -> num_classes) [- BN]

The official LAQ code (``FNN/mnist.py``) puts BN after every layer including
the output (its nets were trained with a squared hinge loss; ``out_bn=True``,
the default here, keeps that), with BN epsilon 1e-4. ``batch_norm=False``
gives a plain MLP (biases on every Linear, no BN at all).

``in_features`` defaults to in_channels * input_size**2 (784 for MNIST); pass
it directly for flat inputs such as scikit-learn's 8x8 digits (64).

Input (N, ...) with prod(...) == in_features -> logits (N, num_classes).
"""
from __future__ import annotations

import torch
from torch import nn

from bnnopt.models._checks import positive_int
from bnnopt.registry import MODELS

#: BN epsilon of the official LAB/LAQ Theano code.
LAB_BN_EPS = 1e-4


class MLP(nn.Module):
    """``hidden_layers`` Linear-BN-ReLU blocks of width ``hidden`` and a Linear output."""

    def __init__(self, num_classes: int = 10, in_features: int | None = None,
                 hidden: int = 2048, hidden_layers: int = 3, in_channels: int = 1,
                 input_size: int = 28, batch_norm: bool = True, out_bn: bool = True):
        super().__init__()
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        positive_int("input_size", input_size)
        if in_features is None:
            in_features = in_channels * input_size * input_size
        positive_int("in_features", in_features)
        positive_int("hidden", hidden)
        positive_int("hidden_layers", hidden_layers)
        self.in_features = in_features
        layers: list[nn.Module] = [nn.Flatten()]
        f = in_features
        for _ in range(hidden_layers):
            layers.append(nn.Linear(f, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden, eps=LAB_BN_EPS))
            layers.append(nn.ReLU())
            f = hidden
        use_out_bn = batch_norm and out_bn
        layers.append(nn.Linear(f, num_classes, bias=not use_out_bn))
        if use_out_bn:
            layers.append(nn.BatchNorm1d(num_classes, eps=LAB_BN_EPS))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:].numel() != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} features per sample, "
                             f"got input of shape {tuple(x.shape)}")
        return self.layers(x)


@MODELS.register("mlp", "4-layer MLP for MNIST (BinaryConnect/LAB/LAQ): 784-2048-2048-2048-10 with BN, 10.0M params")
def mlp(num_classes: int = 10, in_features: int | None = None, hidden: int = 2048,
        hidden_layers: int = 3, in_channels: int = 1, input_size: int = 28,
        batch_norm: bool = True, out_bn: bool = True) -> MLP:
    """4-layer MLP: 3 hidden Linear(2048)-BN-ReLU layers and a Linear-BN output."""
    return MLP(num_classes, in_features, hidden, hidden_layers, in_channels, input_size,
               batch_norm, out_bn)


__all__ = ["MLP", "mlp"]
