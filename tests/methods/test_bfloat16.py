"""Every registered method survives ``model.to(torch.bfloat16)`` after it was built:
the quantized layers, the meta-nets and the optimizers' state follow the weights."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnopt import METHODS
from bnnopt.methods.base import OptimConfig


@pytest.mark.parametrize("name", METHODS.names())
def test_training_goes_on_in_bfloat16_after_build(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    method = METHODS.get(name)()
    method.prepare(model, {} if name == "fp" else {"keep_first": False, "keep_last": False})
    method.build(model, OptimConfig(name="adam", lr=1e-3))
    model.to(torch.bfloat16)
    x, y = torch.randn(64, 16).bfloat16(), torch.randint(0, 4, (64,))
    for _ in range(3):
        out = method.train_step(model, x, y, F.cross_entropy)
        assert torch.isfinite(out.loss.float())
    weights = [p for p in model.parameters() if p.dim() > 1]
    assert weights and all(p.dtype == torch.bfloat16 for p in weights)
