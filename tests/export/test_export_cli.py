"""train -> bnnopt export -> load_packed / bnnopt eval / bnnopt summary, for every method family."""
from __future__ import annotations

import json

import pytest
import torch

from bnnopt.cli.main import main
from bnnopt.export import export_checkpoint, load_packed, read_manifest
from bnnopt.train import RunConfig, Trainer
from bnnopt.train.checkpoint import load_model

RUNS = {  # estimator, loss-aware (LAQ 2 and 4 bits, BLAQ) and learned-gradient families
    "ste": ("ste", {}),
    "laq2": ("laq", {"bits": 2}),
    "laq4log": ("laq", {"bits": 4, "levels": "log"}),
    "blaq1": ("blaq", {"bits": 1}),
    "fsg": ("fsg", {}),
}


def _config(method, options, **changes):
    cfg = RunConfig(model="mlp", dataset="digits", method=method, method_options=options, epochs=1,
                    batch_size=128, model_options={"hidden": 32, "in_features": 64},
                    schedule="cosine", optim={"name": "adam", "lr": 1e-2}, augment=False,
                    device="cpu", train_limit=256, test_limit=128)
    return cfg.update(changes)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for key, (method, options) in RUNS.items():
            Trainer(_config(method, options), root / key, log=lambda *a, **k: None).run()
            out[key] = root / key
        return out
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("key", list(RUNS))
def test_export_matches_checkpoint_model_and_accuracy(runs, key, tmp_path, capsys):
    run = runs[key]
    out = tmp_path / f"{key}.bnnpk"
    assert main(["export", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "smaller" in printed and "verified" in printed

    model, config, data = load_model(run)
    packed = load_packed(out)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))
    assert packed.bnnopt_meta["dataset"] == "digits" and packed.bnnopt_meta["data"] == data
    manifest = read_manifest(out)
    assert manifest["model"]["name"] == "mlp"
    assert manifest["meta"]["config"]["method"] == config.method

    assert main(["eval", str(run), "--json", "--limit", "128"]) == 0
    from_checkpoint = json.loads(capsys.readouterr().out)
    assert main(["eval", str(out), "--json", "--limit", "128"]) == 0
    from_packed = json.loads(capsys.readouterr().out)
    assert from_packed["kind"] == "packed" and from_packed["images"] == from_checkpoint["images"] == 128
    assert from_packed["test_acc"] == from_checkpoint["test_acc"]
    assert from_packed["test_loss"] == from_checkpoint["test_loss"]


def test_laq_bits_are_what_the_method_trained(runs, tmp_path):
    for key, bits in (("laq2", 2), ("laq4log", 4), ("blaq1", 1)):
        out = tmp_path / f"{key}.bnnpk"
        info = export_checkpoint(runs[key], out)
        assert info["weight_bits"] == str(bits)
        entries = read_manifest(out)["qlayers"]
        assert entries and all(e["quantizer"]["name"] == "lossaware" for e in entries)


def test_default_output_and_summary(runs, capsys):
    run = runs["ste"]
    assert main(["export", str(run), "--json", "--no-verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["file"] == str(run / "model.bnnpk") and "verified_max_abs_diff" not in info
    assert main(["summary", str(run / "model.bnnpk")]) == 0
    text = capsys.readouterr().out
    assert "file_bytes" in text and "float32_state_dict_bytes" in text


def test_bad_exports_fail_cleanly(runs, tmp_path, capsys):
    run = runs["ste"]
    checkpoint = run / "checkpoint.pt"
    before = checkpoint.read_bytes()
    assert main(["export", str(run), "--out", str(checkpoint)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.bnnpk")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.bnnpk").exists()


def test_eval_and_summary_refuse_damaged_packed_file(runs, tmp_path, capsys):
    out = tmp_path / "m.bnnpk"
    export_checkpoint(runs["ste"], out, verify=False)
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    assert main(["eval", str(out)]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["summary", str(out)]) == 2
    assert "corrupt" in capsys.readouterr().err
