"""Autograd Functions: the binarization sign(x) with surrogate derivatives, and k-bit rounding.

Every Function here has the same *forward*::

    sign(x) = +1 if x >= 0 else -1          (convention: sign(0) := +1)

so a binary weight never takes the value 0 and fits in one bit. They differ only
in the *backward*, the surrogate derivative d sign(x)/dx ~= s(x) that replaces the
true derivative (0 almost everywhere). With g the incoming gradient dL/dy,
dL/dx = g * s(x):

=============  ==============================================  ===============================
Function       s(x)                                            paper
=============  ==============================================  ===============================
SignSTE        1                                               Bengio et al. 2013; DoReFa-Net
SignClipped    1{|x| <= 1} (boundary inclusive)                BinaryConnect; Hubara et al. 2016
ApproxSign     2 - 2|x| on |x| <= 1, else 0                    Bi-Real Net (Liu et al. 2018)
EDE            k * t * (1 - tanh^2(t x))                       IR-Net (Qin et al. CVPR 2020)
ReSTE          (1/o)|x|^(1/o - 1)   on interval < |x| <= t     ReSTE (Wu et al. ICCV 2023)
               interval^(1/o) / interval  on |x| <= interval
               0 on |x| > t
=============  ==============================================  ===============================

k-bit rounding (DoReFa-Net, Zhou et al. 2016, Eq. 5):
quantize_k(x) = round((2^k - 1) x) / (2^k - 1)
has the straight-through derivative 1 (or 1{|u| <= 1} with ``clip``).

All tensors may have any shape; outputs have the shape of the input x.
"""
from __future__ import annotations

import torch
from torch.autograd import Function


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with sign(0) := +1, as x's dtype: values in {-1, +1}. No gradient."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


class SignSTE(Function):
    """sign(x) forward; identity straight-through backward, s(x) = 1."""

    @staticmethod
    def forward(ctx, x):
        return binary_sign(x)

    @staticmethod
    def backward(ctx, g):
        return g


class SignClipped(Function):
    """sign(x) forward; clipped STE backward, s(x) = 1{|x| <= 1} (inclusive at +-1)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class ApproxSign(Function):
    """sign(x) forward; Bi-Real ApproxSign backward, s(x) = max(2 - 2|x|, 0).

    This is the derivative of the piecewise quadratic F(x) = 2x + x^2 (x in [-1, 0)),
    2x - x^2 (x in [0, 1)), sign(x) elsewhere (Bi-Real Net, Sec. 3.2).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (2 - 2 * x.abs()).clamp_min(0)


class AnnealedSign(Function):
    """sign(x) forward (sign(0) := +1); backward g * s(x; t, k) for two plain floats t, k.

    Subclasses define the surrogate derivative ``surrogate(x, t, k)`` (IR-Net's EDE,
    RBNN's training-aware sign) and a ``backward`` that applies it; t and k come from
    the caller's annealing schedule. ``backward`` is a staticmethod in every subclass
    (not inherited as a classmethod), so that ``torch.compile`` traces it without a
    graph break.
    """

    @staticmethod
    def surrogate(x, t: float, k: float):
        raise NotImplementedError

    @staticmethod
    def forward(ctx, x, t: float, k: float):
        ctx.save_for_backward(x)
        ctx.t, ctx.k = float(t), float(k)
        return binary_sign(x)


def ede_surrogate(x: torch.Tensor, t: float, k: float) -> torch.Tensor:
    """IR-Net's EDE derivative s(x) = k t (1 - tanh^2(t x)) (Qin et al. CVPR 2020, Sec. 3.3)."""
    return k * t * (1 - torch.tanh(t * x) ** 2)


class EDE(AnnealedSign):
    """sign(x) forward; IR-Net Error Decay Estimator backward.

    s(x) = k * t * (1 - tanh^2(t x)), the derivative of IR-Net's g(x) = k tanh(t x);
    t and k are plain floats chosen by the caller (see :class:`bnnopt.quant.EDEEstimator`).
    """

    surrogate = staticmethod(ede_surrogate)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ede_surrogate(x, ctx.t, ctx.k), None, None


class ReSTE(Function):
    """sign(x) forward; ReSTE rectified-power backward.

    The surrogate forward is the rectified power function f_o(x) = sign(x)|x|^(1/o)
    (ReSTE, Wu et al. ICCV 2023). Its derivative is unbounded at 0, so inside |x| <= interval the
    secant slope f_o(interval) / interval = interval^(1/o) / interval is used, and
    the gradient is cut to 0 beyond |x| > t::

        s(x) = interval^(1/o - 1)        |x| <= interval
               (1/o) |x|^(1/o - 1)       interval < |x| <= t
               0                         |x| > t
    """

    @staticmethod
    def forward(ctx, x, o: float, t: float, interval: float):
        ctx.save_for_backward(x)
        ctx.o, ctx.t, ctx.interval = float(o), float(t), float(interval)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        o, t, interval = ctx.o, ctx.t, ctx.interval
        a = x.abs()
        inner = interval ** (1.0 / o) / interval
        # clamp keeps pow finite where the branch is not selected (|x| near 0).
        power = (1.0 / o) * a.clamp_min(interval) ** (1.0 / o - 1.0)
        s = torch.where(a <= interval, torch.full_like(a, inner),
                        torch.where(a <= t, power, torch.zeros_like(a)))
        return g * s, None, None, None


def kbit_codes(u: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes c = round(n (clamp(u, -1, 1) + 1) / 2) in [0, n], n = 2^bits - 1 (float).

    For bits == 1 this is c = 1{u >= 0} (sign(0) := +1), not round(), so that the
    1-bit grid agrees with :func:`binary_sign` at u = 0.
    """
    if bits == 1:
        return (u >= 0).to(u.dtype)
    n = (1 << bits) - 1
    return torch.round(n * (u.clamp(-1, 1) + 1) / 2)


def levels_from_codes(codes: torch.Tensor, bits: int, scale) -> torch.Tensor:
    """The one decode formula of every weight quantizer: scale * ((2/n) c - 1), n = 2^bits - 1.

    The grid {-1, -1 + 2/n, ..., 1} is symmetric and has 2^bits levels (for 1 bit: {-1, +1}).
    ``scale`` is a float or a tensor broadcastable to ``codes``.
    """
    n = (1 << bits) - 1
    return scale * ((2.0 / n) * codes - 1.0)


class KBitRound(Function):
    """u -> (2/n) round(n (clamp(u,-1,1) + 1) / 2) - 1 on the 2^bits-level grid in [-1, 1].

    This is DoReFa's 2 quantize_k((u + 1)/2) - 1 (FSG Eq. 2). Backward: straight
    through, s(u) = 1 (``clip=False``) or s(u) = 1{|u| <= 1} (``clip=True``).
    """

    @staticmethod
    def forward(ctx, u, bits: int, clip: bool):
        ctx.clip = bool(clip)
        if clip:
            ctx.save_for_backward(u)
        return levels_from_codes(kbit_codes(u, bits), bits, 1.0)

    @staticmethod
    def backward(ctx, g):
        if ctx.clip:
            (u,) = ctx.saved_tensors
            g = g * (u.abs() <= 1).to(g.dtype)
        return g, None, None


class UnitQuantize(Function):
    """DoReFa k-bit activation: x -> round(n clamp(x, 0, 1)) / n, n = 2^bits - 1 (DoReFa Eq. 5).

    Backward: s(x) = 1{0 <= x <= 1} (straight through the rounding, true derivative of the clip).
    """

    @staticmethod
    def forward(ctx, x, bits: int):
        ctx.save_for_backward(x)
        n = (1 << bits) - 1
        return torch.round(n * x.clamp(0, 1)) / n

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ((x >= 0) & (x <= 1)).to(g.dtype), None
