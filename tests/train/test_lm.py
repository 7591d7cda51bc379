"""Language modelling through the Trainer: per-token loss/accuracy, bits per character,
and every gradient-method family running on a tiny quantized GPT."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bnnopt.train import RunConfig, Trainer
from bnnopt.train.lm import add_bpc, bpc_summary, count_correct, sharded_token_criterion, token_cross_entropy


def lm_config(**changes) -> RunConfig:
    cfg = RunConfig(model="gpt_tiny", dataset="shakespeare_embedded", method="ste", epochs=1,
                    batch_size=4, model_options={"block_size": 16, "d_model": 32},
                    policy={"keep_first": False, "keep_last": True}, schedule="constant",
                    optim={"name": "adam", "lr": 2e-3}, augment=False, device="cpu",
                    train_limit=8, test_limit=4)
    return cfg.update(changes)


def test_token_helpers_match_flattened_definitions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    y = torch.randint(0, 7, (3, 5), generator=g)
    flat = torch.nn.functional.cross_entropy(logits.reshape(15, 7), y.reshape(15))
    torch.testing.assert_close(token_cross_entropy(logits, y), flat)
    assert count_correct(logits, y) == int((logits.argmax(-1) == y).sum())
    # classification shapes are untouched
    torch.testing.assert_close(token_cross_entropy(logits[:, 0], y[:, 0]),
                               torch.nn.functional.cross_entropy(logits[:, 0], y[:, 0]))
    # sharded: two halves of a batch of 3 samples, summed, equal the global mean
    crit = sharded_token_criterion(3, 2)
    total = (crit(logits[:2], y[:2]) + crit(logits[2:], y[2:])) / 2
    torch.testing.assert_close(total, flat)
    row = add_bpc({"loss": 1.0, "test_loss": math.log(2)})
    assert row["test_bpc"] == pytest.approx(1.0) and "val_bpc" not in row
    rows = [{"test_bpc": 3.0, "val_bpc": 2.0}, {"test_bpc": 2.5, "val_bpc": 2.2}]
    assert bpc_summary(rows) == {"final_test_bpc": 2.5, "best_val_bpc": 2.0, "selected_test_bpc": 3.0}


def test_trainer_records_bpc(tmp_path):
    trainer = Trainer(lm_config(), tmp_path / "run")
    assert trainer.data_info["task"] == "lm" and trainer.data_info["block_size"] == 16
    assert len(trainer.train_loader) == 2
    summary = trainer.run()
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for split in ("train", "val", "test"):
        key = "loss" if split == "train" else f"{split}_loss"
        assert row[f"{split}_bpc"] == pytest.approx(row[key] / math.log(2))
    # an untrained byte model is near log2(256) = 8 bits per character
    assert 5.0 < row["test_bpc"] < 9.0
    assert 0.0 <= row["test_acc"] <= 100.0
    assert summary["final_test_bpc"] == row["test_bpc"]
    assert trainer.quantized_layers == ["blocks.0.attn.qkv", "blocks.0.attn.proj",
                                        "blocks.0.mlp.fc", "blocks.0.mlp.proj",
                                        "blocks.1.attn.qkv", "blocks.1.attn.proj",
                                        "blocks.1.mlp.fc", "blocks.1.mlp.proj"]


def test_text_rejects_val_fraction(tmp_path):
    with pytest.raises(ValueError, match="validation split is fixed"):
        Trainer(lm_config(val_fraction=0.1), tmp_path / "run")


@pytest.mark.parametrize("method, options", [
    ("fp", {}),
    ("ste", {}),
    ("reste", {}),
    ("ste", {"quantizer": "bitnet", "bits": 1}),
    ("ste", {"quantizer": "bitnet_b158", "bits": 2}),
    ("fcgrad", {}),
    ("fsg", {"layout": "per-weight"}),
    ("laq", {"bits": 2}),
    ("blaq", {"bits": 2}),
])
def test_every_family_trains_a_tiny_gpt(tmp_path, method, options):
    trainer = Trainer(lm_config(method=method, method_options=options), tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "blocks.0.mlp.fc.weight" in k}
    summary = trainer.run()
    assert math.isfinite(summary["final_train_loss"]) and math.isfinite(summary["final_test_bpc"])
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_bitnet_with_absmax_activations(tmp_path):
    cfg = lm_config(method_options={"quantizer": "bitnet_b158", "bits": 2},
                    policy={"keep_first": False, "keep_last": True,
                            "act_quantizer": "absmax_ln", "act_bits": 8, "act_estimator": "ste"})
    summary = Trainer(cfg, tmp_path / "run").run()
    assert math.isfinite(summary["final_test_bpc"])
