"""``load_packed``: rebuild an inference module from a packed-bits file.

Steps (no training state, no quantizer latent weights involved):

1. read and verify the container (magic, version, length, SHA-256);
2. build the architecture: ``MODELS.get(name)(**options)`` from the manifest, or
   a caller-supplied ``skeleton`` (any model: the float model as built, or the
   binarized model itself); an ``nn.MultiheadAttention`` whose projections were
   quantized becomes a QMultiheadAttention with float projection layers, so the
   file's ``<attn>.in_proj`` / ``<attn>.out_proj`` layers have a place;
3. decode every quantized layer's weight once, Q = levels[g, codes] (a gather),
   and load Q, the biases and all stored float tensors (BatchNorm statistics
   included) into the skeleton; every key must match (the quantizer internals of
   a binarized skeleton's layers are the only keys allowed to be absent), so a file
   that does not fit the architecture is refused key by key;
4. swap each quantized layer for a PackedConv1d/2d/3d / PackedLinear /
   PackedEmbedding that runs ``act_quantizer`` (if any) and the layer's op on Q, as
   QLayer.forward does, and turn off torch's fused Transformer kernels where a
   packed layer lives (bnnopt.nn.convert.disable_fused_attention).

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
from bnnopt.export.layers import PACKED_LAYERS, decode_weight
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


def assemble_float_state(manifest: dict[str, Any], tensors: dict[str, torch.Tensor], layers: list, path: Any
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
    return assemble_float_state(manifest, tensors, decoded_layers(manifest, tensors, path), path)


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


def _attention_to_layers(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Swap each nn.MultiheadAttention whose projections the file stores as layers
    (``<attn>.in_proj.weight`` / ``<attn>.q_proj.weight``) for a float QMultiheadAttention."""
    from bnnopt.nn.attention import QMultiheadAttention

    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MultiheadAttention) and any(
                f"{name}.{p}.weight" in state for p in ("in_proj", "q_proj")):
            new = QMultiheadAttention.from_float(module, None, quantize=())
            _replace(model, module, new)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Any) -> None:
    from bnnopt.nn.layers import QLayer

    optional = tuple(f"{n}.{q}." for n, m in model.named_modules() if isinstance(m, QLayer)
                     for q in ("weight_quantizer", "act_quantizer"))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the {type(model).__name__} architecture: "
                         f"{' '.join(str(err).split())}") from None
    missing = [k for k in missing if not (optional and k.startswith(optional))]
    if missing or unexpected:
        what = (f"missing key(s) {missing[:3]}" if missing else "") + \
            ("; " if missing and unexpected else "") + (f"unexpected key(s) {unexpected[:3]}" if unexpected else "")
        raise ValueError(f"{path} does not fit the {type(model).__name__} architecture: {what}")


def load_packed(path: str | os.PathLike, skeleton: nn.Module | None = None) -> nn.Module:
    """Inference module (eval mode, no grad) whose outputs equal the exported
    fake-quantized model's outputs exactly on the same device and dtype.

    ``skeleton``: the architecture to fill, needed when the file does not name a
    registered model: the float model as built (``MyNet()``) or the binarized model
    itself. It is modified in place (weights overwritten, quantized layers swapped
    for packed ones) and returned; pass ``copy.deepcopy(model)`` to keep the original.
    Raises ExportFormatError (a ValueError) for foreign, corrupt, truncated or
    too-new files, and ValueError when the file does not fit the architecture.
    """
    from bnnopt.nn.convert import disable_fused_attention

    path = Path(path)
    manifest, tensors = read_packed(path)
    if skeleton is not None and not isinstance(skeleton, nn.Module):
        raise ValueError(f"invalid skeleton {type(skeleton).__name__}; valid: a torch.nn.Module")
    model = skeleton if skeleton is not None else _build_skeleton(manifest, path)
    dtype_name = manifest["model"].get("dtype", "float32")
    if dtype_name not in DTYPES:
        raise ExportFormatError(f"{path} is corrupt (unknown model dtype {dtype_name!r})")
    model = model.to(DTYPES[dtype_name])
    layers = decoded_layers(manifest, tensors, path)

    state = assemble_float_state(manifest, tensors, layers, path)
    _attention_to_layers(model, state)
    _load_state(model, state, path)

    modules = dict(model.named_modules(remove_duplicate=False))
    expected_types = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d, "linear": nn.Linear,
                      "embedding": nn.Embedding}
    for entry, weight, bias in layers:
        old = modules.get(entry["name"])
        kind = entry.get("type")
        expected = expected_types.get(kind)
        if expected is None:
            raise ExportFormatError(f"{path}: unknown layer type {kind!r}; valid: {', '.join(expected_types)}")
        if not isinstance(old, expected):
            raise ValueError(f"{path}: layer {entry['name']!r} is a {kind} in the file but "  # noqa: TRY004
                             f"{type(old).__name__} in the architecture")
        new = PACKED_LAYERS[kind](weight, bias, _act_quantizer(entry.get("act_quantizer")), entry)
        _replace(model, old, new)
    disable_fused_attention(model)

    model.eval()
    model.requires_grad_(False)
    model.bnnopt_meta = dict(manifest.get("meta") or {})
    return model
