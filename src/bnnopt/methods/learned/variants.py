"""Opt-in changes to the learned-gradient family aimed at the two mechanisms measured
in docs/results.md ("Why: what the meta-nets learned"). Neither is in a paper.

1. ``grad_norm="ste"`` (every learned-gradient method; default ``"learned"``).
   Measured: under SGD, FSG's gain is a learned step size (G ≈ 2-3·c⊙g in
   direction cos 0.92-0.96), which a tuned STE learning rate matches; under Adam
   the fast-net inflates its output ~90x (its look-ahead models an SGD step far
   smaller than Adam's), so |G| drifts by orders of magnitude and Adam's
   second-moment estimate lags it. The change: per quantized layer i, with the
   STE gradient e_i = c_i ⊙ g_i (the same g_{t-1} the meta-nets read)::

       Δ_i ← Δ_i · η‖e_i‖ / ‖Δ_i‖        (differentiable: the meta-nets learn only Δ's direction)
       G_i ← G_i · ‖e_i‖ / ‖G_i‖

   so the generated gradient has exactly STE's norm per layer and the look-ahead
   step the size of an STE SGD step; only the *direction* is learned. For the
   paper variants (G = -Δ/η) both lines agree; a zero norm leaves Δ_i, G_i as they
   are. Under SGD this removes the learned step size (the learning rate, tuned
   like STE's, sets it); under Adam it keeps |G| on STE's scale over training.

   Measured flaw (docs/results.md, "grad_norm: why it diverged"): the look-ahead
   loss is then invariant to a common scale of the meta-nets' output, so its
   gradient carries no information about that scale's *sign*, while Adam on the
   meta-nets still moves every parameter by ~its learning rate per step. In
   FSG's product form φ_f is bias-free and linear, φ_f(x) = a·x, so a is such a
   scale: on mnist-lenet/Adam it crossed zero in the first meta step (2 -> -0.38)
   and stayed negative, G pointed uphill (cos(G, c⊙g) -0.9) and the run
   diverged (3 of 5 seeds).

1b. ``grad_norm="ste-detached"``: the same numbers (G and the look-ahead Δ with
   STE's norms), but the factor η‖e_i‖/‖Δ_i‖ is a constant to the meta-gradient
   (detached), so the meta-nets see the look-ahead loss's full gradient through
   Δ_i, its sign and scale included, and can learn their way back downhill.

2. ``slow_scale="lr-schedule"`` (FSG, paper variant; default ``"constant"`` =
   Eq. 9). Measured: Eq. 9 adds β·S to W without η, so the slow part of the
   handed gradient is (β/η_t)·S and grows as the schedule drives η_t to 0 until
   it dominates G (cos(G, c⊙g) 0.21 at the end of an Adam run). The change::

       W_{t+1} = W_t - η_t·c⊙F + β·(η_t/η_0)·S,   G = c⊙F - (β/η_0)·S

   (η_0 = the base learning rate before the schedule), so the slow term keeps
   its share of G through the schedule and shrinks with the step like the
   fast term does. At η_t = η_0 it equals Eq. 9.
"""
from __future__ import annotations

import torch
from torch import Tensor

GRAD_NORMS = ("learned", "ste", "ste-detached")
SLOW_SCALES = ("constant", "lr-schedule")


def ste_normalized(deltas: list[Tensor], grads: list[Tensor], ste: list[Tensor],
                   lr: float, detach_scale: bool = False) -> tuple[list[Tensor], list[Tensor]]:
    """``grad_norm="ste"``: per layer, ‖G_i‖ := ‖e_i‖ and ‖Δ_i‖ := η‖e_i‖, directions kept.

    deltas: differentiable look-ahead offsets Δ_i; grads: detached generated
    gradients G_i; ste: e_i = c_i ⊙ g_i; all weight-shaped, one per layer.
    ``detach_scale`` (``"ste-detached"``): Δ_i's factor is a constant to autograd.
    """
    out_d, out_g = [], []
    for delta, grad, e in zip(deltas, grads, ste):
        target = e.detach().norm()
        dn, gn = delta.norm(), grad.norm()
        d_scale = torch.where(dn > 0, lr * target / torch.where(dn > 0, dn, torch.ones_like(dn)),
                              torch.ones_like(dn))
        g_scale = torch.where(gn > 0, target / torch.where(gn > 0, gn, torch.ones_like(gn)),
                              torch.ones_like(gn))
        if target == 0:  # no STE signal to size by: leave the layer as generated
            d_scale, g_scale = torch.ones_like(dn), torch.ones_like(gn)
        out_d.append(delta * (d_scale.detach() if detach_scale else d_scale))
        out_g.append((grad * g_scale).detach())
    return out_d, out_g


def slow_weight(beta: float, lr: float, base_lr: float | None, mode: str) -> float:
    """The weight of S in the FSG update: β (Eq. 9, "constant") or β·η_t/η_0 ("lr-schedule")."""
    if mode == "constant" or not base_lr:
        return beta
    return beta * lr / base_lr
