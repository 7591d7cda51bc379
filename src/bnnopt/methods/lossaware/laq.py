"""LAB / LAQ: loss-aware weight quantization as a torch optimizer.

LAB (Hou, Yao and Kwok, ICLR 2017, Algorithm 1) and its m-bit extension LAQ
(Hou and Kwok, ICLR 2018, Algorithm 1) minimise the loss w.r.t. the quantized
weights with a proximal Newton step whose diagonal Hessian estimate D is Adam's
second moment. One step t, for every quantized layer l (W latent, W_hat = alpha b
the quantized weight that the forward pass used, g = dL/dW_hat from backward):

    m_t = b1 m_{t-1} + (1 - b1) g                      first moment
    v_t = b2 v_{t-1} + (1 - b2) g^2                    second moment
    D_t = sqrt(v_t / (1 - b2^t)) + eps                 diagonal Hessian estimate
    W_{t+1} = clip(W_t - lr * m_t / (1 - b1^t) / D_t,  -c, c)      (Adam-style)
    W_hat_{t+1} = argmin_{alpha, b in Q} sum D_t (alpha b - W_{t+1})^2

(LAB Eq. 6-7 closed form for 1 bit, LAQ Eq. 8-9 alternating alpha/b solver for
m bits; :mod:`bnnopt.methods.lossaware.levels`). The paper writes D_t with a 1/eta factor;
it cancels in the update and does not change the argmin. The quantization of
step t+1 therefore uses D_t, "d^{t-1}" in the papers' forward pass. Parameters
that are not quantized (biases, BatchNorm, full-precision layers) take the same
Adam update without the projection, as in the official code. ``clip`` (default
1, the papers' [-1, 1]) applies to quantized latent weights only; None disables
it. ``weight_decay`` adds ``wd * W`` to g (L2, as torch.optim.Adam).

The update is written exactly as ``torch.optim.Adam`` (single-tensor path)
writes it, so a non-quantized parameter follows Adam.

Usage::

    opt = LAQ.from_model(model, lr=1e-3)        # model prepared with "lossaware" quantizers
    loss.backward(); opt.step(); opt.zero_grad()
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from bnnopt.methods.lossaware.quantizer import LossAwareQuantizer, is_lossaware

__all__ = ["LAQ", "lossaware_params"]


def lossaware_params(model: nn.Module) -> tuple[list[tuple[nn.Parameter, LossAwareQuantizer]],
                                                 list[nn.Parameter]]:
    """Split ``model``'s trainable parameters into (quantized weight, its quantizer)
    pairs, in module order, and all other parameters."""
    pairs, seen = [], set()
    for module in model.modules():
        if is_lossaware(module) and module.weight.requires_grad and id(module.weight) not in seen:
            pairs.append((module.weight, module.weight_quantizer))
            seen.add(id(module.weight))
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return pairs, others


class LAQ(torch.optim.Optimizer):
    """LAB (bits=1) / LAQ (m bits) optimizer; bits and levels live in the quantizers.

    Args:
        quantized: (weight Parameter, LossAwareQuantizer) pairs.
        others: the remaining trainable parameters (plain Adam).
        lr, betas, eps, weight_decay: as torch.optim.Adam.
        clip: latent-weight clipping bound c (None: off).
        max_iter: rounds of LAQ's alternating alpha/b solver per step (m bits only).
    """

    def __init__(self, quantized: Iterable[tuple[nn.Parameter, LossAwareQuantizer]],
                 others: Iterable[nn.Parameter] = (), lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip: float | None = 1.0, max_iter: int = 10):
        if not lr > 0:
            raise ValueError(f"invalid lr {lr!r}; must be > 0")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid betas {betas!r}; each must be in [0, 1)")
        if not eps > 0:
            raise ValueError(f"invalid eps {eps!r}; must be > 0")
        if clip is not None and not clip > 0:
            raise ValueError(f"invalid clip {clip!r}; must be > 0 or None")
        if int(max_iter) < 1:
            raise ValueError(f"invalid max_iter {max_iter!r}; must be >= 1")
        quantized = list(quantized)
        self._quantizer = {p: q for p, q in quantized}
        groups = [{"params": [p for p, _ in quantized], "quantized": True}]
        others = list(others)
        if others:
            groups.append({"params": others, "quantized": False})
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        clip=clip, max_iter=int(max_iter))
        super().__init__(groups, defaults)
        for p, q in quantized:  # a freshly built model: quantize with D = I
            if not q.initialized:
                q.requantize(p, None, solver="exact")

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> "LAQ":
        """Optimizer over every parameter of ``model`` (lossaware layers quantized)."""
        pairs, others = lossaware_params(model)
        if not pairs:
            raise ValueError("model has no layer with a 'lossaware' weight quantizer; "
                             "prepare it with the lab/laq/blaq method (or binarize_ with "
                             "weight_quantizer='lossaware') first")
        return cls(pairs, others, **kwargs)

    def quantizer_of(self, p: nn.Parameter) -> LossAwareQuantizer | None:
        return self._quantizer.get(p)

    # -- building blocks (shared with BLAQ) ----------------------------------------
    def _grad(self, p: nn.Parameter, group: dict[str, Any]) -> torch.Tensor:
        g = p.grad
        if group["weight_decay"]:
            g = g.add(p, alpha=group["weight_decay"])
        return g

    @staticmethod
    def _moments(state: dict[str, Any], p: torch.Tensor) -> None:
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @staticmethod
    def _denom(v: torch.Tensor, step: int, b2: float, eps: float) -> torch.Tensor:
        """D = sqrt(v / (1 - b2^step)) + eps, as torch.optim.Adam computes it."""
        return (v.sqrt() / math.sqrt(1 - b2 ** step)).add_(eps)

    @staticmethod
    def _denom_into(out: torch.Tensor, v: torch.Tensor, step: int, b2: float,
                    eps: float) -> torch.Tensor:
        """:meth:`_denom` written into ``out`` (may be ``v``): the same operations."""
        return torch.sqrt(v, out=out).div_(math.sqrt(1 - b2 ** step)).add_(eps)

    def _move(self, p: nn.Parameter, m: torch.Tensor, denom: torch.Tensor, step: int,
              group: dict[str, Any]) -> None:
        """W <- clip(W - lr/(1 - b1^step) * m / D) (clip for quantized weights only)."""
        step_size = group["lr"] / (1 - group["betas"][0] ** step)
        p.addcdiv_(m, denom, value=-step_size)
        if group["quantized"] and group["clip"] is not None:
            p.clamp_(-group["clip"], group["clip"])

    def _quantize(self, w: torch.Tensor, denom: torch.Tensor, group: dict[str, Any],
                  quantizer: LossAwareQuantizer | None = None) -> None:
        """Quantize latent ``w`` (a quantized parameter, or BLAQ's trial copy of one)
        with D = ``denom`` into ``quantizer`` (default: the parameter's own)."""
        quantizer = self._quantizer[w] if quantizer is None else quantizer
        quantizer.requantize(w, denom, max_iter=group["max_iter"])

    # -- the step ---------------------------------------------------------------------
    def _gradients(self):
        """Yield ``(group, p, g, state)`` for every parameter with a gradient, after the
        step count advanced (``g`` = ``self._grad``: clipped, weight decay added)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self._grad(p, group)
                state = self.state[p]
                self._moments(state, p)
                state["step"] += 1
                yield group, p, g, state

    @staticmethod
    def _call_once(closure):
        """The closure's loss (with gradients enabled), or None without a closure."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    @torch.no_grad()
    def step(self, closure=None):
        """One LAB/LAQ step from the gradients in ``.grad`` (closure: optional, called once)."""
        loss = self._call_once(closure)
        for group, p, g, state in self._gradients():
            b1, b2 = group["betas"]
            state["exp_avg"].lerp_(g, 1 - b1)
            state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = self._denom(state["exp_avg_sq"], state["step"], b2, group["eps"])
            self._move(p, state["exp_avg"], denom, state["step"], group)
            if group["quantized"]:
                self._quantize(p, denom, group)
        return loss
