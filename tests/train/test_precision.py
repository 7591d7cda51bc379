"""--precision, --channels-last and their refusals, on the CPU (autocast works there)."""
import pytest
import torch

from bnnopt.train import RunConfig, Trainer
from bnnopt.train.distributed import SINGLE, check_global_batch, shard_bounds
from bnnopt.train.precision import AutocastForward, check_precision


def tiny(**changes) -> RunConfig:
    cfg = RunConfig(model="mlp", dataset="digits", method="ste", epochs=1, batch_size=64,
                    model_options={"hidden": 32}, optim={"name": "adam", "lr": 1e-2},
                    augment=False, device="cpu", train_limit=256, test_limit=128)
    return cfg.update(changes)


@pytest.mark.parametrize("method", ["ste", "blaq", "fsg"])
def test_bf16_autocasts_the_task_network_only(tmp_path, method):
    trainer = Trainer(tiny(method=method, precision="bf16"), tmp_path / "r", dist=SINGLE)
    assert isinstance(trainer.train_model, AutocastForward)
    seen = []
    hook = trainer.model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    row = trainer.train_epoch(0)
    hook.remove()
    assert torch.bfloat16 in seen  # the network ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # ... its weights did not
    meta = getattr(trainer.method, "meta_modules", None)
    if meta is not None:
        assert all(p.dtype == torch.float32 for p in meta.parameters())
    assert row["loss"] == row["loss"] and 0 <= row["test_acc"] <= 100


def test_fp16_uses_a_grad_scaler_for_estimators_and_is_refused_elsewhere(tmp_path):
    trainer = Trainer(tiny(precision="fp16"), tmp_path / "r", dist=SINGLE)
    assert trainer.method.scaler is not None
    assert "scaler" in trainer.method.state_dict()
    for family, method in (("learned-gradient", "fsg"), ("loss-aware", "laq")):
        with pytest.raises(ValueError, match=f"precision 'fp16' .*{family}.* valid for it: bf16"):
            check_precision("fp16", family, method)


def test_fp64_runs_model_and_batches_in_double(tmp_path):
    trainer = Trainer(tiny(precision="fp64"), tmp_path / "r", dist=SINGLE)
    x, _ = next(iter(trainer.train_loader.epoch(0)))
    assert x.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in trainer.model.parameters())
    trainer.train_epoch(0)


def test_channels_last_gives_the_same_result(tmp_path):
    def cfg(**changes):
        return RunConfig(model="resnet20", dataset="digits", method="ste", epochs=1, batch_size=32,
                         optim={"name": "sgd", "lr": 0.05}, augment=False, device="cpu",
                         train_limit=64, test_limit=64).update(changes)

    a = Trainer(cfg(), tmp_path / "a", dist=SINGLE)
    b = Trainer(cfg(channels_last=True), tmp_path / "b", dist=SINGLE)
    conv = next(m for m in b.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    ra, rb = a.train_epoch(0), b.train_epoch(0)
    assert ra["test_acc"] == rb["test_acc"]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-5), k


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="invalid precision 'fp8'; valid: fp32, bf16, fp16, fp64"):
        tiny(precision="fp8").validate()


def test_global_batch_must_divide_by_the_processes():
    assert check_global_batch(128, 4) == 32
    with pytest.raises(ValueError, match=r"--batch-size 130: .* divide by the 4 processes \(e.g. 128 or 132\)"):
        check_global_batch(130, 4)


@pytest.mark.parametrize("n, world", [(16, 2), (13, 4), (3, 2), (100, 3)])
def test_shards_cover_the_batch_in_order(n, world):
    parts = [shard_bounds(n, r, world) for r in range(world)]
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1


def test_cuda_devices_under_torchrun(monkeypatch):
    from bnnopt.train.trainer import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)
    assert resolve_device("auto", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # one process: as asked
    with pytest.raises(ValueError, match="'cuda:1' under torchrun: each process takes cuda:LOCAL_RANK"):
        resolve_device("cuda:1", local_rank=0)
