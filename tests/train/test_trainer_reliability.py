"""Trainer: non-finite loss stops cleanly, resume --epochs extends, argv.json history,
orphan temp files removed when the run directory is opened."""
import json

import pytest
import torch

from bnnopt.train import RunConfig, Trainer
from bnnopt.train.checkpoint import load_checkpoint
from bnnopt.runs.rundir import NonFiniteLossError


def tiny_config(**changes) -> RunConfig:
    return RunConfig(model="mlp", dataset="digits", method="ste", epochs=2, batch_size=128,
                     model_options={"hidden": 16}, optim={"name": "sgd", "lr": 1e-2},
                     augment=False, device="cpu", train_limit=256, test_limit=64,
                     schedule="constant").update(changes)


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_checkpoint(tmp_path):
    cfg = tiny_config(epochs=3)
    trainer = Trainer(cfg, tmp_path / "run")
    original = trainer.method.train_step
    calls = {"n": 0}

    def explode_in_epoch_2(model, x, y, criterion):  # epoch 2 (0-based 1), step 2
        calls["n"] += 1
        out = original(model, x, y, criterion)
        if calls["n"] == 4:
            out.loss.fill_(float("nan"))
        return out

    trainer.method.train_step = explode_in_epoch_2
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, step 2/2 .*"
                                                 r"the checkpoint of epoch 1 .* is kept"):
        trainer.run()
    assert load_checkpoint(tmp_path / "run")["epoch"] == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "NaN" not in lines[0] and "Infinity" not in lines[0]
    json.loads(lines[0])
    assert not (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "run" / ".lock").exists()


def test_huge_learning_rate_is_a_clear_cli_error(tmp_path, capsys):
    from bnnopt.cli.main import main

    code = main(["train", "--model", "mlp", "--dataset", "digits", "--set",
                 "model_options.hidden=16", "--epochs", "2", "--train-limit", "256",
                 "--test-limit", "64", "--device", "cpu", "--optimizer", "sgd", "--lr", "1e30",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "at epoch 1, step" in err and "try a lower --lr" in err
    assert not (tmp_path / "run").exists()  # nothing trained: no file, no directory left
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() \
            if (tmp_path / "run" / "metrics.jsonl").exists() else []:
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


def test_resume_with_epochs_extends_a_finished_run(tmp_path):
    Trainer(tiny_config(epochs=1), tmp_path / "run").run()
    resumed = Trainer.resume(tmp_path / "run", epochs=3)
    assert resumed.start_epoch == 1 and resumed.config.epochs == 3
    summary = resumed.run()
    assert summary["epochs"] == 3
    assert [r["epoch"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl")
                                    .read_text().splitlines())] == [1, 2, 3]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 3
    with pytest.raises(ValueError, match=r"has already finished 3 epoch\(s\); give N >= 3"):
        Trainer.resume(tmp_path / "run", epochs=2)


def test_constant_lr_extension_equals_a_longer_run(tmp_path):
    """With a constant schedule, 1 epoch + resume to 2 == 2 epochs straight."""
    straight = Trainer(tiny_config(epochs=2), tmp_path / "a")
    straight.run()
    Trainer(tiny_config(epochs=1), tmp_path / "b").run()
    extended = Trainer.resume(tmp_path / "b", epochs=2)
    extended.run()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, extended.model.state_dict()[key]), key


def test_argv_json_keeps_the_original_and_appends_resumes(tmp_path):
    Trainer(tiny_config(epochs=1), tmp_path / "run", argv=["bnnopt", "train", "first"]).run()
    Trainer.resume(tmp_path / "run", epochs=2, argv=["bnnopt", "train", "--resume", "x"]).run()
    Trainer.resume(tmp_path / "run", epochs=3, argv=["bnnopt", "again"]).run()
    data = json.loads((tmp_path / "run" / "argv.json").read_text())
    assert data["argv"] == ["bnnopt", "train", "first"]
    assert [r["argv"] for r in data["resumes"]] == [["bnnopt", "train", "--resume", "x"],
                                                   ["bnnopt", "again"]]
    assert "quantized_layers" in data


def test_orphans_removed_when_run_is_reopened(tmp_path):
    Trainer(tiny_config(epochs=1), tmp_path / "run").run()
    orphan = tmp_path / "run" / ".checkpoint.pt.k1ll3d9x.tmp"
    orphan.write_bytes(b"\0" * 1000)
    logs = []
    Trainer.resume(tmp_path / "run", epochs=2, log=logs.append).run()
    assert not orphan.exists()
    assert any("removed 1 orphaned temporary file" in m for m in logs)


def test_cli_sigint_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from bnnopt.cli.main import main

    def interrupt(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    original = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", interrupt)
    code = main(["train", "--model", "mlp", "--dataset", "digits", "--set",
                 "model_options.hidden=16", "--epochs", "2", "--train-limit", "128",
                 "--test-limit", "32", "--device", "cpu", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 130
    assert f"continue with: bnnopt train --resume {tmp_path / 'run'}" in err
    assert not (tmp_path / "run" / ".lock").exists()
