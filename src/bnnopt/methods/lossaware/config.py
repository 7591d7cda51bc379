"""Typed options of the loss-aware family: LAB, LAQ, BLAQ (:mod:`bnnopt.methods.lossaware.method`).

:class:`LossAwareConfig` holds what every member takes (bits, level set, clipping,
Adam's ε); :class:`PerLayerBitsConfig` adds the per-layer widths of LAQ and BLAQ;
:class:`LABConfig`, :class:`LAQConfig`, :class:`BLAQConfig` are the methods. The
class defaults are each paper's settings (``LAQConfig()`` is LAQ, ``BLAQConfig()``
BLAQ with a = 0.6, m = 5, the trial reading). The family's policy default (every
layer quantized) is :data:`bnnopt.methods.config.LOSS_AWARE_POLICY`.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from bnnopt.methods.config import MethodConfig, check_int, check_number
from bnnopt.methods.lossaware.blaq import READINGS
from bnnopt.methods.lossaware.levels import BITS, LEVEL_KINDS, SCALE_RULES
from bnnopt.methods.lossaware.prepare import check_layer_bits
from bnnopt.registry import choice

__all__ = ["BLAQConfig", "LABConfig", "LAQConfig", "LossAwareConfig", "PerLayerBitsConfig"]


@dataclasses.dataclass(frozen=True)
class LossAwareConfig(MethodConfig):
    """Options of every loss-aware method.

    Attributes:
        bits: weight bits (LAB: 1; LAQ, BLAQ: 1, 2 or 4).
        levels: level set, "linear", "log" or "pow2" (at 1 bit all are {-1, 1}).
        clip: clip the latent weights to [-clip, clip] after each step; None: no clipping.
        eps: ε added to Adam's √v̂ in the diagonal curvature D.
    """

    bits: int = 1
    levels: str = "linear"
    clip: float | None = 1.0
    eps: float = 1e-8

    method: ClassVar[str] = "loss-aware"
    bits_allowed: ClassVar[tuple[int, ...]] = BITS

    def validate(self) -> None:
        super().validate()
        choice(self.bits, self.bits_allowed, "bits")
        choice(self.levels, LEVEL_KINDS, "levels")
        clip = self.clip
        if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
            raise ValueError(f"invalid clip {clip!r}; must be > 0 or None")
        check_number(self.eps, "eps", positive=True)


@dataclasses.dataclass(frozen=True)
class LABConfig(LossAwareConfig):
    """LAB (Hou et al. ICLR 2017): 1-bit loss-aware binarization."""

    method: ClassVar[str] = "lab"
    bits_allowed: ClassVar[tuple[int, ...]] = (1,)


@dataclasses.dataclass(frozen=True)
class PerLayerBitsConfig(LossAwareConfig):
    """Adds per-layer widths (later rules win: ``bits``, ``layer_bits``, first/last).

    Attributes:
        first_bits: width of the first quantizable layer (1, 2, 4 or 8); None: ``bits``.
        last_bits: width of the last quantizable layer; None: ``bits``.
        layer_bits: {layer-name regex (re.fullmatch): width}; None: none.
        scale_rule: the m-bit solver's alpha-step, "exact" (the D-weighted minimiser) or
            "official" (the official LAQ code's formula;
            :func:`bnnopt.methods.lossaware.levels.solve`).
    """

    first_bits: int | None = None
    last_bits: int | None = None
    layer_bits: dict | None = None
    scale_rule: str = "exact"

    def validate(self) -> None:
        super().validate()
        choice(self.scale_rule, SCALE_RULES, "scale_rule")
        check_layer_bits(self.bits, self.levels, self.first_bits, self.last_bits, self.layer_bits)


@dataclasses.dataclass(frozen=True)
class LAQConfig(PerLayerBitsConfig):
    """LAQ (Hou and Kwok ICLR 2018): 1/2/4 bits, linear|log|pow2 levels.

    Attributes:
        max_iter: alternating iterations of the D-weighted scale solver (10).
    """

    max_iter: int = 10

    method: ClassVar[str] = "laq"

    def validate(self) -> None:
        super().validate()
        check_int(self.max_iter, "max_iter")


@dataclasses.dataclass(frozen=True)
class BLAQConfig(PerLayerBitsConfig):
    """BLAQ (Ma et al. AAAI 2024): one-step forward and backtrack LAQ.

    Attributes:
        levels: default "pow2", the paper's powers of two without zero.
        a: backtrack weight in [0, 1] (0.6).
        m: iterations of the scale solver (5).
        reading: "trial" (a second forward at the trial point) or "recursive".
        trial_bn_stats: keep the BatchNorm statistics of the trial forward (False: restored).
    """

    levels: str = "pow2"
    a: float = 0.6
    m: int = 5
    reading: str = "trial"
    trial_bn_stats: bool = False

    method: ClassVar[str] = "blaq"

    def validate(self) -> None:
        super().validate()
        a, m = self.a, self.m
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise ValueError(f"invalid a {a!r}; must be a number in [0, 1]")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"invalid m {m!r}; must be an integer >= 1")
        choice(self.reading, READINGS, "reading")
        if not isinstance(self.trial_bn_stats, bool):
            raise ValueError(f"invalid trial_bn_stats {self.trial_bn_stats!r}; "
                             "must be true or false")
