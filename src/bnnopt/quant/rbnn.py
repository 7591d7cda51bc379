"""RBNN: Rotated Binary Neural Network (Lin et al., NeurIPS 2020).

Per quantized layer with weight W of shape (C_out, ...), n = numel / C_out weights
per output channel (written here from the paper; its public code, github
lmbxmu/RBNN, was read to match the details):

* standardisation: w_i <- (w_i - mean(w_i)) / std(w_i) for every output channel i;
* bi-rotation (Sec. 3.2): w_i viewed as a matrix X_i (a x b, a·b = n, a the largest
  divisor of n not above √n); two orthogonal matrices shared by the layer rotate
  every channel, X_i -> R1ᵀ X_i R2 (= (R2ᵀ ⊗ R1ᵀ) vec(X_i), a rotation of w_i,
  so ‖w_i‖ is kept). R1, R2 are learned by alternating maximisation of
  Σ_i tr(B_iᵀ R1ᵀ X_i R2) with B_i = sign(R1ᵀ X_i R2): three rounds of
  B <- sign(R1ᵀ X R2); R1 <- V1 U1ᵀ from svd(Σ B_i R2ᵀ X_iᵀ) = U1 S1 V1ᵀ;
  R2 <- U2 V2ᵀ from svd(Σ X_iᵀ R1 B_i) = U2 S2 V2ᵀ, at the start of every epoch
  (:meth:`RBNNQuantizer.update_rotation`, called by the ``rbnn`` method);
* adjustable rotated weight (Sec. 3.3): w~_i = w_i + |sin θ_i| (R(w_i) - w_i),
  θ_i learnable per output channel (initialised to π/2: the full rotation), the
  rotated weight R(w_i) detached, as in the public code;
* binarisation Q = α_i · sign(w~_i), α_i learnable per output channel
  (initialised to mean|w_i|), with the training-aware sign approximation
  (Sec. 3.4) as backward:

      F(x) = k·(√2·t·x - sign(x)·t²x²/2)   for |x| < √2/t,   k·sign(x) otherwise
      F'(x) = k·max(√2·t - t²|x|, 0)

  t = T_min·(T_max/T_min)^p (T_min 1e-2, T_max 10, p = epoch / epochs as in the
  public code), k = max(1/t, 1).

Activations. By default the ``rbnn`` method leaves the layer inputs to the usual
activation policy (float, or ``act_quantizer="sign"`` with its estimator). The public
code's binarized conv instead standardises every sample's input and binarizes it
with its own activation estimator; the activation quantizer ``standardized``
(:class:`RBNNActivation`, method option ``act_path="official"``) reproduces that:

    a~_n = (a_n - mean(a_n)) / std(a_n)      per sample n, over every dim but the first
                                             (unbiased std), gradient through mean and std
    bits = 1:  a_q = sign(a~) with backward  F'_a(x) = max(2·sqrt(t_a²/2) - t_a²|x|, 0),
               k = 1 and t_a = max(t, 1)     (``rbnn_act_sign``; t as above)
    bits = 32: a_q = a~                      (the public code's W1A32 mode)

The differences that remain from the public layer: sign(0) := +1 here (torch.sign(0) = 0
there; a standardised input is exactly 0 with probability 0), and α scales the weight
here, Q = α ⊙ sign(w~), where the public code scales the convolution's output
(equal without a bias, up to rounding).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bnnopt.quant._functions import AnnealedSign
from bnnopt.quant.activation import SignActivation
from bnnopt.quant.estimators import Estimator
from bnnopt.quant.weight import WeightQuantizer
from bnnopt.registry import ACT_QUANTIZERS, ESTIMATORS, QUANTIZERS

__all__ = ["TrainingAwareSign", "ActTrainingAwareSign", "RBNNSignEstimator",
           "RBNNActSignEstimator", "RBNNActivation", "RBNNQuantizer", "rbnn_schedule",
           "standardize_per_sample", "training_aware_sign_value", "matrix_shape"]


def rbnn_schedule(p: float, t_min: float = 1e-2, t_max: float = 10.0) -> tuple[float, float]:
    """(t, k) at progress p: t = t_min (t_max/t_min)^p, k = max(1/t, 1)."""
    t = t_min * (t_max / t_min) ** p
    return t, max(1.0 / t, 1.0)


def training_aware_sign_value(x: torch.Tensor, t: float, k: float) -> torch.Tensor:
    """The closed form F(x) whose derivative is the backward (for analysis and tests)."""
    inside = x.abs() < math.sqrt(2) / t
    poly = k * (math.sqrt(2) * t * x - torch.sign(x) * t * t * x * x / 2)
    return torch.where(inside, poly, k * torch.sign(x))


class TrainingAwareSign(AnnealedSign):
    """sign(x) forward (sign(0) := +1); backward k·max(√2 t - t²|x|, 0)."""

    @staticmethod
    def surrogate(x, t: float, k: float):
        return (k * (math.sqrt(2) * t - t * t * x.abs())).clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * TrainingAwareSign.surrogate(x, ctx.t, ctx.k), None, None


@ESTIMATORS.register("rbnn_sign", "RBNN training-aware sign approximation, t: 1e-2 -> 10")
class RBNNSignEstimator(Estimator):
    """RBNN's training-aware approximation of sign (see the module docstring)."""

    name = "rbnn_sign"

    def __init__(self, t_min: float = 1e-2, t_max: float = 10.0) -> None:
        super().__init__()
        if not (0 < t_min <= t_max):
            raise ValueError(f"invalid rbnn_sign range t_min={t_min!r}, t_max={t_max!r}; "
                             "need 0 < t_min <= t_max")
        self.t_min, self.t_max = float(t_min), float(t_max)

    def forward(self, x):
        t, k = rbnn_schedule(self.progress, self.t_min, self.t_max)
        return TrainingAwareSign.apply(x, t, k)

    def extra_repr(self) -> str:
        t, k = rbnn_schedule(self.progress, self.t_min, self.t_max)
        return f"progress={self.progress:.3f}, t={t:.4g}, k={k:.4g}"


class ActTrainingAwareSign(AnnealedSign):
    """sign(x) forward (sign(0) := +1); backward g · max(k (2·sqrt(t²/2) - t²|x|), 0).

    The training-aware sign's derivative with its slope √2·t evaluated as 2·sqrt(t²/2),
    the arithmetic of the public RBNN code's activation estimator (so that float64
    results agree bit for bit). :class:`RBNNActSignEstimator` passes k = 1, t = max(t, 1).
    """

    @staticmethod
    def surrogate(x, t: float, k: float):
        return (k * (2 * math.sqrt(t * t / 2) - t * t * x.abs())).clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ActTrainingAwareSign.surrogate(x, ctx.t, ctx.k), None, None


@ESTIMATORS.register("rbnn_act_sign",
                     "RBNN public code's activation sign approximation: k = 1, t = max(t, 1)")
class RBNNActSignEstimator(RBNNSignEstimator):
    """RBNN's activation estimator (public code): the training-aware sign with k = 1 and
    t_a = max(t, 1), t = t_min (t_max/t_min)^p as for the weights (module docstring)."""

    name = "rbnn_act_sign"

    def forward(self, x):
        t, _ = rbnn_schedule(self.progress, self.t_min, self.t_max)
        return ActTrainingAwareSign.apply(x, max(t, 1.0), 1.0)

    def extra_repr(self) -> str:
        t, _ = rbnn_schedule(self.progress, self.t_min, self.t_max)
        return f"progress={self.progress:.3f}, t={max(t, 1.0):.4g}, k=1"


def standardize_per_sample(a: torch.Tensor) -> torch.Tensor:
    """(a_n - mean a_n) / std a_n for every sample n (dim 0), over all other dims.

    Unbiased std (``torch.std``); the gradient flows through the mean and the std.
    Shapes: [N, ...] -> [N, ...] (at least 2 dims).
    """
    if a.dim() < 2:
        raise ValueError(f"invalid activation shape {tuple(a.shape)}; rbnn standardises "
                         "per sample and needs a batch dim plus at least one more")
    dims = tuple(range(1, a.dim()))
    a1 = a - a.mean(dims, keepdim=True)
    return a1 / a1.std(dims, keepdim=True)


@ACT_QUANTIZERS.register("standardized", "per-sample standardised activations, then sign "
                                         "(1 bit, RBNN public code) or float (32)")
class RBNNActivation(SignActivation):
    """RBNN's activation path (public code): a -> standardize_per_sample(a), then
    sign with ``rbnn_act_sign`` for bits = 1, or left in float for bits = 32."""

    name = "standardized"
    supported_bits = (1, 32)

    def __init__(self, bits: int = 1, estimator: Any = "rbnn_act_sign",
                 estimator_options: dict[str, Any] | None = None) -> None:
        super().__init__(bits, estimator, estimator_options)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        a = standardize_per_sample(a)
        return a if self.bits == 32 else self.estimator(a)


def matrix_shape(n: int) -> tuple[int, int]:
    """(a, b) with a·b = n and a the largest divisor of n not above √n."""
    for a in range(int(math.isqrt(n)), 0, -1):
        if n % a == 0:
            return a, n // a
    return 1, n  # pragma: no cover - a = 1 always divides


def _random_orthogonal(n: int, dtype, device) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # Haar-distributed
    return q.to(dtype=dtype, device=device)


@QUANTIZERS.register("rbnn", "RBNN (NeurIPS 2020): bi-rotated, adjustable, alpha*sign, per channel")
class RBNNQuantizer(WeightQuantizer):
    """Q(W) = α ⊙ sign(w~), w~ the adjustable bi-rotated standardised weight (module docstring).

    Shape-dependent state is created by :meth:`attach` (``bnnopt.nn.binarize_`` calls it
    when it swaps the layer, before any optimizer exists): buffers R1 (a, a), R2 (b, b)
    and parameters alpha, theta of shape (C_out, 1, ..., 1).
    """

    name = "rbnn"
    supported_bits = (1,)

    def __init__(self, bits: int = 1, estimator: str | Estimator = "rbnn_sign",
                 estimator_options: dict[str, Any] | None = None,
                 rotation_iters: int = 3) -> None:
        super().__init__(bits, estimator, estimator_options)
        if isinstance(rotation_iters, bool) or not isinstance(rotation_iters, int) or rotation_iters < 0:
            raise ValueError(f"invalid rotation_iters {rotation_iters!r}; must be an integer >= 0")
        self.rotation_iters = rotation_iters
        self.shape: tuple[int, int] | None = None

    @property
    def attached(self) -> bool:
        return self.shape is not None

    def attach(self, weight: torch.Tensor) -> None:
        """Create R1, R2 (random orthogonal), alpha = mean|w_i|, theta = π/2 for ``weight``."""
        if weight.dim() < 2:
            raise ValueError(f"rbnn needs a weight with an output-channel dim, got {tuple(weight.shape)}")
        out, n = weight.shape[0], weight[0].numel()
        a, b = matrix_shape(n)
        kw = {"dtype": weight.dtype, "device": weight.device}
        self.register_buffer("R1", _random_orthogonal(a, **kw))
        self.register_buffer("R2", _random_orthogonal(b, **kw))
        view = (out,) + (1,) * (weight.dim() - 1)
        with torch.no_grad():
            alpha = weight.detach().abs().reshape(out, -1).mean(1).reshape(view)
        self.alpha = nn.Parameter(alpha.clone())
        self.theta = nn.Parameter(torch.full(view, math.pi / 2, **kw))
        self.shape = (a, b)

    @staticmethod
    def standardize(w: torch.Tensor) -> torch.Tensor:
        """(w_i - mean w_i) / std w_i per output channel (unbiased std, as torch.std)."""
        dims = tuple(range(1, w.dim()))
        w1 = w - w.mean(dims, keepdim=True)
        return w1 / w1.std(dims, keepdim=True)

    def rotate(self, w2: torch.Tensor) -> torch.Tensor:
        """R1ᵀ X_i R2 for every output channel i, reshaped like ``w2``."""
        a, b = self.shape
        x = w2.reshape(w2.shape[0], a, b)
        return (self.R1.t() @ x @ self.R2).reshape(w2.shape)

    @torch.no_grad()
    def update_rotation(self, weight: torch.Tensor) -> None:
        """``rotation_iters`` rounds of the alternating R1 / R2 update (module docstring)."""
        if not self.attached:
            self.attach(weight)
        a, b = self.shape
        x = self.standardize(weight.detach()).reshape(weight.shape[0], a, b)
        r1, r2 = self.R1, self.R2
        for _ in range(self.rotation_iters):
            bmat = torch.sign(r1.t() @ x @ r2)
            u1, _, v1h = torch.linalg.svd((bmat @ r2.t() @ x.transpose(1, 2)).sum(0))
            r1 = v1h.t() @ u1.t()
            u2, _, v2h = torch.linalg.svd((x.transpose(1, 2) @ r1 @ bmat).sum(0))
            r2 = u2 @ v2h
        self.R1.copy_(r1)
        self.R2.copy_(r2)

    def pre(self, w: torch.Tensor) -> torch.Tensor:
        if not self.attached:
            self.attach(w)
        w2 = self.standardize(w)
        rotated = self.rotate(w2).detach()
        return w2 + torch.abs(torch.sin(self.theta)) * (rotated - w2)

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        if not self.attached:
            self.attach(w)
        return self.alpha

    def scale_numel(self, shape) -> int:
        return int(shape[0])

    def extra_repr(self) -> str:
        return f"bits={self.bits}, matrix={self.shape}, rotation_iters={self.rotation_iters}"
