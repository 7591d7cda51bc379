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


def _resnet20_hand_count(num_classes: int = 10, width: int = 16, size: int = 32) -> dict[str, int]:
    """MACs of CIFAR ResNet-20 per 3x32x32 image from the architecture (He et al. 2016,
    Sec. 4.2): a 3x3 stem conv, three stages of three basic blocks (two 3x3 convs each),
    the first block of stages 2 and 3 striding by 2 with a 1x1 projection shortcut, and
    a linear classifier. MACs of a conv = H_out * W_out * C_out * C_in * k * k."""
    def conv(h, c_out, c_in, k):
        return h * h * c_out * c_in * k * k

    counts = {"stem": conv(size, width, 3, 3), "blocks": 0, "shortcuts": 0}
    c_in, h = width, size
    for stage in range(3):
        c_out = width * 2 ** stage
        for block in range(3):
            if stage > 0 and block == 0:
                h //= 2
                counts["shortcuts"] += conv(h, c_out, c_in, 1)
            counts["blocks"] += conv(h, c_out, c_in, 3) + conv(h, c_out, c_out, 3)
            c_in = c_out
    counts["fc"] = 4 * width * num_classes
    return counts


def test_resnet20_macs_equal_the_hand_count():
    from bnnopt.models import create_model

    model = create_model("resnet20", num_classes=10)
    binarize_(model, QuantConfig())  # first conv and fc stay float
    s = summary(model, [3, 32, 32])
    hand = _resnet20_hand_count()
    assert s.total_macs == sum(hand.values())
    assert s.float_macs == hand["stem"] + hand["fc"]
    assert s.binary_macs == hand["blocks"] + hand["shortcuts"]
    assert s.kbit_macs == 0 and s.xnor_macs == 0
    assert s.binary_mac_share == pytest.approx(s.binary_macs / s.total_macs)
    assert s.bops == s.binary_macs * 32 + s.float_macs * 32 * 32
    text = str(s)
    assert f"{s.total_macs:,}" in text and "BOPs" in text


def test_w1a1_macs_are_xnor_and_k_bit_macs_are_counted():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 4))
    binarize_(model, QuantConfig(weight_bits=1, act_quantizer="sign", keep_first=False, keep_last=True,
                                 include="^1$"))
    binarize_(model, QuantConfig(weight_bits=4, keep_first=False, keep_last=False, include="^2$"))
    s = summary(model, [16])
    assert (s.xnor_macs, s.binary_macs, s.kbit_macs, s.float_macs) == (128, 128, 64, 32)
    assert s.bops == 128 * 1 * 1 + 64 * 4 * 32 + 32 * 32 * 32
    assert s.input_shape == [16] and s.to_dict()["macs"] == 224


def test_packed_model_summary_equals_the_training_model(tmp_path):
    from bnnopt.export import export_packed, load_packed
    from bnnopt.models import create_model

    model = create_model("lenet5")
    binarize_(model, QuantConfig(weight_bits=2, keep_first=False))
    export_packed(model.eval(), tmp_path / "m.bnnpk", {"model": "lenet5"})
    a = summary(model, [1, 28, 28])
    b = summary(load_packed(tmp_path / "m.bnnpk"), [1, 28, 28])
    assert [(r.name, r.bits, r.params, r.macs) for r in a.layers] == \
        [(r.name, r.bits, r.params, r.macs) for r in b.layers]
    assert (a.total_macs, a.kbit_macs, a.bops) == (b.total_macs, b.kbit_macs, b.bops)
    model.train()
    summary(model, [1, 28, 28])
    assert model.training
