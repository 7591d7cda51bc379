"""Helpers for the export tests: 'trained-looking' quantized models built directly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bnnopt.models import create_model
from bnnopt.nn import QuantConfig, binarize_


def make_quantized(name: str, options: dict, config: QuantConfig, seed: int) -> nn.Module:
    """Registered model ``name`` with random weights *and* random BatchNorm affine
    parameters / running statistics (so BN is not the identity), binarized by
    ``config``, in eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, **options)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.weight.copy_(torch.randn(n, generator=gen))
                module.bias.copy_(torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.num_batches_tracked.fill_(seed + 7)
    binarize_(model, config)
    return model.eval()


@pytest.fixture(scope="session")
def quantized():
    return make_quantized


@torch.no_grad()
def calibrate_bn(model: nn.Module, shape: list[int], seed: int = 0, batches: int = 2) -> nn.Module:
    """Set every BatchNorm's running statistics to those of random N(0, 1) inputs (one
    cumulative average over ``batches`` batches of 64), so activations stay O(1) through a
    deep randomly initialised network and logits are O(1)-O(10). Returns ``model`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    for _ in range(batches):
        model(torch.randn([64, *shape], generator=gen))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    return model.eval()


@pytest.fixture(scope="session")
def calibrated():
    return calibrate_bn
