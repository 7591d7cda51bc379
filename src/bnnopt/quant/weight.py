"""Weight quantizers: latent float weight W -> quantized weight Q(W) used in the forward pass.

Every weight quantizer factors as

    u = pre(W)                      differentiable pre-quantization transform
    q = sign(u)          (1 bit)    with the chosen surrogate-gradient estimator
      = KBitRound(u)     (k bits)   2^k-level grid in [-1, 1], straight-through
    Q(W) = scale * q                scale: 1, mean|W| (BWN) or max|W| (uniform)

and the grid is always {(2/n) c - 1 : c = 0..n}, n = 2^bits - 1, so one decode
formula serves all of them (``levels_from_codes``)::

    encode(W) = {"codes": uint8 tensor, shape of W, values in [0, 2^bits),
                 "bits": int,
                 "scale": float tensor broadcastable to W (shape [] or [C_out, 1, ...])}
    decode(enc) = scale * ((2/n) * codes - 1)

``forward(W)`` equals ``decode(encode(W))`` bit for bit (the export relies on it).
sign(0) := +1 throughout, i.e. code 1.

Registered in ``QUANTIZERS``:

=========  ======================================================  ==========
sign       Q = sign(W)                                             bits 1
dorefa     A = tanh(W) / max|tanh(W)| (max held constant),          1, 2, 4, 8
           Q = sign(A) (1 bit) or 2 quantize_k((A+1)/2) - 1
           (FSG paper Eq. 1-2; DoReFa-Net Eq. 9)
bwn        Q = alpha sign(W), alpha = mean|W| per tensor or per      1
           output channel (XNOR-Net / BWN, Rastegari et al. 2016)
scaled_sign  Q = alpha sign(W), alpha a learned parameter per output  1
           channel (or tensor), initialised to mean|W| of the weight it is
           bound to (scale factors learned by backpropagation, XNOR-Net++,
           Bulat & Tzimiropoulos 2019)
uniform    s = max|W| (held constant), Q = s * KBitRound(W / s)     1, 2, 4, 8
           (symmetric mid-rise uniform grid with 2^k levels)
=========  ======================================================  ==========
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from bnnopt.quant._functions import KBitRound, kbit_codes, levels_from_codes
from bnnopt.quant._lookup import check_bits, resolve, short_repr
from bnnopt.quant.estimators import Estimator, make_estimator
from bnnopt.registry import QUANTIZERS

__all__ = ["WeightQuantizer", "SignQuantizer", "DoReFaQuantizer", "BWNQuantizer",
           "ScaledSignQuantizer", "UniformQuantizer", "make_weight_quantizer",
           "MULTIBIT_ESTIMATORS"]

# Estimators that make sense for k-bit rounding (k > 1): identity or clipped STE.
MULTIBIT_ESTIMATORS = ("ste", "clipped_ste")
_EPS = 1e-12


class WeightQuantizer(nn.Module):
    """Base class. Subclasses define ``pre`` and optionally ``scale``.

    Args:
        bits: bits per weight, one of ``supported_bits``.
        estimator: the surrogate derivative of sign for 1 bit: a registered name or an
            Estimator subclass (built with ``estimator_options``), or an Estimator
            instance (used as is, not copied); for k > 1 bits it must be "ste"
            (identity through the rounding) or "clipped_ste" (1{|u| <= 1}).
        estimator_options: keyword options of the estimator (e.g. EDE's t_min).
    """

    name = "base"
    supported_bits: tuple[int, ...] = (1,)

    def __init__(self, bits: int = 1, estimator: str | Estimator = "ste",
                 estimator_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.bits = check_bits(bits, self.supported_bits, f"quantizer {self.name!r}")
        if isinstance(estimator, Estimator) and estimator_options:
            raise ValueError(f"invalid estimator_options {estimator_options!r} with the "
                             f"estimator instance {short_repr(estimator)}; pass its class")
        if isinstance(estimator, Estimator):
            self.estimator = estimator
        else:
            self.estimator = make_estimator(estimator, **(estimator_options or {}))
        if self.bits > 1 and self.estimator.name not in MULTIBIT_ESTIMATORS:
            raise ValueError(
                f"invalid estimator {self.estimator.name!r} for {self.bits}-bit quantizer "
                f"{self.name!r}; valid for multi-bit: {', '.join(MULTIBIT_ESTIMATORS)}")

    # -- the three parts ---------------------------------------------------------
    def pre(self, w: torch.Tensor) -> torch.Tensor:
        """Differentiable pre-quantization transform u = pre(W), same shape as W."""
        return w

    def pre_derivative(self, w: torch.Tensor) -> torch.Tensor:
        """Elementwise c = d pre(W) / dW (normalisers held constant), shape of W."""
        return torch.ones_like(w)

    def scale(self, w: torch.Tensor) -> torch.Tensor | None:
        """Output scale (None = 1), broadcastable to W."""
        return None

    def scale_numel(self, shape: torch.Size | tuple[int, ...]) -> int:
        """How many float scale values ``encode`` stores for a weight of ``shape``."""
        return 0

    def bind(self, weight: torch.Tensor) -> None:
        """Called by a quantized layer with its weight once it holds its values (at
        construction and after ``from_float`` copies the float weights); quantizers with
        parameters shaped like the weight create them here. No-op by default."""

    # -- forward / encode / decode ------------------------------------------------
    def set_progress(self, p: float) -> None:
        """Forward training progress p in [0, 1] to the (annealed) estimator."""
        self.estimator.set_progress(p)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Q(W), same shape and dtype as W, with the estimator's surrogate gradient."""
        u = self.pre(w)
        if self.bits == 1:
            q = self.estimator(u)
        else:
            q = KBitRound.apply(u, self.bits, self.estimator.name == "clipped_ste")
        s = self.scale(w)
        return q if s is None else q * s

    @torch.no_grad()
    def encode(self, w: torch.Tensor) -> dict[str, Any]:
        """Integer codes + scale such that ``decode(encode(w)) == forward(w)`` exactly."""
        codes = kbit_codes(self.pre(w), self.bits)
        s = self.scale(w)
        if s is None:
            s = torch.ones((), dtype=w.dtype, device=w.device)
        return {"codes": codes.to(torch.uint8), "bits": self.bits, "scale": s.detach().clone()}

    @staticmethod
    def decode(enc: dict[str, Any]) -> torch.Tensor:
        """scale * ((2/n) codes - 1), n = 2^bits - 1, in the dtype of ``scale``."""
        scale = enc["scale"]
        return levels_from_codes(enc["codes"].to(scale.dtype), int(enc["bits"]), scale)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


@QUANTIZERS.register("sign", "binary sign(W) in {-1,+1}, no scale (sign(0) := +1)")
class SignQuantizer(WeightQuantizer):
    """Q(W) = sign(W), sign(0) := +1. No scale. 1 bit only."""

    name = "sign"
    supported_bits = (1,)


@QUANTIZERS.register("dorefa", "DoReFa weights A=tanh(W)/max|tanh W| (FSG Eq. 1-2), 1/2/4/8 bits")
class DoReFaQuantizer(WeightQuantizer):
    """FSG paper Eq. 1-2 (DoReFa-Net Eq. 9 for k bits).

    A(W) = tanh(W) / max|tanh(W)|, the max held constant (detached), so
    c = dA/dW = (1 - tanh^2 W) / max|tanh W|. Q = sign(A) for 1 bit, else
    2 quantize_k((A + 1)/2) - 1 with quantize_k(x) = round((2^k-1) x)/(2^k-1).
    Note sign(A(W)) = sign(W); the estimator sees A(W), not W.
    """

    name = "dorefa"
    supported_bits = (1, 2, 4, 8)

    def _max(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().abs().max().clamp_min(_EPS)

    def pre(self, w):
        t = torch.tanh(w)
        return t / self._max(t)

    def pre_derivative(self, w):
        t = torch.tanh(w.detach())
        return (1 - t * t) / self._max(t)


def mean_abs(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """mean|W| over the whole tensor (shape []) or, ``per_channel`` and W not 1-D, over
    all but dim 0 (shape [C_out, 1, ..., 1]): the XNOR-Net scale."""
    if per_channel and w.dim() > 1:
        return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
    return w.abs().mean()


def scale_count(shape: torch.Size | tuple[int, ...], per_channel: bool) -> int:
    """Number of values of :func:`mean_abs` for a weight of ``shape``."""
    return int(shape[0]) if per_channel and len(shape) > 1 else 1


@QUANTIZERS.register("bwn", "BWN/XNOR alpha*sign(W), alpha = mean|W| per tensor or channel")
class BWNQuantizer(WeightQuantizer):
    """Binary-Weight-Network (XNOR-Net, Rastegari et al. ECCV 2016, Sec. 3.1).

    Q(W) = alpha * sign(W), alpha = mean|W| over the whole tensor (shape []) or, with
    ``per_channel=True``, over all but dim 0 (shape [C_out, 1, ..., 1]).
    ``detach_scale=False`` (default) lets gradient flow through alpha too, as in the
    paper's derivative (Sec. 3.1, per tensor with n weights):
    dQ_i/dW_j = alpha s(W_i) [i = j] + sign(W_i) sign(W_j) / n (d|W|/dW := 0 at 0);
    ``detach_scale=True`` treats alpha as a constant (dQ_i/dW_i = alpha s(W_i)).
    """

    name = "bwn"
    supported_bits = (1,)

    def __init__(self, bits: int = 1, estimator: str | Estimator = "clipped_ste",
                 estimator_options: dict[str, Any] | None = None, per_channel: bool = False,
                 detach_scale: bool = False) -> None:
        super().__init__(bits, estimator, estimator_options)
        self.per_channel = bool(per_channel)
        self.detach_scale = bool(detach_scale)

    def scale(self, w):
        alpha = mean_abs(w, self.per_channel)
        return alpha.detach() if self.detach_scale else alpha

    def scale_numel(self, shape):
        return scale_count(shape, self.per_channel)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, detach_scale={self.detach_scale}"


@QUANTIZERS.register("scaled_sign", "alpha*sign(W), alpha a learned per-channel parameter "
                                    "initialised to mean|W| (XNOR-Net++ style)")
class ScaledSignQuantizer(WeightQuantizer):
    """Q(W) = alpha * sign(W) with a learned scale alpha (an ``nn.Parameter``, trained by
    the optimizer like any other), per output channel (shape [C_out, 1, ..., 1]) or,
    with ``per_channel=False``, per tensor (shape []).

    alpha is created by :meth:`bind` from the weight the layer holds, as XNOR-Net's
    closed form alpha = mean|W| (Rastegari et al. 2016, Sec. 3.1), and then learned by
    backpropagation, as the scale factors of XNOR-Net++ (Bulat & Tzimiropoulos, BMVC
    2019): dL/dalpha_c = sum_i g_ci sign(W_ci), g = dL/dQ. The weight's own gradient is
    alpha * s(W) * g (s the estimator's surrogate derivative of sign). Unlike ``bwn``,
    alpha does not follow the latent weights, so it also serves weights that are
    themselves +-1 (Bop). One instance per layer: binding again re-initialises alpha.
    """

    name = "scaled_sign"
    supported_bits = (1,)

    def __init__(self, bits: int = 1, estimator: str | Estimator = "clipped_ste",
                 estimator_options: dict[str, Any] | None = None,
                 per_channel: bool = True) -> None:
        super().__init__(bits, estimator, estimator_options)
        self.per_channel = bool(per_channel)
        self.alpha: nn.Parameter | None = None

    def bind(self, weight: torch.Tensor) -> None:
        self.alpha = nn.Parameter(mean_abs(weight.detach(), self.per_channel).clone())

    def scale(self, w):
        if self.alpha is None:
            raise ValueError("the 'scaled_sign' quantizer has no scale yet: use it inside a "
                             "quantized layer (binarize_ or QLinear/QConv*), which binds it "
                             "to its weight")
        return self.alpha

    def scale_numel(self, shape):
        return scale_count(shape, self.per_channel)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}"


@QUANTIZERS.register("uniform", "k-bit symmetric uniform grid, per-tensor scale max|W|")
class UniformQuantizer(WeightQuantizer):
    """Symmetric mid-rise uniform quantizer with 2^k levels and per-tensor scale s = max|W|.

    Q(W) = s * ((2/n) round(n (W/s + 1)/2) - 1), n = 2^k - 1, s held constant, so the
    straight-through gradient is dQ/dW = 1. For 1 bit this is max|W| * sign(W).
    """

    name = "uniform"
    supported_bits = (1, 2, 4, 8)

    def _s(self, w):
        return w.detach().abs().max().clamp_min(_EPS)

    def pre(self, w):
        return w / self._s(w)

    def pre_derivative(self, w):
        return torch.ones_like(w) / self._s(w)

    def scale(self, w):
        return self._s(w)

    def scale_numel(self, shape):
        return 1


def make_weight_quantizer(spec: "str | type[WeightQuantizer] | WeightQuantizer",
                          bits: int | None = None, estimator: Any = None,
                          estimator_options: dict[str, Any] | None = None,
                          **options: Any) -> WeightQuantizer:
    """A new weight quantizer from ``spec`` (ValueError on bad names/bits/options).

    ``spec`` is a registered name or a WeightQuantizer subclass, built with ``bits``
    (default 1), ``estimator`` (a name, Estimator subclass or instance; default
    "ste"), ``estimator_options`` and ``options``; or a WeightQuantizer instance, used
    as a template: the result is a deep copy (its own estimator included), so that
    every layer gets independent state. An instance already fixes bits and estimator:
    ``bits`` / ``estimator`` may then only repeat its values, and no options are taken.
    """
    cls, template = resolve(QUANTIZERS, spec, WeightQuantizer)
    if template is not None:
        where = f"the quantizer instance {short_repr(template)}"
        if bits is not None and bits != template.bits:
            raise ValueError(f"invalid bits {bits!r} for {where}; it has bits={template.bits} "
                             "(pass its class to choose bits)")
        if estimator is not None and not (isinstance(estimator, str)
                                          and estimator.lower() == template.estimator.name):
            raise ValueError(f"invalid estimator {short_repr(estimator)} for {where}; it has "
                             f"estimator {template.estimator.name!r} (pass its class to choose one)")
        if estimator_options or options:
            raise ValueError(f"invalid options {sorted({**(estimator_options or {}), **options})} "
                             f"for {where}; pass its class to set options")
        return copy.deepcopy(template)
    if isinstance(estimator, Estimator):
        estimator = make_estimator(estimator)  # a copy: one estimator per quantizer
    try:
        return cls(bits=1 if bits is None else bits, estimator="ste" if estimator is None
                   else estimator, estimator_options=estimator_options, **options)
    except TypeError as err:
        raise ValueError(
            f"invalid options {sorted(options)} for quantizer {short_repr(spec)}: {err}") from None
