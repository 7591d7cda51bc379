"""``load_packed``: rebuild an inference module from a packed-bits file.

Steps (no training state, no quantizer latent weights involved):

1. read and verify the container (magic, version, length, SHA-256);
2. build the float architecture: ``MODELS.get(name)(**options)`` from the
   manifest, or a caller-supplied ``skeleton`` for unregistered models;
3. decode every quantized layer's weight once, Q = levels[g, codes] (a gather),
   and load Q, the biases and all stored float tensors (BatchNorm statistics
   included) into the skeleton with ``load_state_dict(strict=True)``, so a file
   that does not fit the architecture is refused key by key;
4. swap each quantized layer for a PackedConv2d / PackedLinear that runs
   ``act_quantizer`` (if any) and F.conv2d / F.linear on Q, as QLayer.forward does.

The result is in eval mode with gradients off; its ``bnnopt_meta`` attribute
holds the exporter's meta (run config, dataset, normalisation, ...).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnnopt.export.container import DTYPES, MAGIC, ExportFormatError, read_container
from bnnopt.export.layers import PackedConv2d, PackedLinear, decode_weight
from bnnopt.export.writer import PACKED_FORMAT


def is_packed(path: str | os.PathLike) -> bool:
    """True if ``path`` is a file that starts with the packed-model magic bytes
    (cheap; :func:`load_packed` then verifies everything else)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except (IsADirectoryError, FileNotFoundError, PermissionError):
        return False


def read_packed(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(manifest, tensors) of a verified packed file; ExportFormatError otherwise."""
    manifest, tensors = read_container(path)
    if manifest.get("format") != PACKED_FORMAT:
        raise ExportFormatError(f"{path} is a bnnopt container but not a packed model "
                                f"(format {manifest.get('format')!r}, expected {PACKED_FORMAT!r})")
    for key in ("model", "meta", "qlayers"):
        if key not in manifest:
            raise ExportFormatError(f"{path} is corrupt (manifest has no {key!r})")
    return manifest, tensors


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The verified manifest of a packed file (model, meta, layers; see docs/export_format.md)."""
    return read_packed(path)[0]


def _tensor(tensors: dict[str, torch.Tensor], key: str, path: Any) -> torch.Tensor:
    if key not in tensors:
        raise ExportFormatError(f"{path} is corrupt (manifest names a missing tensor {key!r})")
    return tensors[key]


def decoded_layers(manifest: dict[str, Any], tensors: dict[str, torch.Tensor], path: Any = "file"
                   ) -> list[tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]]:
    """[(layer entry, decoded weight Q, bias or None)] for every quantized layer."""
    out = []
    for entry in manifest["qlayers"]:
        try:
            weight = decode_weight(_tensor(tensors, entry["codes"], path), int(entry["bits"]),
                                   [int(s) for s in entry["weight_shape"]],
                                   _tensor(tensors, entry["levels"], path), entry["group_dim"])
        except (KeyError, TypeError) as err:
            raise ExportFormatError(f"{path} is corrupt (layer entry lacks {err})") from None
        except ValueError as err:
            raise ExportFormatError(f"{path}: layer {entry.get('name')!r} cannot be decoded: {err}") from None
        bias = _tensor(tensors, entry["bias"], path) if entry.get("bias") else None
        out.append((entry, weight, bias))
    return out


def _float_state(manifest: dict[str, Any], tensors: dict[str, torch.Tensor], layers: list, path: Any
                 ) -> dict[str, torch.Tensor]:
    state = {}
    for entry, weight, bias in layers:
        for name in [entry["name"], *entry.get("aliases", [])]:
            state[f"{name}.weight"] = weight
            if bias is not None:
                state[f"{name}.bias"] = bias
    for key, value in tensors.items():
        if key.startswith("state/"):
            state[key[len("state/"):]] = value
    return state


def float_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of the equivalent float model: quantized weights decoded to
    their float values, every other tensor as stored."""
    manifest, tensors = read_packed(path)
    return _float_state(manifest, tensors, decoded_layers(manifest, tensors, path), path)


def _build_skeleton(manifest: dict[str, Any], path: Any) -> nn.Module:
    info = manifest["model"]
    name = info.get("name")
    if not name:
        raise ValueError(f"{path} does not name a registered model (exported from a {info.get('class')}); "
                         "pass the float architecture: load_packed(path, skeleton=module)")
    from bnnopt.registry import MODELS

    return MODELS.get(name)(**(info.get("options") or {}))


def _act_quantizer(spec: dict[str, Any] | None) -> nn.Module | None:
    if spec is None:
        return None
    from bnnopt.quant import make_act_quantizer

    return make_act_quantizer(spec["name"], int(spec["bits"]), estimator=spec.get("estimator") or "ste")


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``old`` is a child (keeps shared modules shared)."""
    for parent in list(model.modules()):
        for key, sub in list(parent._modules.items()):
            if sub is old:
                setattr(parent, key, new)


def load_packed(path: str | os.PathLike, skeleton: nn.Module | None = None) -> nn.Module:
    """Inference module (eval mode, no grad) whose outputs equal the exported
    fake-quantized model's outputs exactly on the same device and dtype.

    ``skeleton``: the *float* (un-quantized) architecture, needed only when the
    file does not name a registered model; its weights are overwritten.
    Raises ExportFormatError (a ValueError) for foreign, corrupt, truncated or
    too-new files, and ValueError when the file does not fit the architecture.
    """
    path = Path(path)
    manifest, tensors = read_packed(path)
    model = skeleton if skeleton is not None else _build_skeleton(manifest, path)
    dtype_name = manifest["model"].get("dtype", "float32")
    if dtype_name not in DTYPES:
        raise ExportFormatError(f"{path} is corrupt (unknown model dtype {dtype_name!r})")
    model = model.to(DTYPES[dtype_name])
    layers = decoded_layers(manifest, tensors, path)

    state = _float_state(manifest, tensors, layers, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the {type(model).__name__} architecture: "
                         f"{' '.join(str(err).split())}") from None

    modules = dict(model.named_modules(remove_duplicate=False))
    for entry, weight, bias in layers:
        old = modules.get(entry["name"])
        kind = entry.get("type")
        expected = {"conv2d": nn.Conv2d, "linear": nn.Linear}.get(kind)
        if expected is None:
            raise ExportFormatError(f"{path}: unknown layer type {kind!r}; valid: conv2d, linear")
        if not isinstance(old, expected):
            raise ValueError(f"{path}: layer {entry['name']!r} is a {kind} in the file but "  # noqa: TRY004
                             f"{type(old).__name__} in the architecture")
        cls = PackedConv2d if kind == "conv2d" else PackedLinear
        new = cls(weight, bias, _act_quantizer(entry.get("act_quantizer")), entry)
        _replace(model, old, new)

    model.eval()
    model.requires_grad_(False)
    model.bnnopt_meta = dict(manifest.get("meta") or {})
    return model
