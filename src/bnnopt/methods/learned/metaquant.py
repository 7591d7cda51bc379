"""MetaQuant (Chen, Wang and Pan, NeurIPS 2019): FCGrad, MultiFC and LSTMFC.

A meta-net M_φ replaces the non-differentiable ∂Q/∂Ŵ: it produces the gradient
w.r.t. the pre-quantized weight, M ≈ ∂L/∂Ŵ, from the stored g = ∂L/∂Q and Ŵ
of the previous step; the latent weight then gets G = c ⊙ M (c = ∂Ŵ/∂W,
"calibration"), and the forward runs at the look-ahead weight
W̃ = W - η·c ⊙ M so that φ is trained by the task loss (see
:mod:`bnnopt.methods.learned.base`).

    fcgrad   M = FC(g)                      2 bias-free linear layers (hidden 100), input g
    multifc  M = g ⊙ MultiFC(u)             3 bias-free linear layers, input u
    lstmfc   M = g ⊙ fc(LSTM(u; h_{t-1}))    one LSTM step per iteration, hidden h per layer

where u = (Ŵ + 1)/2 is DoReFa's pre-quantized weight in [0, 1], the form both
official codes feed (their A(W)·0.5 + 0.5). The LSTM hidden state is kept per
layer and detached between iterations (``impl="chunked"``, the default, evaluates
the LSTM step in row chunks without storing (N, 4H) gates; ``impl="torch"`` runs
``nn.LSTM``: same values and gradients up to rounding). One Adam optimizer (lr ``meta_lr``,
1e-3 as in the official code) trains the meta-net.

Variants of the look-ahead weight (the update G = c ⊙ M is the same):

* ``variant="paper"``: W̃ = W - η·c ⊙ M, value and gradient from the current M.
* ``variant="official"``: the official code's forward weight has the VALUE of
  W minus η_t times the previous refined gradient r_{t-1} (the optimizer-refined
  update of step t-1 divided by its η; after the skipped first iteration, the raw
  STE gradient) and only the GRADIENT path -η·c ⊙ M:
  W̃ = W - η·(c⊙M + stopgrad(r_{t-1} - c⊙M)). It also takes the official
  first iteration (no update), Adam ε placement and bias look-ahead
  (``first_step``, ``adam_eps``, ``bias_lookahead`` in :mod:`bnnopt.methods.learned.base`).

The options of each method are the fields of its config
(:mod:`bnnopt.methods.learned.config`: :class:`FCGradConfig`, :class:`MultiFCConfig`,
:class:`LSTMFCConfig`; ``FCGradConfig.official()`` is the official variant).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bnnopt.methods.learned.base import LearnedGradientMethod, MetaInputs, flat_cat, split_like
from bnnopt.methods.learned.config import (FCGradConfig, LSTMFCConfig, MetaQuantConfig,
                                           MultiFCConfig)
from bnnopt.methods.learned.meta_nets import LinearStack, LSTMFCNet
from bnnopt.methods.learned.optimizer import LearnedOptimizer
from bnnopt.registry import METHODS


class MetaQuantMethod(LearnedGradientMethod):
    """Common part of FCGrad / MultiFC / LSTMFC: G = c ⊙ M, Δ = -η·G (see module doc)."""

    config_class = MetaQuantConfig

    @property
    def needs_prev_step(self) -> bool:  # type: ignore[override]
        return self.options["variant"] == "official"

    def _make_meta_optimizers(self) -> None:
        self.meta_optimizers = {
            "meta": torch.optim.Adam(self.meta_modules["meta"].parameters(),
                                     lr=self.options["meta_lr"])
        }

    def meta_gradient(self, g: Tensor, u: Tensor) -> Tensor:
        """M (N,) from the flattened g (N,) and u = (Ŵ+1)/2 (N,) of all layers."""
        raise NotImplementedError

    def generate(self, inputs: MetaInputs) -> tuple[list[Tensor], list[Tensor]]:
        g = flat_cat(inputs.g)
        u = 0.5 * flat_cat(inputs.w_hat) + 0.5
        grad = flat_cat(inputs.c) * self.meta_gradient(g, u)  # G = c ⊙ M
        delta = -inputs.lr * grad
        offsets = self.previous_offsets(inputs.lr) if self.options["variant"] == "official" else None
        if offsets is not None:
            delta = delta + (flat_cat(offsets) - delta).detach()
        return split_like(delta, inputs.g), split_like(grad.detach(), inputs.g)


@METHODS.register("fcgrad", "MetaQuant FC-Grad: meta-gradient M = FC(dL/dQ), G = c*M")
class FCGradMethod(MetaQuantMethod):
    """MetaQuant's FC-Grad: M = FC(g), 2 bias-free linear layers (1 -> hidden -> 1)."""

    method_name = "fcgrad"
    config_class = FCGradConfig

    def build_meta(self) -> None:
        self.meta_modules["meta"] = LinearStack(1, self.options["hidden"], depth=2,
                                                nonlinear=self.options["nonlinear"])

    def meta_gradient(self, g: Tensor, u: Tensor) -> Tensor:
        return self.meta_modules["meta"](g.unsqueeze(1))


@METHODS.register("multifc", "MetaQuant MultiFC: M = dL/dQ * MultiFC(W-hat), G = c*M")
class MultiFCMethod(MetaQuantMethod):
    """MetaQuant's MultiFC: M = g ⊙ MultiFC(u), ``depth`` bias-free linear layers."""

    method_name = "multifc"
    config_class = MultiFCConfig

    def build_meta(self) -> None:
        self.meta_modules["meta"] = LinearStack(1, self.options["hidden"],
                                                depth=self.options["depth"],
                                                nonlinear=self.options["nonlinear"])

    def meta_gradient(self, g: Tensor, u: Tensor) -> Tensor:
        return g * self.meta_modules["meta"](u.unsqueeze(1))


@METHODS.register("lstmfc", "MetaQuant LSTMFC: M = dL/dQ * fc(LSTM(W-hat)), hidden per layer")
class LSTMFCMethod(MetaQuantMethod):
    """MetaQuant's LSTMFC: M = g ⊙ fc(LSTM(u; h)), h kept per layer, detached."""

    method_name = "lstmfc"
    config_class = LSTMFCConfig
    _state: tuple[Tensor, Tensor] | None = None  # (h, c) of all layers, each (1, N, H)

    def build_meta(self) -> None:
        self.meta_modules["meta"] = LSTMFCNet(self.options["hidden"], impl=self.options["impl"])
        self._state = None

    def meta_gradient(self, g: Tensor, u: Tensor) -> Tensor:
        out, (h, c) = self.meta_modules["meta"](u, self._state)
        self._state = (h.detach(), c.detach())   # all layers, in flat_cat order
        return g * out

    def move_extra(self, move) -> None:
        self._state = move(self._state)

    def extra_state(self) -> dict[str, Any]:
        """Checkpoint format: the state per layer, [(h_i, c_i)] each (1, ξ_i, H)."""
        if self._state is None:
            return {"hidden": None}
        sizes = [t.numel() for t in self._g]
        h, c = self._state
        return {"hidden": [(hi.clone(), ci.clone()) for hi, ci in
                           zip(torch.split(h, sizes, dim=1), torch.split(c, sizes, dim=1))]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        hidden = state["hidden"]
        self._state = None if hidden is None else tuple(
            torch.cat([hc[k] for hc in hidden], dim=1) for k in (0, 1))


class FCGrad(LearnedOptimizer):
    """MetaQuant FC-Grad (NeurIPS 2019) as an optimizer: M = FC(g), G = c ⊙ M."""

    method_class = FCGradMethod


class MultiFC(LearnedOptimizer):
    """MetaQuant MultiFC as an optimizer: M = g ⊙ MultiFC((Ŵ+1)/2), G = c ⊙ M."""

    method_class = MultiFCMethod


class LSTMFC(LearnedOptimizer):
    """MetaQuant LSTMFC as an optimizer: M = g ⊙ fc(LSTM((Ŵ+1)/2; h)), G = c ⊙ M."""

    method_class = LSTMFCMethod
