"""Checkpoints: everything needed to evaluate, resume or export a run.

A checkpoint is a ``torch.save``'d dict::

    {"format": "bnnopt-checkpoint", "version": 2, "sha256": hex digest,
     "config": RunConfig.to_dict(),          # how to rebuild model + method
     "data": {"num_classes", "in_channels", "image_size", "mean", "std"},
     "epoch": last finished epoch (0-based),
     "model": model.state_dict(),            # prepared (quantized) model
     "method": method.state_dict(),          # optimizers, meta-nets, buffers
     "metrics": [per-epoch rows], "rng": torch RNG state,
     "cuda_rng": [per-device CUDA RNG states] or None, "extra": {...}}

Safety and integrity: checkpoints hold only tensors, numbers, strings, lists,
tuples and dicts, and are always read with ``torch.load(weights_only=True)``,
which cannot run code from the file (a ``weights_only=False`` load of a
downloaded file can). ``sha256`` is :func:`payload_digest` of every other entry
(keys, values, tensor dtypes, shapes and bytes); :func:`load_checkpoint`
recomputes it and refuses a file whose content changed (e.g. flipped bits).
Version-1 checkpoints (no digest) still load, unverified.

Rebuilding is ``model = MODELS[config.model](...)``; ``METHODS[config.method]
(**options).prepare(model, policy)``; ``model.load_state_dict(...)``.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnnopt.train.config import RunConfig
from bnnopt.runs.io import save_torch

FORMAT = "bnnopt-checkpoint"
VERSION = 2
CHECKPOINT_NAME = "checkpoint.pt"
DIGEST_KEY = "sha256"


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 over a canonical walk of ``payload`` (all keys except ``sha256``).

    Dict keys are visited in sorted order of their repr; a tensor contributes its
    dtype, shape and raw bytes (CPU, contiguous); scalars their type and repr.
    The digest is therefore the same before ``torch.save`` and after ``torch.load``.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != DIGEST_KEY})
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key in sorted(obj, key=repr):
            h.update(f"K{key!r}:".encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, float) and math.isnan(obj):
        h.update(b"Ffloat:nan;")
    else:
        h.update(f"S{type(obj).__name__}:{obj!r};".encode())


def checkpoint_path(path: str | Path) -> Path:
    """Accept a run directory or a checkpoint file; return the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    return path


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with format, version and its SHA-256 (atomically)."""
    ckpt = {"format": FORMAT, "version": VERSION, **payload}
    ckpt[DIGEST_KEY] = payload_digest(ckpt)
    save_torch(path, ckpt)


def read_torch_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ValueError if unreadable.

    ``weights_only=True`` restricts unpickling to tensors and plain containers, so
    a malicious file cannot execute code.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise ValueError(f"{path} is not a checkpoint ({_load_failure(err)})") from None


def _load_failure(err: Exception) -> str:
    """A short reason for a failed weights_only load (torch's own text is paragraphs long)."""
    import re

    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds {found.group(1)}, which a weights-only load refuses to run"
    if "Weights only load failed" in text:
        return "not a torch file of tensors and plain containers"
    first = text.strip().splitlines()[0][:120] if text.strip() else ""
    return f"cannot be read as a torch file: {type(err).__name__}{': ' + first if first else ''}"


def looks_like_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def verify_checkpoint(ckpt: Any, path: str | Path) -> dict[str, Any]:
    """Check format, version and SHA-256 of a loaded checkpoint object."""
    if not looks_like_checkpoint(ckpt):
        raise ValueError(f"{path} is not a bnnopt checkpoint (no 'format': {FORMAT!r})")
    version = ckpt.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"checkpoint {path} has version {version!r}, newer than this reader's "
            f"{VERSION}; upgrade bnnopt"
        )
    if version >= 2 or DIGEST_KEY in ckpt:
        stored = ckpt.get(DIGEST_KEY)
        if not isinstance(stored, str):
            raise ValueError(f"checkpoint {path} has no SHA-256 digest; the file is damaged")
        actual = payload_digest(ckpt)
        if actual != stored:
            raise ValueError(f"checkpoint {path} is corrupt: SHA-256 of its content is "
                             f"{actual[:16]}..., the file records {stored[:16]}...")
    return ckpt


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load (weights_only) and verify a bnnopt checkpoint (a run directory or a file)."""
    path = checkpoint_path(path)
    return verify_checkpoint(read_torch_file(path), path)


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a run directory or a file in bnnopt checkpoint format
    (a damaged checkpoint counts: loading it then gives the precise error)."""
    try:
        return looks_like_checkpoint(read_torch_file(checkpoint_path(path)))
    except ValueError:
        return False


def model_options(config: RunConfig, data_info: dict[str, Any]) -> dict[str, Any]:
    """The registered model's keyword arguments for ``config`` on data ``data_info``:
    the config's model_options plus num_classes, in_channels and input_size from the
    data (every registered model accepts these three)."""
    options = dict(config.model_options)
    options.setdefault("num_classes", data_info["num_classes"])
    if "in_channels" in data_info:
        options.setdefault("in_channels", data_info["in_channels"])
        options.setdefault("input_size", data_info["image_size"][0])
    return options


def build_model(config: RunConfig, data_info: dict[str, Any]) -> tuple[nn.Module, Any]:
    """Instantiate the (not yet quantized) model and the method for ``config``."""
    from bnnopt.registry import METHODS, MODELS

    model = MODELS.get(config.model)(**model_options(config, data_info))
    method = METHODS.get(config.method)(**config.method_options)
    return model, method


def load_model(path: str | Path) -> tuple[nn.Module, RunConfig, dict[str, Any]]:
    """Rebuild the prepared model of a checkpoint with its trained weights (eval mode).

    Returns ``(model, config, data_info)``.
    """
    ckpt = load_checkpoint(path)
    config = RunConfig.from_dict(ckpt["config"])
    model, method = build_model(config, ckpt["data"])
    method.prepare(model, dict(config.policy))
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()
    return model, config, ckpt["data"]
