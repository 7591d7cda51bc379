"""Activation quantizers, applied to a quantized layer's *input* (W1A1, W1A2, ...).

=========  ===========================================================  ==========
sign       a_q = sign(a) in {-1, +1} (sign(0) := +1) with any registered   bits 1
           estimator as the surrogate derivative (BNN, Bi-Real, IR-Net)
dorefa     a_q = round(n clamp(a, 0, 1)) / n, n = 2^k - 1                  2, 4, 8
           (DoReFa-Net Eq. 5-6), gradient 1{0 <= a <= 1}
=========  ===========================================================  ==========

No activation quantizer (``act_quantizer=None`` in QuantConfig) keeps activations
in float32: W1A32. Registered in ``ACT_QUANTIZERS`` (a registry local to
bnnopt.quant, since these names overlap the weight quantizers' names).
Shapes: any -> same.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from bnnopt.quant._functions import UnitQuantize
from bnnopt.quant._lookup import check_bits, resolve, short_repr
from bnnopt.quant.estimators import Estimator, make_estimator
from bnnopt.registry import ACT_QUANTIZERS, ESTIMATORS, choice

__all__ = ["ACT_QUANTIZERS", "ActQuantizer", "SignActivation", "DoReFaActivation",
           "make_act_quantizer"]


class ActQuantizer(nn.Module):
    """Base: ``bits``, ``set_progress(p)``, ``forward(a) -> a_q``."""

    name = "base"
    supported_bits: tuple[int, ...] = ()

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits, self.supported_bits, f"activation quantizer {self.name!r}")

    def set_progress(self, p: float) -> None:
        """Training progress p in [0, 1] (only annealed estimators use it)."""

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


@ACT_QUANTIZERS.register("sign", "binary activations sign(a) with a chosen estimator")
class SignActivation(ActQuantizer):
    """a -> sign(a), sign(0) := +1; backward from ``estimator`` (default clipped STE, as BNN)."""

    name = "sign"
    supported_bits = (1,)

    def __init__(self, bits: int = 1, estimator: Any = "clipped_ste",
                 estimator_options: dict[str, Any] | None = None) -> None:
        super().__init__(bits)
        if isinstance(estimator, Estimator) and estimator_options:
            raise ValueError(f"invalid estimator_options {estimator_options!r} with the "
                             f"estimator instance {short_repr(estimator)}; pass its class")
        self.estimator = (estimator if isinstance(estimator, Estimator)
                          else make_estimator(estimator, **(estimator_options or {})))

    def set_progress(self, p: float) -> None:
        self.estimator.set_progress(p)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.estimator(a)


@ACT_QUANTIZERS.register("dorefa", "DoReFa k-bit activations round(n*clamp(a,0,1))/n")
class DoReFaActivation(ActQuantizer):
    """a -> quantize_k(clamp(a, 0, 1)); straight-through gradient inside [0, 1]."""

    name = "dorefa"
    supported_bits = (2, 4, 8)

    def __init__(self, bits: int = 2, estimator: Any = "ste",
                 estimator_options: dict[str, Any] | None = None) -> None:
        super().__init__(bits)
        # The clip's derivative already gives 1{0 <= a <= 1}; "ste" and "clipped_ste"
        # coincide here. Other estimators are sign-specific.
        cls, _ = resolve(ESTIMATORS, estimator, Estimator)
        choice(cls.name, ("ste", "clipped_ste"), "estimator for activation quantizer 'dorefa'")

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return UnitQuantize.apply(a, self.bits)


def make_act_quantizer(spec: "str | type[ActQuantizer] | ActQuantizer", bits: int | None = None,
                       estimator: Any = None,
                       estimator_options: dict[str, Any] | None = None) -> ActQuantizer:
    """A new activation quantizer from ``spec`` (ValueError on bad name/bits/estimator).

    ``spec`` is a registered name or an ActQuantizer subclass, built with ``bits`` (None =
    its default) and
    ``estimator`` (a name, Estimator subclass or instance; None = the quantizer's
    default: clipped_ste for sign); or an ActQuantizer instance, deep-copied (``bits`` /
    ``estimator`` may then only repeat its values).
    """
    cls, template = resolve(ACT_QUANTIZERS, spec, ActQuantizer)
    if template is not None:
        where = f"the activation quantizer instance {short_repr(template)}"
        own = getattr(getattr(template, "estimator", None), "name", None)
        if bits is not None and bits != template.bits:
            raise ValueError(f"invalid bits {bits!r} for {where}; it has bits={template.bits} "
                             "(pass its class to choose bits)")
        if estimator is not None and not (isinstance(estimator, str) and own is not None
                                          and estimator.lower() == own):
            raise ValueError(f"invalid estimator {short_repr(estimator)} for {where}; it has "
                             f"estimator {own!r} (pass its class to choose one)")
        if estimator_options:
            raise ValueError(f"invalid estimator_options {estimator_options!r} for {where}; "
                             "pass its class to set options")
        return copy.deepcopy(template)
    kwargs: dict[str, Any] = {"estimator_options": estimator_options}
    if bits is not None:
        kwargs["bits"] = bits
    if isinstance(estimator, Estimator):
        estimator = make_estimator(estimator)  # a copy: one estimator per quantizer
    if estimator is not None:
        kwargs["estimator"] = estimator
    return cls(**kwargs)
