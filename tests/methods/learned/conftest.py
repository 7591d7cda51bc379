"""Tiny models, batches and a driver shared by the learned-gradient tests (float64)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.registry import METHODS
from bnnopt.methods.base import OptimConfig

ALL_LAYERS = {"keep_first": False, "keep_last": False}


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))


def batches(n: int, cnn: bool = False, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    shape = (5, 2, 4, 4) if cnn else (5, 6)
    return [(torch.randn(shape, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (5,), generator=g)) for _ in range(n)]


def make(name: str, *, cnn: bool = False, optim: str = "sgd", lr: float = 0.05,
         policy=None, seed: int = 0, **options):
    """(model, method) with ``name`` prepared and built on a tiny float64 model."""
    torch.manual_seed(seed)
    model = (tiny_cnn() if cnn else tiny_mlp()).double()
    method = METHODS.get(name)(**options)
    method.prepare(model, dict(ALL_LAYERS if policy is None else policy))
    method.build(model, OptimConfig(name=optim, lr=lr))
    return model, method


def step(model, method, batch):
    return method.train_step(model, batch[0], batch[1], F.cross_entropy)


def weights(method):
    return [layer.weight.detach().clone() for _, layer in method.layers]


def dorefa_c(w: torch.Tensor) -> torch.Tensor:
    """Closed-form calibration c = (1 - tanh²W) / max|tanh W| (DoReFa, FSG Eq. 1)."""
    t = torch.tanh(w)
    return (1 - t * t) / t.abs().max()


def dorefa_pre(w: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(w)
    return t / t.abs().max()


@pytest.fixture
def snapshot():
    return copy.deepcopy
