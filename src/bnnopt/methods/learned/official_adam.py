"""Adam with the official FSG / MetaQuant code's epsilon placement.

The official code (github two-tiger/FSG ``meta_utils/adam.py``, from MetaQuant)
"refines" the gradient as

    m_t = β₁ m + (1-β₁) G,   v_t = β₂ v + (1-β₂) G²
    r_t = (√(1-β₂ᵗ) / (1-β₁ᵗ)) · m_t / (√v_t + ε)
    W  ← W - η · r_t

which is m̂_t / (√v̂_t + ε̂) with ε̂ = ε / √(1-β₂ᵗ): epsilon is added to √v
before the bias correction, where torch.optim.Adam adds it to √v̂ after
(m̂/(√v̂ + ε)). The two agree up to ε's size; early steps differ most
(√(1-β₂) ≈ 0.03 at t = 1). Weight decay, as there, is added to G.

This class keeps torch.optim.Adam's parameter groups and state keys (``step``,
``exp_avg``, ``exp_avg_sq``), so code that reads Adam's state works on it; only
``step`` differs. ``amsgrad`` is not supported (the official code never uses it).
"""
from __future__ import annotations

import math

import torch


class OfficialEpsAdam(torch.optim.Adam):
    """torch.optim.Adam with ε̂ = ε/√(1-β₂ᵗ) (official FSG/MetaQuant ``get_refine_gradient``)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         foreach=False)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group.get("amsgrad", False):
                raise ValueError("OfficialEpsAdam does not support amsgrad")
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                refined = step_size * (exp_avg / denom)  # the official "refined gradient"
                p.add_(-group["lr"] * refined)
        return loss
