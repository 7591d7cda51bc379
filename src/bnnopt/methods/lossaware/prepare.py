"""Swap a plain model's layers to the "lossaware" quantizer (shared by the optimizers
and the lab / laq / blaq methods).

:func:`prepare_lossaware` calls :func:`bnnopt.nn.binarize_` with the "lossaware"
weight quantizer (identity STE, no activation quantizer unless the policy asks),
then sets per-layer widths and quantizes every swapped layer with the D = I
optimum (``solve_exact``), so a freshly prepared model is already quantized.

Which layers: the quantizable layers of :func:`bnnopt.nn.convert.quantizable_layers`
(in module order) minus the first when ``keep_first`` and the last when
``keep_last``. The loss-aware family's default is ``keep_first = keep_last =
False``: LAB (Hou et al. 2017) quantizes every layer, the classifier included.
Other policy keys (include, exclude, act_quantizer, ...) go to QuantConfig.

Per-layer widths: ``bits`` for every swapped layer, then ``layer_bits`` (regex,
``re.fullmatch`` on module names; later rules win), then ``first_bits`` /
``last_bits`` for the first / last quantizable layer when it was swapped. Widths
1, 2, 4, 8; an 8-bit layer uses linear levels (255 values), others ``levels``.
"""
from __future__ import annotations

import re
from typing import Any

from torch import nn

from bnnopt.methods.config import LOSS_AWARE_POLICY, check_policy
from bnnopt.methods.lossaware.levels import BITS, LAYER_BITS, LEVEL_KINDS, check_levels
from bnnopt.methods.lossaware.quantizer import LossAwareQuantizer, is_lossaware
from bnnopt.registry import choice

__all__ = ["check_layer_bits", "layer_widths", "prepare_lossaware"]


def check_layer_bits(bits: int, levels: str, first_bits: int | None = None,
                     last_bits: int | None = None,
                     layer_bits: dict[str, int] | None = None) -> None:
    """ValueError (one line, naming the bad value) unless the width options are valid."""
    choice(bits, BITS, "bits")
    choice(levels, LEVEL_KINDS, "levels")
    for key, value in (("first_bits", first_bits), ("last_bits", last_bits)):
        if value is not None:
            choice(value, LAYER_BITS, key)
    if layer_bits is not None:
        if not isinstance(layer_bits, dict):
            raise ValueError(f"invalid layer_bits {layer_bits!r}; must be a table "
                             "{layer-name regex = bits}")
        for pattern, width in layer_bits.items():
            try:
                re.compile(pattern)
            except (re.error, TypeError) as err:
                raise ValueError(f"invalid layer_bits pattern {pattern!r}: {err}") from None
            choice(width, LAYER_BITS, f"layer_bits[{pattern!r}]")


def layer_widths(names: list[str], swapped: list[str], bits: int,
                 first_bits: int | None = None, last_bits: int | None = None,
                 layer_bits: dict[str, int] | None = None) -> dict[str, int]:
    """Bits of each swapped layer (``names``: every quantizable layer, module order)."""
    widths = {name: bits for name in swapped}
    for pattern, width in (layer_bits or {}).items():
        for name in swapped:
            if re.fullmatch(pattern, name):
                widths[name] = int(width)
    if names and first_bits is not None and names[0] in widths:
        widths[names[0]] = int(first_bits)
    if names and last_bits is not None and names[-1] in widths:
        widths[names[-1]] = int(last_bits)
    return widths


def prepare_lossaware(model: nn.Module, bits: int = 1, levels: str = "linear",
                      policy: dict[str, Any] | None = None, first_bits: int | None = None,
                      last_bits: int | None = None,
                      layer_bits: dict[str, int] | None = None) -> list[str]:
    """Swap ``model``'s layers to "lossaware" quantizers in place; return their names.

    ``policy``: binarize_'s selection keys (see :data:`POLICY_KEYS`); default
    ``keep_first = keep_last = False``.
    """
    from bnnopt.nn import QuantConfig, binarize_
    from bnnopt.nn.convert import quantizable_layers

    check_layer_bits(bits, levels, first_bits, last_bits, layer_bits)
    policy = dict(policy or {})
    check_policy(policy)
    config = QuantConfig(weight_quantizer="lossaware", weight_bits=bits, estimator="ste",
                         quantizer_options={"levels": levels},
                         **{**LOSS_AWARE_POLICY, **policy}).validate()
    candidates = [name for name, _ in quantizable_layers(model)]
    names = binarize_(model, config)
    modules = dict(model.named_modules())
    widths = layer_widths(candidates, names, bits, first_bits, last_bits, layer_bits)
    for name, width in widths.items():
        layer = modules[name]
        if width != layer.weight_quantizer.bits:
            kind = levels if width != 8 else "linear"
            check_levels(width, kind)
            layer.weight_quantizer = LossAwareQuantizer(bits=width, levels=kind).to(
                layer.weight.device)
    for module in model.modules():
        if is_lossaware(module):
            module.weight_quantizer.requantize(module.weight, None, solver="exact")
    return names
