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

from bnnopt.collectives import all_gather_rows
from bnnopt.data.split import shard_bounds
from bnnopt.methods.learned.base import LearnedGradientMethod, MetaInputs, flat_range, split_like
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
        delta, grad = self.generate_share(inputs, 0, sum(t.numel() for t in inputs.g))
        return split_like(delta, inputs.g), split_like(grad, inputs.g)

    def splittable(self) -> bool:
        return True  # M acts on each weight element on its own

    def generate_share(self, inputs: MetaInputs, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """G = c ⊙ M and Δ = -η·G on the flat elements [lo, hi) (official variant: Δ's
        value is the previous refined offset's, its gradient -η·G's)."""
        g = flat_range(inputs.g, lo, hi)
        u = 0.5 * flat_range(inputs.w_hat, lo, hi) + 0.5
        grad = flat_range(inputs.c, lo, hi) * self.meta_gradient(g, u)  # G = c ⊙ M
        delta = -inputs.lr * grad
        offsets = self.previous_offsets(inputs.lr) if self.options["variant"] == "official" else None
        if offsets is not None:
            delta = delta + (flat_range(offsets, lo, hi) - delta).detach()
        return delta, grad.detach()


@METHODS.register("fcgrad", "MetaQuant FC-Grad: meta-gradient M = FC(dL/dQ), G = c*M")
class FCGradMethod(MetaQuantMethod):
    """MetaQuant's FC-Grad: M = FC(g), 2 bias-free linear layers (1 -> hidden -> 1)."""

    method_name = "fcgrad"
    #: one multiply per weight: gathering Δ and G costs more than the work it shares
    #: (docs/cost-model.md), so the split is opt-in here (``method.meta_split = True``)
    meta_split = False
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
    #: one multiply per weight: gathering Δ and G costs more than the work it shares
    #: (docs/cost-model.md), so the split is opt-in here (``method.meta_split = True``)
    meta_split = False
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
        self._state = (h.detach(), c.detach())   # the elements of g, in flat_cat order
        return g * out

    def generate_share(self, inputs: MetaInputs, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """As MetaQuant's, with the hidden state of the elements [lo, hi) only: a state of
        all N elements (one process, or just loaded) is cut to the share first."""
        n = sum(t.numel() for t in inputs.g)
        if self._state is not None and self._state[0].shape[1] == n and hi - lo != n:
            self._state = tuple(t[:, lo:hi].contiguous() for t in self._state)
        return super().generate_share(inputs, lo, hi)

    def move_extra(self, move) -> None:
        self._state = move(self._state)

    def _full_state(self) -> tuple[Tensor, Tensor]:
        """The hidden state of all N elements: under the split of the meta work each rank
        holds its share's rows, which this all-gathers (a collective: every rank calls it)."""
        h, c = self._state
        n = sum(t.numel() for t in self._g)
        if h.shape[1] == n or self.dist is None or not self.dist.enabled:
            return h, c
        world = self.dist.world_size
        sizes = [b - a for a, b in (shard_bounds(n, r, world) for r in range(world))]
        rows = torch.cat((h[0], c[0]), dim=1)  # (share, 2H)
        full = all_gather_rows(rows, sizes)
        return full[:, :h.shape[2]].unsqueeze(0), full[:, h.shape[2]:].unsqueeze(0)

    def extra_state(self) -> dict[str, Any]:
        """Checkpoint format: the state per layer, [(h_i, c_i)] each (1, ξ_i, H) (under the
        split of the meta work, gathered from every rank: a collective)."""
        if self._state is None:
            return {"hidden": None}
        sizes = [t.numel() for t in self._g]
        h, c = self._full_state()
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
