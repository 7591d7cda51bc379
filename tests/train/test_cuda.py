"""On a CUDA GPU (skipped without one; bench/gpu_check.sh runs them): every family
trains there with the data, model, meta-nets and loss-aware state on the device,
bf16 autocast and channels-last work, SyncBatchNorm is torch's, and resume is exact."""
import pytest
import torch

from bnnopt.train import RunConfig, Trainer
from bnnopt.train.distributed import SINGLE

pytestmark = pytest.mark.cuda


def tiny(**changes) -> RunConfig:
    cfg = RunConfig(model="mlp", dataset="digits", method="ste", epochs=2, batch_size=64,
                    model_options={"hidden": 64}, optim={"name": "adam", "lr": 1e-2},
                    augment=False, device="cuda", train_limit=512, test_limit=256)
    return cfg.update(changes)


@pytest.mark.parametrize("method", ["ste", "irnet", "reste", "laq", "blaq", "fcgrad", "lstmfc",
                                    "fsg"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_family_trains_on_the_gpu(tmp_path, method, precision):
    trainer = Trainer(tiny(method=method, precision=precision), tmp_path / "r", dist=SINGLE)
    assert trainer.device.type == "cuda"
    assert all(p.is_cuda for p in trainer.model.parameters())
    x, _ = next(iter(trainer.train_loader.epoch(0)))
    assert x.is_cuda
    meta = getattr(trainer.method, "meta_modules", None)
    if meta is not None:
        assert all(p.is_cuda and p.dtype == torch.float32 for p in meta.parameters())
    summary = trainer.run()
    assert summary["final_test_acc"] > 30, summary  # 10 classes: well above chance


def test_resume_on_the_gpu_is_bit_exact(tmp_path, full_and_killed):
    cfg = tiny(method="fsg")
    full, _ = full_and_killed(cfg, tmp_path / "full", tmp_path / "resumed")
    resumed = Trainer.resume(tmp_path / "resumed")
    resumed.run()
    for (key, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), key


def test_channels_last_conv_model_on_the_gpu(tmp_path):
    cfg = RunConfig(model="resnet20", dataset="digits", method="ste", epochs=1, batch_size=64,
                    optim={"name": "sgdm", "lr": 0.05}, augment=False, device="cuda",
                    train_limit=256, test_limit=128, channels_last=True, precision="bf16")
    trainer = Trainer(cfg, tmp_path / "r", dist=SINGLE)
    trainer.run()


def test_sync_batchnorm_is_torchs_on_cuda():
    from bnnopt.nn.sync_batchnorm import convert_sync_batchnorm

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).cuda()
    assert convert_sync_batchnorm(model, torch.device("cuda")) == 1
    assert isinstance(model[1], torch.nn.SyncBatchNorm)
