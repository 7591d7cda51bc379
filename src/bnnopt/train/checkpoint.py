"""Checkpoints: everything needed to evaluate, resume or export a run.

A checkpoint is a ``torch.save``'d dict::

    {"format": "bnnopt-checkpoint", "version": 1,
     "config": RunConfig.to_dict(),          # how to rebuild model + method
     "data": {"num_classes", "in_channels", "image_size", "mean", "std"},
     "epoch": last finished epoch (0-based),
     "model": model.state_dict(),            # prepared (quantized) model
     "method": method.state_dict(),          # optimizers, meta-nets, buffers
     "metrics": [per-epoch rows], "rng": torch RNG state, "extra": {...}}

Rebuilding is ``model = MODELS[config.model](...)``; ``METHODS[config.method]
(**options).prepare(model, policy)``; ``model.load_state_dict(...)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnnopt.train.config import RunConfig
from bnnopt.train.io import save_torch

FORMAT = "bnnopt-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(path: str | Path) -> Path:
    """Accept a run directory or a checkpoint file; return the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    return path


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    save_torch(path, {"format": FORMAT, "version": VERSION, **payload})


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a bnnopt checkpoint (a run directory or a file)."""
    path = checkpoint_path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bnnopt checkpoint (no 'format': {FORMAT!r})")
    if ckpt.get("version", 0) > VERSION:
        raise ValueError(
            f"checkpoint {path} has version {ckpt['version']}, newer than this reader's "
            f"{VERSION}; upgrade bnnopt"
        )
    return ckpt


def is_checkpoint(path: str | Path) -> bool:
    try:
        load_checkpoint(path)
    except ValueError:
        return False
    return True


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
