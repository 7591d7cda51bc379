"""summary(): per-layer storage, totals and the >= 31x compression of binarized layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bnnopt.nn import QuantConfig, binarize_, summary


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                         nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                         nn.Conv2d(32, 32, 1, bias=False), nn.Flatten(), nn.Linear(32, 10))


def test_float_model_summary():
    s = summary(_cnn())
    assert s.total_params == sum(p.numel() for p in _cnn().parameters())
    assert s.float32_bytes == s.packed_bytes == 4 * s.total_params
    assert s.quantized_params == 0 and s.quantized_compression == 1.0
    assert [r.name for r in s.layers] == ["0", "1", "2", "3", "4", "6"]


def test_binarized_layers_are_at_least_31x_smaller():
    model = _cnn()
    names = binarize_(model, QuantConfig())
    s = summary(model)
    rows = {r.name: r for r in s.layers}
    assert [n for n, r in rows.items() if r.quantized] == names == ["2", "4"]
    w2 = 32 * 16 * 9
    assert rows["2"].bits == 1 and rows["2"].params == w2
    assert rows["2"].float32_bytes == 4 * w2 and rows["2"].packed_bytes == w2 // 8
    assert s.quantized_compression >= 31
    assert s.quantized_compression == pytest.approx(32.0)
    assert 1 < s.compression < s.quantized_compression
    d = s.to_dict()
    assert d["quantized_compression"] == s.quantized_compression and len(d["layers"]) == 6
    text = str(s)
    assert "QConv2d" in text and "compression 32.00x" in text


def test_scales_and_bias_are_counted():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(64, 16), nn.Linear(8, 2))
    binarize_(model, QuantConfig(weight_quantizer="bwn", estimator="clipped_ste",
                                 quantizer_options={"per_channel": True}, weight_bits=1))
    row = summary(model).layers[1]
    # 64*16 bits = 128 bytes, 16 float biases, 16 per-channel scales
    assert row.packed_bytes == 128 + 4 * 16 + 4 * 16
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(64, 16), nn.Linear(8, 2))
    binarize_(model, QuantConfig(weight_bits=4))
    assert summary(model).layers[1].packed_bytes == 64 * 16 // 2 + 4 * 16


def test_zoo_resnet20_summary():
    from bnnopt.registry import MODELS

    try:
        make = MODELS.get("resnet20")
    except (ValueError, ImportError) as err:
        pytest.skip(f"no resnet20 in the model zoo yet: {err}")
    model = make(num_classes=10)
    binarize_(model, QuantConfig())
    s = summary(model)
    assert s.quantized_compression >= 31
    assert s.quantized_params > 0.95 * s.total_params - 1000
