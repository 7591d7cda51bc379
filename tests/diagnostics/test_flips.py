"""Per-layer flip rate: the codes that changed, by hand and through a tiny run."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bnnopt.diagnostics.flips import flip_rates, layer_codes
from bnnopt.nn import QuantConfig, binarize_
from bnnopt.report.plots import plot_flip_rates
from bnnopt.train import RunConfig, Trainer


def sign_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 3))
    binarize_(model, QuantConfig(weight_quantizer="sign", keep_first=False, keep_last=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0, 2.0, -0.5], [0.3, 0.3, -0.3, -0.3]]))
        model[2].weight.copy_(torch.ones(3, 2))
    return model


def test_flip_rate_counts_changed_codes_per_layer():
    model = sign_model()
    before = layer_codes(model)
    assert list(before) == ["0", "2"] and before["0"].dtype == torch.uint8
    with torch.no_grad():
        model[0].weight[0, 0] = -3.0      # +1 -> -1: one flip of 8
        model[0].weight[1, 2] = -0.1      # -1 -> -1: magnitude only, no flip
        model[0].weight[1, 3] = 0.2       # -1 -> +1: second flip
        model[2].weight.mul_(5.0)         # all +1 stay +1
    assert flip_rates(before, model) == {"0": 2 / 8, "2": 0.0}
    assert flip_rates(layer_codes(model), model) == {"0": 0.0, "2": 0.0}


def test_ternary_level_changes_count_scale_changes_do_not():
    lin = nn.Linear(4, 1, bias=False)
    model = nn.Sequential(lin)
    binarize_(model, QuantConfig(weight_quantizer="bitnet_b158", weight_bits=2, keep_first=False,
                                 keep_last=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0, 0.1, 1.0]]))   # gamma 0.775: +1 -1 0 +1
    before = layer_codes(model)
    assert before["0"].tolist() == [[2, 0, 1, 2]]
    with torch.no_grad():
        model[0].weight.mul_(3.0)                                      # same levels, new scale
    assert flip_rates(before, model) == {"0": 0.0}
    with torch.no_grad():
        model[0].weight[0, 2] = 3.0                                    # 0 -> +1
    assert flip_rates(before, model) == {"0": 0.25}


def test_shape_change_is_refused():
    model = sign_model()
    before = layer_codes(model)
    before["0"] = before["0"].reshape(-1)
    with pytest.raises(ValueError, match="changed shape"):
        flip_rates(before, model)


def test_trainer_records_and_report_plots_flip_rates(tmp_path):
    cfg = RunConfig(model="mlp", dataset="digits", method="clipped_ste", epochs=2, batch_size=32,
                    model_options={"hidden": 16}, schedule="constant",
                    optim={"name": "adam", "lr": 1e-2}, augment=False, device="cpu",
                    train_limit=64, test_limit=32)
    expected = []

    def after_epoch(trainer, row):    # the rates of the epoch, recomputed from the codes
        expected.append(flip_rates(codes[-1], trainer.model))
        codes.append(layer_codes(trainer.model))

    trainer = Trainer(cfg, tmp_path / "run", callbacks=[after_epoch])
    codes = [layer_codes(trainer.model)]
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [list(r["flip_rate"]) for r in rows] == [trainer.quantized_layers] * 2
    assert [r["flip_rate"] for r in rows] == expected
    assert all(0.0 <= v <= 1.0 for r in rows for v in r["flip_rate"].values())
    assert any(v > 0 for v in rows[0]["flip_rate"].values())
    path = plot_flip_rates(rows, tmp_path / "flips.png", title="mlp clipped_ste")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no metrics row has a 'flip_rate'"):
        plot_flip_rates([{"epoch": 1, "loss": 1.0}], tmp_path / "none.png")


def test_float_run_has_no_flip_rate(tmp_path):
    cfg = RunConfig(model="mlp", dataset="digits", method="fp", epochs=1, batch_size=64,
                    model_options={"hidden": 16}, augment=False, device="cpu",
                    train_limit=64, test_limit=64)
    trainer = Trainer(cfg, tmp_path / "run")
    assert "flip_rate" not in trainer.train_epoch(0)
