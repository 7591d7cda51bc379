"""Backward estimators of the binarization sign(x): stateful modules + functional forms.

An *estimator* computes y = sign(x) (sign(0) := +1) in the forward pass and
supplies a surrogate derivative dy/dx ~= s(x) in the backward pass (see
:mod:`bnnopt.quant._functions` for the table of formulas). Estimators are
``nn.Module`` objects without parameters or buffers, so they never change a
state dict; annealed ones hold a training *progress* p in [0, 1] set by
``set_progress(p)`` (the Trainer passes p = epoch / (epochs - 1)).

Registered in ``ESTIMATORS`` (construct with ``ESTIMATORS.get(name)(**options)``):

=============  ==============================================================
ste            identity STE, s = 1
clipped_ste    s = 1{|x| <= 1} (BinaryConnect / Hubara et al.)
approx_sign    Bi-Real ApproxSign, s = max(2 - 2|x|, 0)
ede            IR-Net EDE, s = k t (1 - tanh^2(t x)), t = t_min (t_max/t_min)^p,
               k = max(1/t, 1)
reste          ReSTE, power o = o_min + (o_max - o_min) p, thresholds t, interval
=============  ==============================================================

``make_estimator`` accepts a name, an Estimator subclass or an instance (copied).
Every estimator also has ``grad(x)``: the surrogate derivative s(x) itself, as a
tensor shaped like x (no autograd), e.g. for analysis or learned-gradient code.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from bnnopt.quant._functions import EDE, ApproxSign, ReSTE, SignClipped, SignSTE
from bnnopt.quant._lookup import resolve, short_repr
from bnnopt.registry import ESTIMATORS

__all__ = [
    "Estimator", "STEEstimator", "ClippedSTEEstimator", "ApproxSignEstimator",
    "EDEEstimator", "ReSTEEstimator", "make_estimator",
    "sign_ste", "sign_clipped_ste", "approx_sign", "ede", "reste", "ede_schedule",
    "reste_schedule",
]


# ---------------------------------------------------------------- functional forms
def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with the identity straight-through derivative."""
    return SignSTE.apply(x)


def sign_clipped_ste(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with derivative 1{|x| <= 1}."""
    return SignClipped.apply(x)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with Bi-Real's derivative max(2 - 2|x|, 0)."""
    return ApproxSign.apply(x)


def ede(x: torch.Tensor, t: float, k: float | None = None) -> torch.Tensor:
    """sign(x) with IR-Net's derivative k t (1 - tanh^2(t x)); k defaults to max(1/t, 1)."""
    if not t > 0:
        raise ValueError(f"invalid EDE t {t!r}; must be > 0")
    return EDE.apply(x, t, max(1.0 / t, 1.0) if k is None else k)


def reste(x: torch.Tensor, o: float, t: float = 1.5, interval: float = 0.1) -> torch.Tensor:
    """sign(x) with ReSTE's rectified power derivative (o >= 1, thresholds t > interval > 0)."""
    _check_reste(o, t, interval)
    return ReSTE.apply(x, o, t, interval)


def ede_schedule(p: float, t_min: float = 1e-3, t_max: float = 10.0) -> tuple[float, float]:
    """IR-Net's (t, k) at progress p: t = t_min (t_max/t_min)^p (log-spaced), k = max(1/t, 1)."""
    t = t_min * (t_max / t_min) ** p
    return t, max(1.0 / t, 1.0)


def reste_schedule(p: float, o_min: float = 1.0, o_max: float = 3.0) -> float:
    """ReSTE's power at progress p: o = o_min + (o_max - o_min) p (linear, 1 -> 3 by default)."""
    return o_min + (o_max - o_min) * p


def _check_reste(o: float, t: float, interval: float) -> None:
    if not o >= 1:
        raise ValueError(f"invalid ReSTE power o {o!r}; must be >= 1")
    if not (interval > 0 and t > interval):
        raise ValueError(f"invalid ReSTE thresholds t={t!r}, interval={interval!r}; "
                         "need t > interval > 0")


def _check_progress(p: float) -> float:
    p = float(p)
    if not (0.0 <= p <= 1.0) or math.isnan(p):
        raise ValueError(f"invalid progress {p!r}; must be in [0, 1]")
    return p


# ---------------------------------------------------------------- stateful estimators
class Estimator(nn.Module):
    """Base: y = sign(x) (sign(0) := +1) with a surrogate derivative. Shapes: any -> same."""

    name = "estimator"

    def __init__(self) -> None:
        super().__init__()
        self.progress = 0.0

    def set_progress(self, p: float) -> None:
        """Set training progress p in [0, 1] (0 = first epoch, 1 = last)."""
        self.progress = _check_progress(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative s(x) at the current progress (autograd of forward at x)."""
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            self.forward(x).backward(torch.ones_like(x))
        return x.grad

    def extra_repr(self) -> str:
        return f"progress={self.progress:.3f}"


@ESTIMATORS.register("ste", "identity straight-through estimator, d sign/dx := 1 (Bengio 2013)")
class STEEstimator(Estimator):
    """Identity STE: sign(x) forward, gradient passed through unchanged."""

    name = "ste"

    def forward(self, x):
        return SignSTE.apply(x)


@ESTIMATORS.register("clipped_ste", "clipped STE, d sign/dx := 1{|x|<=1} (BinaryConnect/BNN)")
class ClippedSTEEstimator(Estimator):
    """Clipped STE (Hubara et al. 2016): gradient 1{|x| <= 1}, boundary included."""

    name = "clipped_ste"

    def forward(self, x):
        return SignClipped.apply(x)


@ESTIMATORS.register("approx_sign", "Bi-Real ApproxSign, d sign/dx := max(2-2|x|, 0)")
class ApproxSignEstimator(Estimator):
    """Bi-Real Net (Liu et al. ECCV 2018): ApproxSign gradient max(2 - 2|x|, 0)."""

    name = "approx_sign"

    def forward(self, x):
        return ApproxSign.apply(x)


@ESTIMATORS.register("ede", "IR-Net EDE, k*t*(1-tanh^2(tx)), t: 1e-3 -> 10 log-spaced")
class EDEEstimator(Estimator):
    """IR-Net Error Decay Estimator (Qin et al. CVPR 2020, Sec. 3.3).

    d sign/dx := k t (1 - tanh^2(t x)) with t = t_min * (t_max/t_min)^p
    (log-spaced from t_min to t_max as progress p goes 0 -> 1) and k = max(1/t, 1).
    Early on (small t, k = 1/t) this is ~ the identity STE; late (large t) it
    approaches the true (Dirac) derivative of sign.
    """

    name = "ede"

    def __init__(self, t_min: float = 1e-3, t_max: float = 10.0) -> None:
        super().__init__()
        if not (0 < t_min <= t_max):
            raise ValueError(f"invalid EDE range t_min={t_min!r}, t_max={t_max!r}; "
                             "need 0 < t_min <= t_max")
        self.t_min, self.t_max = float(t_min), float(t_max)

    @property
    def t(self) -> float:
        return ede_schedule(self.progress, self.t_min, self.t_max)[0]

    @property
    def k(self) -> float:
        return ede_schedule(self.progress, self.t_min, self.t_max)[1]

    def forward(self, x):
        t, k = ede_schedule(self.progress, self.t_min, self.t_max)
        return EDE.apply(x, t, k)

    def extra_repr(self) -> str:
        return f"progress={self.progress:.3f}, t={self.t:.4g}, k={self.k:.4g}"


@ESTIMATORS.register("reste", "ReSTE rectified power sign(x)|x|^(1/o), o: 1 -> 3 (ICCV 2023)")
class ReSTEEstimator(Estimator):
    """ReSTE (Wu et al. ICCV 2023): derivative of sign(x)|x|^(1/o), rectified.

    o = o_min + (o_max - o_min) p (1 -> 3 by default); t = 1.5 cuts the gradient
    beyond |x| > t; inside |x| <= interval (0.1) the secant slope interval^(1/o)/interval
    replaces the unbounded derivative. o = 1 is the clipped STE with clip t.
    """

    name = "reste"

    def __init__(self, o_min: float = 1.0, o_max: float = 3.0, t: float = 1.5,
                 interval: float = 0.1) -> None:
        super().__init__()
        _check_reste(o_min, t, interval)
        _check_reste(o_max, t, interval)
        self.o_min, self.o_max = float(o_min), float(o_max)
        self.t, self.interval = float(t), float(interval)

    @property
    def o(self) -> float:
        return reste_schedule(self.progress, self.o_min, self.o_max)

    def forward(self, x):
        return ReSTE.apply(x, self.o, self.t, self.interval)

    def extra_repr(self) -> str:
        return f"progress={self.progress:.3f}, o={self.o:.4g}, t={self.t}, interval={self.interval}"


def make_estimator(spec: "str | type[Estimator] | Estimator", **options) -> Estimator:
    """A new estimator from ``spec``: a registered name or an Estimator subclass (built
    with ``options``), or an Estimator instance (deep-copied; ``options`` must be empty).

    ValueError on an unknown name (listing the valid ones), a value of another type,
    or options the estimator does not take.
    """
    cls, instance = resolve(ESTIMATORS, spec, Estimator)
    if instance is not None:
        if options:
            raise ValueError(f"invalid options {sorted(options)} for the estimator instance "
                             f"{short_repr(instance)}; pass its class to set options")
        return copy.deepcopy(instance)
    try:
        return cls(**options)
    except TypeError as err:
        raise ValueError(
            f"invalid options {sorted(options)} for estimator {spec!r}: {err}") from None
