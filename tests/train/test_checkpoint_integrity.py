"""Checkpoints: SHA-256 verified on load, read with weights_only=True, CUDA RNG slot."""
import io
import pickle

import pytest
import torch

from bnnopt.train import RunConfig, Trainer
from bnnopt.train.checkpoint import (VERSION, load_checkpoint, payload_digest,
                                     read_torch_file)


def tiny(tmp_path, method="ste", **changes):
    cfg = RunConfig(model="mlp", dataset="digits", method=method, epochs=1, batch_size=128,
                    model_options={"hidden": 16}, optim={"name": "adam", "lr": 1e-2},
                    augment=False, device="cpu", train_limit=256, test_limit=64).update(changes)
    Trainer(cfg, tmp_path / "run").run()
    return tmp_path / "run"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("ckpt"))


def test_checkpoint_records_its_digest(run):
    ckpt = load_checkpoint(run)
    assert ckpt["version"] == VERSION and len(ckpt["sha256"]) == 64
    assert payload_digest(ckpt) == ckpt["sha256"]
    assert "cuda_rng" in ckpt  # None without CUDA, the per-device states with it


def test_flipped_weight_bits_are_detected(run, tmp_path):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.dtype == torch.float32 and v.numel() > 200)
    w = ckpt["model"][name].view(-1).view(torch.int32)
    w[:200] ^= 1 << 30  # 200 flipped exponent bits, file otherwise well-formed
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"is corrupt: SHA-256 of its content"):
        load_checkpoint(tmp_path / "bad.pt")
    from bnnopt.cli.evaluate import evaluate_path

    with pytest.raises(ValueError, match="is corrupt"):
        evaluate_path(tmp_path / "bad.pt")


def test_missing_digest_in_a_v2_checkpoint_is_refused(run, tmp_path):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    del ckpt["sha256"]
    torch.save(ckpt, tmp_path / "nodigest.pt")
    with pytest.raises(ValueError, match="has no SHA-256 digest"):
        load_checkpoint(tmp_path / "nodigest.pt")


def test_version_1_checkpoint_without_digest_still_loads(run, tmp_path):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    del ckpt["sha256"], ckpt["cuda_rng"]
    ckpt["version"] = 1
    torch.save(ckpt, tmp_path / "v1.pt")
    assert load_checkpoint(tmp_path / "v1.pt")["epoch"] == 0


class Boom:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_never_unpickles_code(tmp_path, capsys):
    buf = io.BytesIO()
    torch.save({"format": "bnnopt-checkpoint", "x": Boom()}, buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="is not a checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert "code ran" not in capsys.readouterr().out
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="is not a checkpoint"):
        read_torch_file(tmp_path / "evil.pkl")


def _methods():
    from bnnopt.registry import METHODS

    return list(METHODS.names())


@pytest.mark.parametrize("method", _methods())
def test_every_method_checkpoint_loads_weights_only(tmp_path, method):
    """Every registered method's checkpoint is plain tensors/containers: weights_only works."""
    run = tiny(tmp_path, method=method, train_limit=128, test_limit=32)
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert payload_digest(ckpt) == ckpt["sha256"]


def test_cuda_rng_state_is_saved_and_restored(tmp_path, monkeypatch):
    """Without a GPU: fake a one-device CUDA RNG and check the round trip."""
    state = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [state.clone()])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: restored.append(s))
    run = tiny(tmp_path, epochs=2, device="cpu")
    assert torch.equal(load_checkpoint(run)["cuda_rng"][0], state)
    Trainer.resume(run, epochs=3)
    assert len(restored) == 1 and torch.equal(restored[0][0], state)
