"""Per-layer bit widths of the loss-aware family (BLAQ ImageNet: first/last layers 8-bit)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.export import export_packed, load_packed
from bnnopt.registry import METHODS
from bnnopt.methods.base import OptimConfig


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("name,options", [("blaq", {}), ("blaq", {"reading": "recursive"}),
                                          ("laq", {"bits": 2})])
def test_eight_bit_first_and_last_layers_train_and_export_exactly(name, options, tmp_path):
    model = _model()
    method = METHODS.get(name)(first_bits=8, last_bits=8, **options)
    method.prepare(model, {})
    method.build(model, OptimConfig(lr=0.01))
    assert [model[i].bits for i in (0, 3, 6)] == [8, options.get("bits", 1), 8]
    assert model[0].weight_quantizer.levels == "linear"               # 8 bit: uniform levels
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 6, generator=gen), torch.randint(0, 3, (32,), generator=gen)
    first = model[0].weight_quantizer.codes.clone()
    losses = [float(method.train_step(model, x, y, F.cross_entropy).loss) for _ in range(15)]
    assert losses[-1] < losses[0]
    assert not torch.equal(first, model[0].weight_quantizer.codes)   # the 8-bit layer trained
    q0 = model[0].quantized_weight().detach()
    assert 16 < torch.unique(q0).numel() <= 255                       # more than 4 bits used
    model.eval()
    path = tmp_path / "m.bnnq"
    export_packed(model, path)
    packed = load_packed(path, skeleton=_model())
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))                       # bit for bit
        for i in (0, 3, 6):
            assert torch.equal(packed[i].weight, model[i].quantized_weight())


def test_layer_bits_rules_and_bad_values():
    model = _model()
    method = METHODS.get("laq")(bits=1, layer_bits={r"3": 4}, last_bits=2)
    method.prepare(model, {"keep_first": True})
    assert isinstance(model[0], nn.Linear) and not hasattr(model[0], "weight_quantizer")
    assert [model[3].bits, model[6].bits] == [4, 2]
    with pytest.raises(ValueError, match="invalid first_bits 3; valid: 1, 2, 4, 8"):
        METHODS.get("blaq")(first_bits=3)
    with pytest.raises(ValueError, match="layer_bits"):
        METHODS.get("laq")(layer_bits={"(": 8})
    with pytest.raises(ValueError, match="first_bits"):
        METHODS.get("lab")(first_bits=8)
