"""The "lossaware" weight quantizer: W_hat = alpha * b held in buffers, set by the optimizer.

In the loss-aware family (LAB, LAQ, BLAQ) quantization is part of the optimizer
step: after updating the latent weight W with the diagonal-Hessian estimate D,
the optimizer solves ``min_{alpha, b} ||sqrt(D) (alpha b - W)||^2`` (see
:mod:`bnnopt.methods.lossaware.levels`) and stores the result here. The layer's forward
pass then uses the stored ``W_hat``:

    forward(W) = table[codes] * alpha           value: the stored W_hat
    dforward/dW = identity                      the gradient dL/dW_hat reaches W

so ``W.grad`` after backward is the gradient w.r.t. the quantized weights that
LAB/LAQ's Adam-style update needs (LAB Algorithm 1, step 2). ``alpha`` (0-d) and
``codes`` (uint8, shape of W) are buffers: ``model.state_dict()`` and
``model.eval()`` reproduce exactly the quantized network, and
``decode(encode(W)) == forward(W)`` bit for bit (same gather and product).

The stored values change only through :meth:`LossAwareQuantizer.requantize`
(called by the loss-aware optimizers after every step). A quantizer that has
never been set initialises itself on its first forward with D = I and the exact
solver (``solve_exact``), i.e. the D-free optimum; so does ``prepare`` of the
loss-aware methods, so that a freshly prepared model is already quantized.

Levels: ``levels="linear"``, ``"log"`` (LAQ; they differ at 4 bits, 2 bits is
ternary for both) or ``"pow2"`` (BLAQ's powers of two without zero; see
:mod:`bnnopt.methods.lossaware.levels`). 8 bits (linear levels only) is for the first/last
layers of a per-layer bit assignment (BLAQ's ImageNet protocol). ``estimator`` must be "ste": the
straight-through identity is
the loss-aware family's gradient (the gradient w.r.t. W_hat, LAB Sec. 3.1).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.autograd import Function

from bnnopt.methods.lossaware.levels import check_levels, code_table, levels_of, solve, solve_exact
from bnnopt.quant import WeightQuantizer
from bnnopt.registry import QUANTIZERS, choice

__all__ = ["LossAwareQuantizer", "is_lossaware"]


def _levels_times(table: torch.Tensor, codes: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``table[codes] * alpha`` element-wise, bit for bit, computed fast.

    m bits: a gather from the scaled table (the same float products). 1 bit:
    ``c * (2 alpha) - alpha``, which is exactly ``+-alpha`` (2 alpha is exact and
    2 alpha - alpha = alpha exactly), i.e. ``table[c] * alpha`` for table (-1, 1).
    """
    if table.numel() == 2:
        return codes.to(alpha.dtype) * (2 * alpha) - alpha
    return levels_of(codes, table * alpha)


class _StoredQuant(Function):
    """Forward: ``table[codes] * alpha`` (ignores W's values); backward: identity to W."""

    @staticmethod
    def forward(ctx, w, codes, alpha, table):
        return _levels_times(table, codes, alpha)

    @staticmethod
    def backward(ctx, g):
        return g, None, None, None


@QUANTIZERS.register("lossaware", "LAB/LAQ/BLAQ alpha*b, b in 1/2/4/8-bit linear|log|pow2 levels, "
                                  "set by the loss-aware optimizer")
class LossAwareQuantizer(WeightQuantizer):
    """Stored loss-aware quantization of one layer (see module docstring).

    Args:
        bits: 1, 2, 4 or 8 (8: linear levels only).
        estimator: must be "ste" (identity to the latent weight).
        levels: "linear" or "log" (LAQ Sec. 3.1), "pow2" (BLAQ).
    Buffers: ``alpha`` [] float, ``codes`` uint8 shaped like the weight (empty until set).
    """

    name = "lossaware"
    supported_bits = (1, 2, 4, 8)

    def __init__(self, bits: int = 1, estimator: Any = "ste",
                 estimator_options: dict[str, Any] | None = None, levels: str = "linear") -> None:
        super().__init__(bits, estimator, estimator_options)
        if self.estimator.name != "ste":
            raise ValueError(f"invalid estimator {self.estimator.name!r} for quantizer "
                             f"'lossaware'; valid: ste (the gradient w.r.t. W_hat goes to W)")
        check_levels(self.bits, levels)
        self.levels = levels
        self.register_buffer("alpha", torch.zeros(()))
        self.register_buffer("codes", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("table", code_table(self.bits, self.levels), persistent=False)
        self.last_iterations = 0

    # -- state -----------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return self.codes.numel() > 0

    @torch.no_grad()
    def requantize(self, w: torch.Tensor, d: torch.Tensor | None = None, *,
                   max_iter: int = 10, solver: str = "alternate",
                   scale_rule: str = "exact") -> None:
        """Set ``W_hat = argmin_{alpha, b} sum d (alpha b - w)^2`` (d=None: D = I).

        ``solver="alternate"``: LAQ's alternating minimisation warm-started from the
        current codes (``max_iter`` rounds, alpha-step ``scale_rule``, see
        :func:`~bnnopt.methods.lossaware.levels.solve`); ``"exact"``: the global minimiser.
        """
        choice(solver, ("alternate", "exact"), "solver")
        w = w.detach()
        if solver == "exact":
            alpha, codes = solve_exact(w, d, self.bits, self.levels)
            self.last_iterations = 0
        else:
            init = self.codes if self.codes.shape == w.shape else None
            alpha, codes, self.last_iterations = solve(w, d, self.bits, self.levels,
                                                       init_codes=init, max_iter=max_iter,
                                                       scale_rule=scale_rule)
        if self.codes.shape != w.shape or self.codes.device != w.device:
            self.codes = torch.empty(w.shape, dtype=torch.uint8, device=w.device)
        self.codes.copy_(codes)
        self.alpha = self.alpha.to(device=w.device, dtype=w.dtype)
        self.alpha.copy_(alpha)

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of (alpha, codes), for :meth:`restore` (BLAQ's backtrack)."""
        return self.alpha.clone(), self.codes.clone()

    def restore(self, snap: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.alpha.copy_(snap[0])
        self.codes.copy_(snap[1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the codes buffer is created lazily: take the saved shape before copying
        key = prefix + "codes"
        if key in state_dict and state_dict[key].shape != self.codes.shape:
            self.codes = torch.empty(state_dict[key].shape, dtype=torch.uint8,
                                     device=self.codes.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- WeightQuantizer interface ---------------------------------------------------------
    def scale_numel(self, shape) -> int:
        return 1

    def _ensure(self, w: torch.Tensor) -> None:
        if self.codes.shape != w.shape:
            self.requantize(w, None, solver="exact")

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """The stored W_hat (shape and dtype of ``w``); gradient passes to ``w`` unchanged."""
        self._ensure(w)
        table = self.table.to(device=w.device, dtype=self.alpha.dtype)
        return _StoredQuant.apply(w, self.codes, self.alpha, table).to(w.dtype)

    @torch.no_grad()
    def encode(self, w: torch.Tensor) -> dict[str, Any]:
        """The stored codes and scale: ``{"codes", "bits", "scale", "levels"}``."""
        self._ensure(w)
        return {"codes": self.codes.clone(), "bits": self.bits, "scale": self.alpha.clone(),
                "levels": self.levels}

    @staticmethod
    def decode(enc: dict[str, Any]) -> torch.Tensor:
        """``table[codes] * scale`` with the level table of (bits, levels)."""
        scale = enc["scale"]
        table = code_table(int(enc["bits"]), enc.get("levels", "linear")).to(scale.device,
                                                                              scale.dtype)
        return _levels_times(table, enc["codes"], scale)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, levels={self.levels}"


def is_lossaware(module: Any) -> bool:
    """True when ``module`` has a LossAwareQuantizer as its ``weight_quantizer``."""
    return isinstance(getattr(module, "weight_quantizer", None), LossAwareQuantizer)
