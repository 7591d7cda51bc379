"""Trainer: run records, exact resume after a kill between epochs, bad input."""
import json

import pytest
import torch

from bnnopt.train import RunConfig, Trainer
from bnnopt.train.checkpoint import load_checkpoint, load_model


def tiny_config(**changes) -> RunConfig:
    cfg = RunConfig(model="mlp", dataset="digits", method="ste", epochs=3, batch_size=128,
                    model_options={"hidden": 32}, schedule="cosine",
                    optim={"name": "adam", "lr": 1e-2}, augment=False, device="cpu",
                    train_limit=512, test_limit=256)
    return cfg.update(changes)


@pytest.mark.parametrize("method, options", [
    ("ste", {}), ("irnet", {}), ("fp", {}),
])
def test_resume_after_kill_is_bit_exact(tmp_path, method, options, full_and_killed):
    cfg = tiny_config(method=method, method_options=options, optim={"name": "sgdm", "lr": 0.05})
    full, _ = full_and_killed(cfg, tmp_path / "full", tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed")["epoch"] == 0
    assert not (tmp_path / "resumed" / "summary.json").exists()

    resumed = Trainer.resume(tmp_path / "resumed")
    assert resumed.start_epoch == 1
    resumed.run()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ma = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in ma] == [r["loss"] for r in mb]


def test_run_directory_contents(tmp_path):
    summary = Trainer(tiny_config(epochs=2), tmp_path / "run").run()
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["argv.json", "checkpoint.pt", "config.json", "metrics.jsonl", "summary.json"]
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"loss", "train_acc", "test_acc", "lr", "seconds", "cpu_seconds",
                            "test_loss"}
    assert all(r["cpu_seconds"] > 0 for r in rows)
    assert summary["final_test_acc"] == rows[-1]["test_acc"]
    argv = json.loads((tmp_path / "run" / "argv.json").read_text())
    assert argv["quantized_layers"] == ["layers.4", "layers.7"]  # hidden layers only


def test_learning_happens_and_checkpoint_reloads(tmp_path):
    trainer = Trainer(tiny_config(epochs=4, train_limit=0, test_limit=0), tmp_path / "run")
    summary = trainer.run()
    assert summary["final_test_acc"] > 80.0, summary  # 10 classes: chance is 10 %
    model, config, _ = load_model(tmp_path / "run")
    x = torch.randn(5, 64)
    trainer.model.eval()
    assert torch.equal(model(x), trainer.model(x))
    assert config.method == "ste"


def test_bad_input_leaves_no_run_directory(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        Trainer(tiny_config(method="nope"), tmp_path / "a")
    with pytest.raises(ValueError, match="unknown option 'bitz'"):
        Trainer(tiny_config(method_options={"bitz": 2}), tmp_path / "b")
    with pytest.raises(ValueError, match="looked"):
        Trainer(tiny_config(dataset="cifar10", data_root=str(tmp_path / "nowhere")), tmp_path / "c")
    for name in "abc":
        assert not (tmp_path / name).exists()


def test_init_from_a_checkpoint_of_another_method(tmp_path):
    """--init takes a bnnopt checkpoint of any method: weights carried, quantizer state free."""
    Trainer(tiny_config(epochs=1), tmp_path / "ste").run()
    trained, _, _ = load_model(tmp_path / "ste")
    for method in ("ste", "laq"):
        trainer = Trainer(tiny_config(method=method, init=str(tmp_path / "ste" / "checkpoint.pt")),
                          tmp_path / method)
        for key, value in trained.state_dict().items():
            assert torch.equal(trainer.model.state_dict()[key], value), (method, key)


def test_init_that_does_not_fit_is_refused_and_writes_nothing(tmp_path):
    Trainer(tiny_config(epochs=1), tmp_path / "src").run()
    ckpt = str(tmp_path / "src" / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"does not fit.*layers\.1\.weight \(32, 64\) vs \(16, 64\)"):
        Trainer(tiny_config(init=ckpt, model_options={"hidden": 16}), tmp_path / "a")
    # without the output BN the last Linear has a bias and there is no layers.11
    with pytest.raises(ValueError, match=r"does not fit.*missing keys \['layers\.10\.bias'\], "
                                         r"unexpected keys \['layers\.11\.weight'"):
        Trainer(tiny_config(init=ckpt, model_options={"hidden": 32, "out_bn": False}),
                tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_validation_split_rows_and_choices(tmp_path):
    """val_fraction: disjoint held-out images, evaluated each epoch; best_epoch is chosen on them."""
    from bnnopt.train.data_setup import load_run_loaders

    cfg = tiny_config(epochs=2, val_fraction=0.25)
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.data_info["val_images"] == 128 and trainer.data_info["train_images"] == 384
    summary = trainer.run()
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all({"val_loss", "val_acc"} <= set(r) for r in rows)
    chosen = max(rows, key=lambda r: r["val_acc"])
    assert summary["best_epoch"] == chosen["epoch"]
    assert summary["selected_test_acc"] == chosen["test_acc"]
    assert summary["final_val_acc"] == rows[-1]["val_acc"]
    # the held-out images are not among the training images (digits: compare pixels)
    train, val, _, _, _ = load_run_loaders("digits", batch_size=128, augment=False, seed=0,
                                        train_limit=512, val_fraction=0.25)
    tx = torch.cat([x for x, _ in train.eval()]).flatten(1)
    vx = torch.cat([x for x, _ in val.epoch(0)]).flatten(1)
    assert tx.shape[0] + vx.shape[0] == 512
    train_rows = {tuple(r.tolist()) for r in tx}
    assert sum(tuple(r.tolist()) in train_rows for r in vx) <= 2  # the digits set repeats a few images


def test_bad_val_fraction():
    with pytest.raises(ValueError, match="invalid val_fraction 1.0"):
        tiny_config(val_fraction=1.0).validate()


def test_early_stop_on_validation():
    from bnnopt.train.trainer import stop_early

    rows = [{"val_acc": a} for a in (50, 60, 59, 58)]
    assert not stop_early(rows[:3], 2)   # only one epoch without a new best
    assert stop_early(rows, 2)           # two epochs without beating 60
    assert not stop_early(rows, 0) and not stop_early(rows, 3)
    assert not stop_early([{"test_acc": 1}] * 5, 1)  # never on the test split
    with pytest.raises(ValueError, match="early_stop 2 needs a validation split"):
        tiny_config(early_stop=2).validate()
