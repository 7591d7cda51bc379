"""``bnnopt export --format packed|onnx|qonnx`` on a digits run shaped like ``bnnopt demo``'s."""
from __future__ import annotations

import json

import pytest
import torch

from bnnopt.cli.main import main
from bnnopt.export import load_packed
from bnnopt.train import RunConfig, Trainer
from bnnopt.experiments.protocols import protocol_config


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The demo's protocol (model_options without in_features: the MLP's input size
    comes from the data), shrunk to one short epoch."""
    cfg = RunConfig.from_dict(protocol_config("digits"))
    cfg.update({"method": "ste", "epochs": 1, "train_limit": 256, "test_limit": 64, "device": "cpu",
                "model_options": {"hidden": 32}})
    run = tmp_path_factory.mktemp("digits") / "ste"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(cfg, run, log=lambda *a, **k: None).run()
    finally:
        torch.set_num_threads(before)
    return run


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_packed_export_of_a_digits_run_loads_and_evaluates(digits_run, tmp_path, capsys):
    out = tmp_path / "d.bnnpk"
    assert main(["export", str(digits_run), "--out", str(out)]) == 0
    capsys.readouterr()
    assert load_packed(out)(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "packed"


def test_onnx_export_of_a_digits_run(digits_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from bnnopt.export.onnx_export import run_onnxruntime

    out = tmp_path / "d.onnx"
    assert main(["export", str(digits_run), "--format", "onnx", "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified_max_abs_diff"] <= 1e-5 and info["input_shape"] == [1, 8, 8]
    assert info["float32_state_dict_bytes"] > info["packed_bytes"]
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    packed = tmp_path / "d.bnnpk"
    assert main(["export", str(digits_run), "--out", str(packed)]) == 0
    with torch.no_grad():
        ref = load_packed(packed)(x).numpy()
    assert abs(run_onnxruntime(out, x) - ref).max() <= 1e-5
    # a packed file is a valid source too; default output name beside it
    assert main(["export", str(packed), "--format", "onnx"]) == 0
    assert (tmp_path / "d.onnx").exists()


def test_qonnx_fold_bn_and_bench(digits_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "d.qonnx.onnx"
    assert main(["export", str(digits_run), "--format", "qonnx", "--fold-bn", "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["folded_bn"] == info["quantized_layers"] == 2
    assert "bit width" in info["verified_with"]
    assert main(["export", str(digits_run), "--format", "onnx", "--out", str(tmp_path / "b.onnx"), "--bench"]) == 0
    text = capsys.readouterr().out
    assert "| 1 |" in text and "| 64 |" in text and "not faster" in text and "smaller" in text


def test_failed_exports_leave_no_file(digits_run, tmp_path, capsys, monkeypatch):
    import bnnopt.export.from_run as export_cli

    def broken(*args, **kwargs):
        raise ValueError("simulated verification failure")

    monkeypatch.setattr(export_cli, "_verify", broken)
    out = tmp_path / "m.bnnpk"
    assert main(["export", str(digits_run), "--out", str(out)]) == 2
    assert "simulated" in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path) == []
    monkeypatch.undo()
    if pytest.importorskip("onnx") and pytest.importorskip("onnxruntime"):
        import bnnopt.export.onnx_export as onnx_export

        monkeypatch.setattr(onnx_export, "compare_logits", broken)
        out = tmp_path / "m.onnx"
        assert main(["export", str(digits_run), "--format", "onnx", "--out", str(out)]) == 2
        assert "simulated" in capsys.readouterr().err
        assert not out.exists() and _leftovers(tmp_path) == []


def test_bad_format_options_are_one_line_errors(digits_run, tmp_path, capsys):
    assert main(["export", str(digits_run), "--fold-bn", "--out", str(tmp_path / "x.bnnpk")]) == 2
    assert "--fold-bn applies to --format onnx or qonnx" in capsys.readouterr().err
    packed = tmp_path / "p.bnnpk"
    assert main(["export", str(digits_run), "--out", str(packed)]) == 0
    capsys.readouterr()
    assert main(["export", str(packed)]) == 2
    assert "already a packed model" in capsys.readouterr().err
