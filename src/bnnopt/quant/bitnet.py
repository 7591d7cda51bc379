"""BitNet weight and activation quantizers for Transformer linear layers.

Two weight quantizers (registered in ``QUANTIZERS``) and three activation
quantizers (registered in ``ACT_QUANTIZERS``), written from the papers (the
equation numbers are those of the arXiv texts):

* BitNet (Wang et al. 2023, arXiv 2310.11453, Sec. 2.1 "BitLinear"):
  binary weights centred on their mean and rescaled by their mean magnitude,

      W~    = Sign(W - alpha)                                     (Eq. 1)
      Sign(W_ij) = +1 if W_ij > 0, -1 if W_ij <= 0                (Eq. 2)
      alpha = (1/nm) sum_ij W_ij                                  (Eq. 3)
      beta  = (1/nm) ||W||_1                                      (Eq. 12)
      Q(W)  = beta * W~        (beta rescales the output, Eq. 11:
                                y = W~ Quant(LN(x)) * beta gamma / Q_b)

  ``bitnet``: u = W - alpha goes through the chosen sign estimator (any of
  ``ESTIMATORS``: ste, clipped_ste, approx_sign, ede, reste, ...), so with the
  mean and the scale held constant (default) dQ/dW = beta * s(W - alpha).
  The paper's Sign maps 0 to -1 (Eq. 2); here sign(0) := +1 as everywhere in
  bnnopt (a set of measure zero for float weights). The paper's training uses
  the straight-through estimator (Sec. 2.2), i.e. ``estimator="ste"``.

* BitNet b1.58 (Ma et al. 2024, arXiv 2402.17764, Sec. 2): ternary weights by
  absmean quantization,

      W~    = RoundClip(W / (gamma + eps), -1, 1)                 (Eq. 1)
      RoundClip(x, a, b) = max(a, min(b, round(x)))               (Eq. 2)
      gamma = (1/nm) sum_ij |W_ij|                                (Eq. 3)
      Q(W)  = gamma * W~       (levels {-gamma, 0, +gamma})

  ``bitnet_b158``: 2 bits of storage (codes 0, 1, 2 for -1, 0, +1; code 3 is
  unused), straight-through gradient of the rounding: s = 1 (``ste``) or
  s = 1{|u| <= 1} (``clipped_ste``), u = W / (gamma + eps); with gamma held
  constant (default) dQ/dW = gamma / (gamma + eps) * s(u). Only these two
  estimators apply to a ternary rounding (the others are derivatives of sign).

* Activations, 8 bits by default. BitNet's absmax quantization (Eq. 4-5) is

      x~ = Clip(x * Q_b / gamma_x, -Q_b + eps, Q_b - eps),  Q_b = 2^(b-1),
      Clip(x, a, b) = max(a, min(b, x)),  gamma_x = ||x||_inf      (Eq. 4-5)

  with gamma_x over the whole tensor during training and per token at
  inference (Sec. 2.1); BitNet b1.58 (Sec. 2) scales per token into
  [-Q_b, Q_b], without the zero point of BitNet's Eq. 6 for non-negative
  inputs. Here, per token (one gamma_x per position of the leading
  dimensions, the b1.58 choice, in training and inference alike) and on the
  integer grid of a signed b-bit integer:

      x_q = Clip(round(x * Q_b / gamma_x), -Q_b, Q_b - 1) * gamma_x / Q_b

  i.e. Eq. 4 with the rounding written out and the upper bound Q_b - 1 (the
  largest b-bit code) in place of Q_b - eps. (The b1.58 authors' published
  training code scales by (Q_b - 1) / gamma_x = 127 / gamma_x at 8 bits, with
  the same clip to [-128, 127]; the grid step here is gamma_x / Q_b, Eq. 4's.)

  ``absmax``: the per-token absmax quantizer alone; ``absmax_ln``: LayerNorm
  without affine parameters first, LN(x) = (x - E x) / sqrt(Var x + eps)
  (BitNet Eq. 11-12; Eq. 8-10 show that this keeps Var(y) near 1, "SubLN");
  ``absmax_rms``: RMSNorm without affine parameters first,
  x / sqrt(mean(x^2) + eps) (BitNet b1.58's LLaMA-style components). The
  forward returns the de-quantized value (x_q above), so the weight scale and
  gamma_x / Q_b of Eq. 11 are already applied; the backward is the
  straight-through identity through the rounding (gradient of the
  normalisation, if any, included). Set one on a model with
  ``QuantConfig(act_quantizer="absmax_ln", act_bits=8)`` (policy keys
  ``act_quantizer`` / ``act_bits``): QLinear applies it to its input.

Relation to the loss-aware family's 2-bit levels: LAQ at 2 bits
(``bnnopt.methods.lossaware``, linear or log levels) also produces ternary
weights alpha * {-1, 0, +1}, but chooses alpha and the zero threshold by
minimising the D-weighted error sum_i d_i (alpha b_i - w_i)^2 with d the
diagonal of Adam's second-moment estimate (LAQ Eq. 8-9), i.e. a curvature-
weighted closed form recomputed at every step, whereas BitNet b1.58 fixes the
scale to mean|W| and the threshold to gamma / 2 (round to nearest) without any
curvature information. With every d_i equal and b held fixed, LAQ's scale
alpha = <b, w> / <b, b> is the mean magnitude of the non-zero weights only,
which is larger than b1.58's gamma. The 2-bit codes of both are exported the
same way (a level table, bnnopt.export).

Shapes: any weight shape (the scales are per tensor, shape []); activations
``[..., features]`` with one scale per position of the leading dimensions.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd import Function

from bnnopt.quant.activation import ActQuantizer
from bnnopt.quant.estimators import Estimator
from bnnopt.quant.weight import WeightQuantizer
from bnnopt.registry import ACT_QUANTIZERS, QUANTIZERS, choice

__all__ = ["BitNetQuantizer", "BitNetB158Quantizer", "RoundClipTernary", "AbsMaxActivation",
           "LNAbsMaxActivation", "RMSAbsMaxActivation", "absmax_quantize"]


class RoundClipTernary(Function):
    """u -> RoundClip(u, -1, 1) in {-1, 0, +1} (b1.58 Eq. 2), zeros as +0.0.

    Backward: straight through, s(u) = 1, or s(u) = 1{|u| <= 1} with ``clip``.
    """

    @staticmethod
    def forward(ctx, u, clip: bool):
        ctx.clip = bool(clip)
        if clip:
            ctx.save_for_backward(u)
        # + 0.0 turns the -0.0 of round(-0.3) into +0.0, so forward == decode bit for bit.
        return torch.round(u).clamp(-1, 1) + 0.0

    @staticmethod
    def backward(ctx, g):
        if ctx.clip:
            (u,) = ctx.saved_tensors
            g = g * (u.abs() <= 1).to(g.dtype)
        return g, None


@QUANTIZERS.register("bitnet", "BitNet binary weights mean|W| * sign(W - mean W) (arXiv 2310.11453)")
class BitNetQuantizer(WeightQuantizer):
    """BitNet's BitLinear weights: Q(W) = beta * sign(W - alpha), alpha = mean(W) (Eq. 1, 3),
    beta = mean|W| (Eq. 12) applied as the output rescaling of Eq. 11 (Wang et al. 2023);
    see the module docstring.

    Args:
        estimator: any registered sign estimator, applied to u = W - alpha.
        detach_mean: hold alpha constant in the backward (default True);
            False lets the gradient flow through the centring, dL/du - mean(dL/du).
        detach_scale: hold beta constant in the backward (default True);
            False adds beta's derivative sign(W_j) / (nm) (as BWN does).
    """

    name = "bitnet"
    supported_bits = (1,)

    def __init__(self, bits: int = 1, estimator: str | Estimator = "ste",
                 estimator_options: dict[str, Any] | None = None, detach_mean: bool = True,
                 detach_scale: bool = True) -> None:
        super().__init__(bits, estimator, estimator_options)
        self.detach_mean = bool(detach_mean)
        self.detach_scale = bool(detach_scale)

    def pre(self, w):
        alpha = w.mean()
        return w - (alpha.detach() if self.detach_mean else alpha)

    def scale(self, w):
        beta = w.abs().mean()
        return beta.detach() if self.detach_scale else beta

    def scale_numel(self, shape):
        return 1

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, detach_mean={self.detach_mean}, "
                f"detach_scale={self.detach_scale}")


@QUANTIZERS.register("bitnet_b158",
                     "BitNet b1.58 ternary mean|W| * RoundClip(W / mean|W|) (arXiv 2402.17764), 2 bits")
class BitNetB158Quantizer(WeightQuantizer):
    """BitNet b1.58 absmean ternary weights: Q(W) = gamma * RoundClip(W / (gamma + eps), -1, 1),
    gamma = mean|W| (Ma et al. 2024, Eq. 1-3); see the module docstring.

    ``bits`` must be 2 (three levels need two bits of storage). ``encode`` gives
    codes {0, 1, 2} for {-1, 0, +1} and ``decode`` maps them back as
    scale * (code - 1), so ``decode(encode(W)) == forward(W)`` bit for bit.

    Args:
        estimator: "ste" (s = 1) or "clipped_ste" (s = 1{|u| <= 1}).
        eps: the paper's epsilon in W / (gamma + eps) (> 0).
        detach_scale: hold gamma constant in the backward (default True).
    """

    name = "bitnet_b158"
    supported_bits = (2,)

    def __init__(self, bits: int = 2, estimator: str | Estimator = "ste",
                 estimator_options: dict[str, Any] | None = None, eps: float = 1e-5,
                 detach_scale: bool = True) -> None:
        super().__init__(bits, estimator, estimator_options)  # checks ste / clipped_ste
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"invalid eps {eps!r} for quantizer {self.name!r}; must be > 0")
        self.eps = float(eps)
        self.detach_scale = bool(detach_scale)

    def _gamma(self, w):
        gamma = w.abs().mean()
        return gamma.detach() if self.detach_scale else gamma

    def pre(self, w):
        return w / (self._gamma(w) + self.eps)

    def pre_derivative(self, w):
        return torch.ones_like(w) / (w.detach().abs().mean() + self.eps)

    def scale(self, w):
        return self._gamma(w)

    def scale_numel(self, shape):
        return 1

    def forward(self, w):
        q = RoundClipTernary.apply(self.pre(w), self.estimator.name == "clipped_ste")
        return q * self.scale(w)

    @torch.no_grad()
    def encode(self, w):
        q = torch.round(self.pre(w)).clamp(-1, 1)
        return {"codes": (q + 1).to(torch.uint8), "bits": self.bits,
                "scale": self.scale(w).detach().clone()}

    @staticmethod
    def decode(enc):
        scale = enc["scale"]
        return scale * (enc["codes"].to(scale.dtype) - 1.0)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, eps={self.eps}, detach_scale={self.detach_scale}"


# ---------------------------------------------------------------- activations
def absmax_quantize(x: torch.Tensor, bits: int = 8, eps: float = 1e-5) -> torch.Tensor:
    """Per-token absmax fake quantization (BitNet Eq. 4-5 on the integer grid, symmetric,
    no zero point; per token as in BitNet b1.58 Sec. 2).

    x_q = Clip(round(x * Q_b / gamma), -Q_b, Q_b - 1) * gamma / Q_b with Q_b = 2^(bits-1),
    gamma = max(max_j |x_j|, eps) over the last dimension. Straight-through gradient
    (identity). Shapes: [..., F] -> [..., F].
    """
    qb = float(1 << (bits - 1))
    gamma = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(eps)
    xq = torch.round(x.detach() * (qb / gamma)).clamp(-qb, qb - 1) * (gamma / qb)
    return x + (xq - x).detach()


class AbsMaxActivation(ActQuantizer):
    """Per-token absmax activation quantizer; ``norm`` "none", "layernorm" or "rmsnorm"
    (no affine parameters) is applied first. Bits 2, 4 or 8; estimator "ste" only."""

    name = "absmax"
    supported_bits = (2, 4, 8)
    norm = "none"
    NORMS = ("none", "layernorm", "rmsnorm")

    def __init__(self, bits: int = 8, estimator: str | Estimator = "ste",
                 estimator_options: dict[str, Any] | None = None, eps: float = 1e-5) -> None:
        super().__init__(bits)
        name = estimator.name if isinstance(estimator, Estimator) else estimator
        choice(name, ("ste",), f"estimator for activation quantizer {self.name!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"invalid eps {eps!r} for activation quantizer {self.name!r}; "
                             "must be > 0")
        self.eps = float(eps)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The normalisation before the quantization (none, LN or RMSNorm, no affine)."""
        if self.norm == "layernorm":
            return F.layer_norm(x, x.shape[-1:], eps=self.eps)
        if self.norm == "rmsnorm":
            return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return absmax_quantize(self.normalize(x), self.bits, self.eps)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, norm={self.norm}"


ACT_QUANTIZERS.register("absmax", "per-token absmax activations, Q_b = 2^(b-1) (BitNet Eq. 4-5)")(
    AbsMaxActivation)


@ACT_QUANTIZERS.register("absmax_ln",
                        "LayerNorm (no affine) then per-token absmax (BitNet Eq. 11-12)")
class LNAbsMaxActivation(AbsMaxActivation):
    """LN(x) = (x - E x) / sqrt(Var x + eps), then per-token absmax (BitNet Eq. 11-12)."""

    name = "absmax_ln"
    norm = "layernorm"


@ACT_QUANTIZERS.register("absmax_rms", "RMSNorm (no affine) then per-token absmax (BitNet b1.58)")
class RMSAbsMaxActivation(AbsMaxActivation):
    """x / sqrt(mean(x^2) + eps), then per-token absmax (BitNet b1.58's RMSNorm)."""

    name = "absmax_rms"
    norm = "rmsnorm"
