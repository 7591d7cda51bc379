"""lab / laq / blaq under the Trainer: zig-zag records, exact resume, checkpoint reload."""
from __future__ import annotations

import json

import pytest
import torch

from bnnopt.train import RunConfig, Trainer
from bnnopt.train.checkpoint import load_model


def _config(method, options):
    return RunConfig(model="mlp", dataset="digits", method=method, method_options=options,
                     epochs=2, batch_size=128, model_options={"hidden": 32},
                     schedule="cosine", optim={"name": "adam", "lr": 1e-2}, augment=False,
                     device="cpu", train_limit=256, test_limit=64, zigzag=64)


@pytest.mark.parametrize("method,options", [("blaq", {"bits": 1}), ("laq", {"bits": 2})])
def test_resume_is_exact_and_zigzag_is_recorded(tmp_path, method, options, full_and_killed):
    full, summary = full_and_killed(_config(method, options), tmp_path / "full", tmp_path / "cut")
    assert summary["zigzag"]["last_k"]["tracked"] == 64
    resumed = Trainer.resume(tmp_path / "cut")
    resumed.run()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text()
            .splitlines()]
    cut = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text()
           .splitlines()]
    assert [r["zigzag"] for r in rows] == [r["zigzag"] for r in cut]
    model, _, _ = load_model(tmp_path / "full")
    x = torch.randn(4, 64)
    full.model.eval()
    assert torch.equal(model(x), full.model(x))
