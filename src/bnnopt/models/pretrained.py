"""Load published full-precision checkpoints into the models, strictly.

Checkpoints in the wild come in a few wrappings: a bare state dict (the
official FSG CIFAR ResNets), a dict holding it under ``state_dict`` / ``model``
/ ``net`` / ..., and keys prefixed ``module.`` by ``nn.DataParallel``.
:func:`extract_state_dict` peels those layers off; :func:`load_pretrained`
then loads with ``strict=True`` and, on any mismatch, raises a ``ValueError``
that lists the missing keys, the unexpected keys and the shape mismatches
(instead of torch's RuntimeError, which does not name shape problems up front).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Keys under which training scripts commonly nest the model's state dict.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 8  # how many offending keys an error message lists per kind


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Return the tensor state dict inside ``obj`` with ``module.`` prefixes stripped.

    ``obj`` is a state dict, or a dict nesting one (possibly several levels)
    under one of :data:`CONTAINER_KEYS`. Raises ValueError if none is found.
    """
    seen = obj
    for _ in range(4):  # bounded unwrapping
        if _is_state_dict(seen):
            break
        if not isinstance(seen, Mapping):
            raise ValueError(f"expected a state dict (str -> Tensor), got {type(seen).__name__}")
        inner = next((seen[k] for k in CONTAINER_KEYS if k in seen and isinstance(seen[k], Mapping)),
                     None)
        if inner is None:
            keys = ", ".join(map(str, list(seen)[:_SHOW]))
            raise ValueError(
                "no state dict found: the checkpoint is a dict whose values are not all tensors "
                f"and none of {', '.join(CONTAINER_KEYS)} holds one (top-level keys: {keys})")
        seen = inner
    else:
        raise ValueError("no state dict found within 4 levels of nesting")
    out = {}
    for key, value in seen.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load`` a checkpoint file on the CPU (tensors only) and extract its state dict."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file not found: {str(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a torch file, or unsafe pickle
        raise ValueError(f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return extract_state_dict(obj)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _SHOW else "")


def check_compatible(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Raise ValueError unless ``state`` has exactly the model's keys with equal shapes.

    Keys under a prefix in ``model.optional_init_prefixes`` (e.g. the official FSG
    ResNet's extra ``bn2``, absent from its own full-precision checkpoints, which it
    loads with strict=False) may be missing; they keep their initial values.
    """
    own = model.state_dict()
    optional = tuple(getattr(model, "optional_init_prefixes", ()))
    missing = [k for k in own if k not in state and not (optional and k.startswith(optional))]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_listing(shapes)}")
        where = f" {source}" if source else ""
        raise ValueError(f"checkpoint{where} does not fit {type(model).__name__} "
                         f"(strict load): " + "; ".join(parts))


def load_pretrained(model: nn.Module, checkpoint: str | os.PathLike | Mapping[str, Any]) -> nn.Module:
    """Load ``checkpoint`` (a path, a state dict, or a dict wrapping one) with strict=True.

    Returns ``model`` (modified in place). Raises ValueError naming the missing
    and unexpected keys and the shape mismatches if the checkpoint does not fit.
    Example::

        model = load_pretrained(resnet20(), "shared/pretrained/resnet20-cifar10-fp.pth")
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        source = repr(str(checkpoint))
        state = read_checkpoint(checkpoint)
    else:
        source = ""
        state = extract_state_dict(checkpoint)
    check_compatible(model, state, source)
    model.load_state_dict(state, strict=not getattr(model, "optional_init_prefixes", ()))
    return model


__all__ = ["load_pretrained", "extract_state_dict", "read_checkpoint", "check_compatible",
           "CONTAINER_KEYS"]
