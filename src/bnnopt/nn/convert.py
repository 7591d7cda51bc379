"""binarize_(model, config): swap the Conv2d / Linear layers of any nn.Module in place.

In the style of torchao's ``quantize_(model, config, filter_fn)``. Candidates are
the modules that are instances of ``nn.Conv2d`` or ``nn.Linear`` (subclasses
included) but not already quantized, in ``model.named_modules()`` order
(registration order; for the usual models this is the forward order). A
candidate is swapped when all of these hold:

1. it is not the first candidate when ``config.keep_first`` (FSG paper protocol:
   the first conv stays full precision), nor the last when ``config.keep_last``
   (the classifier stays full precision). With both False every candidate is
   swapped, 1x1 shortcut convs included (the official FSG code);
2. ``config.include`` is None or ``re.search(include, name)`` matches;
3. ``config.exclude`` is None or does not match;
4. ``filter_fn`` is None or ``filter_fn(name, module)`` is True.

First/last are decided on the candidate list *before* include/exclude/filter_fn,
so "first layer" always means the network's first quantizable layer.

``model`` must be an ``nn.Module`` (ValueError otherwise). When no layer is
swapped, binarize_ emits a :class:`NothingSwappedWarning` naming the candidates
(the returned list is then empty).

``nn.MultiheadAttention.out_proj`` (``NonDynamicallyQuantizableLinear``) is not a
candidate: attention reads its weight directly, so swapping it would be a no-op.
"""
from __future__ import annotations

import re
import warnings
from typing import Callable

from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from bnnopt.nn.config import QuantConfig
from bnnopt.nn.layers import QConv2d, QLayer, QLinear

__all__ = ["binarize_", "quantizable_layers", "quantized_layers", "set_progress",
           "NothingSwappedWarning"]


class NothingSwappedWarning(UserWarning):
    """binarize_ found no layer to swap (no candidates, or all were filtered out)."""

FilterFn = Callable[[str, nn.Module], bool]


def _qclass(module: nn.Module) -> type[QLayer] | None:
    if isinstance(module, QLayer) or isinstance(module, NonDynamicallyQuantizableLinear):
        return None
    if isinstance(module, nn.Conv2d):
        return QConv2d
    if isinstance(module, nn.Linear):
        return QLinear
    return None


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs binarize_ considers, in module order (root excluded)."""
    return [(n, m) for n, m in model.named_modules() if n and _qclass(m) is not None]


def _selected(config: QuantConfig, filter_fn: FilterFn | None,
              candidates: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    keep = set()
    if candidates and config.keep_first:
        keep.add(candidates[0][0])
    if candidates and config.keep_last:
        keep.add(candidates[-1][0])
    inc = re.compile(config.include) if config.include is not None else None
    exc = re.compile(config.exclude) if config.exclude is not None else None
    chosen = []
    for name, module in candidates:
        if name in keep:
            continue
        if inc is not None and not inc.search(name):
            continue
        if exc is not None and exc.search(name):
            continue
        if filter_fn is not None and not filter_fn(name, module):
            continue
        chosen.append((name, module))
    return chosen


def binarize_(model: nn.Module, config: QuantConfig | None = None,
              filter_fn: FilterFn | None = None) -> list[str]:
    """Replace selected Conv2d/Linear modules of ``model`` by QConv2d/QLinear, in place.

    Each new layer copies the float layer's weight and bias (same device/dtype) and
    gets fresh quantizers built from ``config`` (validated first; default
    ``QuantConfig()`` = 1-bit DoReFa weights, identity STE, first/last kept).
    Returns the names of the swapped modules, in module order. A module shared
    under several names is swapped once, under its first name, and every reference
    to it is replaced (weight sharing is preserved).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"binarize_ expects a torch.nn.Module, got {type(model).__name__}")
    config = (config or QuantConfig()).validate()
    if filter_fn is not None and not callable(filter_fn):
        raise ValueError(f"invalid filter_fn {filter_fn!r}; must be callable(name, module) -> bool")
    swapped = []
    candidates = quantizable_layers(model)
    for name, module in _selected(config, filter_fn, candidates):
        new = _qclass(module).from_float(module, config)
        for parent in list(model.modules()):
            for key, sub in list(parent._modules.items()):
                if sub is module:
                    setattr(parent, key, new)
        swapped.append(name)
    if not swapped:
        warnings.warn(nothing_swapped_message(model, config, candidates, filter_fn),
                      NothingSwappedWarning, stacklevel=2)
    return swapped


def nothing_swapped_message(model: nn.Module, config: QuantConfig,
                            candidates: list[tuple[str, nn.Module]],
                            filter_fn: FilterFn | None = None) -> str:
    if not candidates:
        return (f"binarize_ swapped no layer: {type(model).__name__} has no unquantized "
                "Conv2d or Linear module")
    names = ", ".join(n for n, _ in candidates[:6]) + (" ..." if len(candidates) > 6 else "")
    rules = [f"{k}={getattr(config, k)!r}" for k in ("keep_first", "keep_last", "include", "exclude")
             if getattr(config, k, None) not in (None, False)]
    if filter_fn is not None:
        rules.append("filter_fn")
    return (f"binarize_ swapped no layer: {', '.join(rules) or 'the selection'} excluded all "
            f"{len(candidates)} candidate(s) ({names})")


def quantized_layers(model: nn.Module) -> list[tuple[str, QLayer]]:
    """All (name, QLayer) pairs of ``model`` in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QLayer)]


def set_progress(model: nn.Module, p: float) -> None:
    """Set training progress p in [0, 1] on every quantized layer (anneals EDE / ReSTE).

    Same as :func:`bnnopt.quant.set_estimator_progress`; see
    :class:`bnnopt.quant.EstimatorSchedule` for the scheduler object.
    """
    from bnnopt.quant import set_estimator_progress

    set_estimator_progress(model, p)
