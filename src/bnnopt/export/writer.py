"""``export_packed``: write a (partly) quantized model as a packed-bits file.

For every quantized layer (bnnopt.nn.QLayer) the file stores

    codes    k-bit integer code per weight, packed (bnnopt.export.bits)
    levels   [G, 2^k] table of the float value of each code, G = 1 (one table
             for the tensor) or C_out (one row per output channel)
    bias     as a float tensor (if any)

such that levels[g(i), codes[i]] is, bit for bit, the value Q(W~)[i] that the
layer's forward pass uses (QLayer.quantized_weight()). The codes are the
quantizer's own ``encode`` codes; for a quantizer without ``encode`` (or whose
codes do not determine its output) they are derived from the distinct output
values instead. The table is checked bitwise against Q(W~) before anything is
written, so the loaded weights cannot differ from the trained ones.

Everything else in the state dict (full-precision layers, BatchNorm weights and
running statistics, num_batches_tracked) is stored unchanged. The manifest
records how to rebuild the architecture: the registered model name + options
(from ``meta``), and per quantized layer its type, geometry, bits and
activation quantizer; see docs/export_format.md.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import torch
from torch import nn

from bnnopt.export.bits import pack_codes
from bnnopt.export.container import write_container

PACKED_FORMAT = "bnnopt-packed"
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equality of the raw bits (distinguishes -0.0 from 0.0, compares NaN payloads)."""
    view = _INT_VIEW[a.element_size()]
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.contiguous().view(view), b.contiguous().view(view)))


def level_table(q: torch.Tensor, codes: torch.Tensor, bits: int) -> tuple[torch.Tensor, int | None] | None:
    """Table T with T[g, codes] == q bitwise: per tensor (G = 1) if possible, else per
    output channel (dim 0). Returns (T [G, 2^bits], group_dim) or None if neither
    works. Entries for codes that never occur are 0 (never read)."""
    idx = codes.reshape(-1).long()
    flat = q.reshape(-1)
    table = torch.zeros(1, 2**bits, dtype=q.dtype)
    table[0, idx] = flat
    if _bitwise_equal(table[0][idx], flat):
        return table, None
    if q.dim() < 2:
        return None
    rows = q.shape[0]
    c2 = codes.reshape(rows, -1).long()
    q2 = q.reshape(rows, -1)
    table = torch.zeros(rows, 2**bits, dtype=q.dtype)
    table.scatter_(1, c2, q2)
    if _bitwise_equal(table.gather(1, c2), q2):
        return table, 0
    return None


def codes_from_values(q: torch.Tensor, bits: int) -> torch.Tensor | None:
    """Codes = rank of each value among the distinct values of its tensor (or of its
    output channel), if at most 2^bits distinct values occur; else None."""
    values, inverse = torch.unique(q.reshape(-1), return_inverse=True)
    if values.numel() <= 2**bits:
        return inverse.reshape(q.shape)
    if q.dim() < 2:
        return None
    out = torch.empty(q.shape[0], q[0].numel(), dtype=torch.int64)
    for row in range(q.shape[0]):
        values, inverse = torch.unique(q[row].reshape(-1), return_inverse=True)
        if values.numel() > 2**bits:
            return None
        out[row] = inverse
    return out.reshape(q.shape)


def _quantizer_info(quantizer: nn.Module) -> dict[str, Any]:
    est = getattr(quantizer, "estimator", None)
    return {
        "name": getattr(quantizer, "name", None),
        "bits": int(getattr(quantizer, "bits", 0)),
        "estimator": getattr(est, "name", None),
        "repr": quantizer.extra_repr(),
    }


def _act_info(act: nn.Module | None, layer_name: str) -> dict[str, Any] | None:
    if act is None:
        return None
    from bnnopt.quant import ACT_QUANTIZERS

    name = getattr(act, "name", None)
    if name not in ACT_QUANTIZERS or not isinstance(act, ACT_QUANTIZERS.get(name)):
        raise ValueError(f"layer {layer_name!r}: activation quantizer {type(act).__name__} is not a registered "
                         f"activation quantizer; valid: {', '.join(ACT_QUANTIZERS.names())}")
    est = getattr(act, "estimator", None)
    return {"name": name, "bits": int(act.bits), "estimator": getattr(est, "name", "ste")}


def _geometry(layer: nn.Module) -> dict[str, Any]:
    for dims, cls in ((1, nn.Conv1d), (2, nn.Conv2d), (3, nn.Conv3d)):
        if isinstance(layer, cls):
            pad = layer.padding
            return {"type": f"conv{dims}d", "in_channels": layer.in_channels,
                    "out_channels": layer.out_channels, "kernel_size": list(layer.kernel_size),
                    "stride": list(layer.stride), "padding": pad if isinstance(pad, str) else list(pad),
                    "dilation": list(layer.dilation), "groups": layer.groups,
                    "padding_mode": layer.padding_mode}
    if isinstance(layer, nn.Linear):
        return {"type": "linear", "in_features": layer.in_features, "out_features": layer.out_features}
    if isinstance(layer, nn.Embedding):
        return {"type": "embedding", "num_embeddings": layer.num_embeddings,
                "embedding_dim": layer.embedding_dim, "padding_idx": layer.padding_idx}
    raise ValueError(f"cannot export quantized layer of type {type(layer).__name__}; "
                     "valid: QConv1d, QConv2d, QConv3d, QLinear, QEmbedding")


def _encoded_codes(layer: nn.Module) -> torch.Tensor | None:
    """The quantizer's own integer codes of W~ (None if it has no ``encode``)."""
    try:
        enc = layer.encode()
    except (AttributeError, NotImplementedError):
        return None
    codes = enc.get("codes") if isinstance(enc, dict) else None
    return codes.detach().cpu() if isinstance(codes, torch.Tensor) else None


@torch.no_grad()
def _pack_layer(name: str, layer: nn.Module, blobs: dict[str, Any]) -> dict[str, Any]:
    q = layer.quantized_weight().detach().cpu()
    bits = int(layer.bits)
    entry: dict[str, Any] = {"name": name, **_geometry(layer)}
    found, source = None, None
    codes = _encoded_codes(layer)
    if codes is not None and codes.shape == q.shape and not codes.is_floating_point() and \
            (not codes.numel() or (int(codes.min()) >= 0 and int(codes.max()) < 2**bits)):
        found, source = level_table(q, codes, bits), "encode"
    if found is None:
        codes = codes_from_values(q, bits)
        if codes is not None:
            found, source = level_table(q, codes, bits), "values"
    if found is None:
        raise ValueError(f"layer {name!r}: its quantized weight cannot be written as {bits}-bit codes plus a level "
                         f"table per tensor or per output channel (more than 2^{bits} distinct values?)")
    table, group_dim = found
    prefix = f"q/{name}/"
    blobs[prefix + "codes"] = pack_codes(codes, bits)
    blobs[prefix + "levels"] = table
    bias = getattr(layer, "bias", None)
    if bias is not None:
        blobs[prefix + "bias"] = bias.detach().cpu()
    entry.update({
        "weight_shape": list(q.shape), "dtype": str(q.dtype).replace("torch.", ""), "bits": bits,
        "count": q.numel(), "codes": prefix + "codes", "levels": prefix + "levels",
        "group_dim": group_dim, "codes_from": source,
        "bias": prefix + "bias" if bias is not None else None,
        "quantizer": _quantizer_info(layer.weight_quantizer),
        "act_quantizer": _act_info(layer.act_quantizer, name),
    })
    return entry


def _json_checked(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be JSON-serialisable: {err}") from None


def export_packed(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` (any nn.Module with bnnopt QLayers) to ``path`` atomically.

    ``meta`` (JSON-serialisable) may hold ``"model"`` (registered model name) and
    ``"model_options"`` (its constructor kwargs) so that :func:`load_packed` can
    rebuild the architecture on its own; everything else in it (e.g. the run
    config, dataset, normalisation) is stored verbatim and returned as the loaded
    module's ``bnnopt_meta``. Returns ``{"path", "file_bytes", "quantized_layers",
    "float32_bytes", "ratio"}`` (ratio = float32_bytes / file_bytes).
    """
    from bnnopt import __version__
    from bnnopt.nn import QLayer

    if not isinstance(model, nn.Module):
        raise ValueError(f"export_packed needs an nn.Module, got {type(model).__name__}")  # noqa: TRY004
    meta = _json_checked(dict(meta or {}), "meta")
    name = meta.pop("model", None)
    options = meta.pop("model_options", {}) or {}
    if name is not None and not isinstance(name, str):
        raise ValueError(f"invalid meta['model'] {name!r}; must be a registered model name (str)")

    # Every name under which each quantized layer is reachable (shared modules).
    qnames: dict[int, list[str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, QLayer):
            qnames.setdefault(id(module), []).append(mod_name)
    qset = {n for names in qnames.values() for n in names}
    prefixes = tuple(n + "." for n in qset)

    blobs: dict[str, Any] = {}
    layers = []
    for mod_name, module in model.named_modules():
        if isinstance(module, QLayer):
            entry = _pack_layer(mod_name, module, blobs)
            entry["aliases"] = [n for n in qnames[id(module)] if n != mod_name]
            layers.append(entry)

    # Everything outside the quantized layers is stored as is ("state/<key>"); a
    # quantized layer's weight and bias are represented by its packed entry and
    # its quantizers' internals (estimator state) are not needed for inference.
    float32_bytes = 0
    for key, value in model.state_dict().items():
        layer_name, _, leaf = key.rpartition(".")
        if layer_name in qset and leaf in ("weight", "bias"):
            float32_bytes += 4 * value.numel()
        elif not key.startswith(prefixes):
            blobs["state/" + key] = value
            float32_bytes += value.numel() * (4 if value.is_floating_point() else value.element_size())

    floats = [p for p in model.parameters() if p.is_floating_point()]
    manifest = {
        "format": PACKED_FORMAT,
        "producer": {"bnnopt": __version__, "torch": torch.__version__},
        "model": {"name": name, "options": options,
                  "class": f"{type(model).__module__}.{type(model).__qualname__}",
                  "dtype": str(floats[0].dtype).replace("torch.", "") if floats else "float32"},
        "meta": meta,
        "qlayers": layers,
        "float32_bytes": float32_bytes,
    }
    size = write_container(path, manifest, blobs)
    return {"path": os.fspath(path), "file_bytes": size, "quantized_layers": len(layers),
            "float32_bytes": float32_bytes, "ratio": float32_bytes / size if size else math.nan}
