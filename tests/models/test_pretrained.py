"""Strict loading of the shared FP checkpoints, their accuracy, and load_pretrained's unwrapping."""
from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from bnnopt.models import (
    CIFAR10_MEAN, CIFAR10_STD, create_model, extract_state_dict, lenet5, load_pretrained, resnet20,
)


@pytest.mark.parametrize("depth", [20, 32, 44])
def test_shared_checkpoint_loads_strict(shared_dir, depth):
    path = shared_dir / "pretrained" / f"resnet{depth}-cifar10-fp.pth"
    model = create_model(f"resnet{depth}")
    assert load_pretrained(model, path) is model
    raw = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert set(own) == set(raw)
    assert all(torch.equal(own[k], raw[k]) for k in own)
    # the plain torch call agrees (no key rewriting needed for these files)
    create_model(f"resnet{depth}").load_state_dict(raw, strict=True)


def _cifar_test_images(shared_dir, n):
    with open(shared_dir / "data" / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = np.asarray(batch[b"data"][:n], dtype=np.uint8).reshape(-1, 3, 32, 32)  # channel-major rows
    x = torch.from_numpy(x).float().div_(255)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor(batch[b"labels"][:n])


def test_resnet20_fp_accuracy_on_200_test_images(shared_dir):
    """The official checkpoint scores 91.9 % on the 1,017-image subset (92.0 % on the first 200)."""
    x, y = _cifar_test_images(shared_dir, 200)
    model = load_pretrained(resnet20(), shared_dir / "pretrained" / "resnet20-cifar10-fp.pth").eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.85


def _small_state():
    torch.manual_seed(0)
    return lenet5(channels=(2, 3), hidden=(4,)).state_dict()


@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: {"state_dict": s, "epoch": 3, "best_acc": 91.0},
    lambda s: {"model": {"state_dict": s}, "optimizer": {}},
    lambda s: OrderedDict(("module." + k, v) for k, v in s.items()),
    lambda s: {"net": OrderedDict(("module." + k, v) for k, v in s.items())},
])
def test_unwraps_containers_and_prefixes(wrap, tmp_path):
    state = _small_state()
    for source in (wrap(state), tmp_path / "ckpt.pth"):
        if not isinstance(source, dict):
            torch.save(wrap(state), source)
        model = lenet5(channels=(2, 3), hidden=(4,))
        load_pretrained(model, source)
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_mismatch_errors_name_keys_and_shapes():
    state = dict(_small_state())
    missing = {k: v for k, v in state.items() if k != "classifier.1.weight"}
    with pytest.raises(ValueError, match=r"missing keys: classifier\.1\.weight"):
        load_pretrained(lenet5(channels=(2, 3), hidden=(4,)), missing)
    extra = {**state, "bogus.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected keys: bogus\.weight"):
        load_pretrained(lenet5(channels=(2, 3), hidden=(4,)), extra)
    with pytest.raises(ValueError, match=r"shape mismatches: features\.0\.weight: checkpoint \(2, 1, 5, 5\)"):
        load_pretrained(lenet5(channels=(5, 3), hidden=(4,)), state)


def test_wrong_depth_checkpoint_is_refused(shared_dir):
    with pytest.raises(ValueError, match="unexpected keys: layer1.3"):
        load_pretrained(resnet20(), shared_dir / "pretrained" / "resnet32-cifar10-fp.pth")


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_pretrained(resnet20(), tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_pretrained(resnet20(), junk)
    with pytest.raises(ValueError, match="no state dict found"):
        extract_state_dict({"epoch": 3, "optimizer": {"lr": 0.1}})
    with pytest.raises(ValueError, match="expected a state dict"):
        extract_state_dict([1, 2])
