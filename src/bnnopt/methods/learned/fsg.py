"""FSG: Fast and Slow Gradient generation (Chen et al., AAAI 2025).

Per quantized layer, from the stored g = ∂L/∂Q and Ŵ of the previous step
(the shared step is in :mod:`bnnopt.methods.learned.base`; HGS in :mod:`.hgs`; LRE and
the sequence layouts in :mod:`.lre`):

* fast-net (3 bias-free linear layers, hidden 100, no activation): the fast
  gradient F, an estimate of ∂L/∂Ŵ from the current step only;
* slow-net (Mamba block or LSTM, :mod:`bnnopt.methods.learned.slow_nets`) over the HGS
  sequence [LRE token, last l gradients]: the slow gradient S, a learned
  first-order momentum;
* c = ∂Ŵ/∂W (calibration), η = the base optimizer's learning rate.

``variant="paper"`` (default) -- the paper's equations:

    F = g ⊙ φ_f(x)             x = Ŵ in [0, 1] (Eq. 1), orthogonal init (the convergence
                               analysis and Fig. 1: M_f(G, x) = φ_f(x)·G; or the concat
                               form F = fast([g, x]), option fast_form)
    W_{t+1} = W_t - η·c⊙F + β·S                                   (Eq. 9)
    look-ahead W̃ = W - η·c⊙F + β·S   (forward there; Eq. 12-15 train both nets)
    generated gradient G = c⊙F - (β/η)·S, so plain SGD (W - η·G) is exactly Eq. 9;
    SGD-M and Adam receive the same G. Defaults l = 6, β = 0.3, Adam lr 1e-3 for both nets.

``variant="official"`` -- what github two-tiger/FSG does (``meta-quantize.py
-meta MetaFastAndSlow``), exactly (tests/methods/learned/test_official_transcription.py):

    F = g ⊙ fast(u)            input u = (Ŵ+1)/2 only (its [0,1] DoReFa form), default init
    look-ahead W̃ = W - η·(β·S + (1-β)·c⊙F)     (its ``alpha``, default β = 0.9)
    generated gradient G = c⊙F   (S only shapes the look-ahead)
    Defaults l = 5 (newest included), Adam lr 1e-2 (fast) and 1e-3 (slow), and its own
    preset "official": flat layout, Mamba expand 100, d_state 16, d_conv 8, no
    normalisation, the nets' default init. Also its first iteration (no update at all),
    its Adam ε placement and its bias look-ahead (options ``first_step``, ``adam_eps``,
    ``bias_lookahead`` of :mod:`bnnopt.methods.learned.base`). With ``slow_net="lstmfc"`` it is
    the official ``MetaFastAndLSTM``: S = g ⊙ LSTMFC(u), hidden 100, state carried per
    weight, no HGS and no LRE. The official ResNet is ``model_options.fc_bn = true`` with
    ``policy keep_first = false, keep_last = false``.

Paper forms (options, paper variant): ``fast_form`` "product" (the default and the
official code's: the convergence analysis and Fig. 1, M_f(G, x) = φ_f(x)·G, "learns the
scale of the weights") or "concat" (deprecated, kept to reproduce earlier results:
F = fast([g, x]), a bias-free linear net on the concatenation; docs/results.md
compares the two); ``what_range`` "unit" (default, Eq. 1: x = Ŵ in [0, 1], i.e.
(tanh W/max|tanh W| + 1)/2) or "symmetric" (deprecated: x = tanh W/max|tanh W| in
[-1, 1]); ``d_model`` d (Eq. 10-11: gradient tokens projected by W_a (1 x d), d-dim LRE
tokens, Mamba of width d, read out by W_b (d x 1); d = 1, the default, has no
projections and is the official code's d_model 1).

``layout``: "flat" (Eq. 10-11, one sequence of length l·ξ+1 per layer, as the
paper and the official code) or "per-weight" (one (l+1)-token sequence per
weight, all layers in one batched slow-net call). Under torchrun the per-weight layout
splits the meta work: each rank runs the fast- and slow-net for its contiguous share of
the weights (:meth:`FSGMethod.generate_share`; the HGS stays full on every rank, as g is
all-reduced anyway); the flat layout, a scan across a layer's weights, and the LSTMFC
slow-net keep the unsplit path (every rank runs all of it; :mod:`bnnopt.methods.learned.base`).

Two options that are not in the paper (``normalize``, ``meta_init``):

* ``normalize="rms"``: per layer i, r_i = RMS of its HGS gradients; the meta-nets
  see g / r_i (fast-net input, slow-net tokens) and their outputs are multiplied
  by r_i, so F and S carry the gradient's units whatever its scale. Without it
  (``"none"``, the paper) g ~ 1e-4..1e-3 while Ŵ ~ 0.1..1: the linear fast-net's
  output is dominated by its Ŵ term (measured correlation of c⊙F with c⊙g on
  ResNet-20: 0.01) and the Mamba runs in its near-zero regime.
* ``meta_init="ste"``: the slow-net's read-out is set to 0 and the fast-net so that
  the first generated gradient is STE's: exactly c⊙g in the concat form (product
  (1, 0)), c⊙g⊙(Ŵ+1) in the product form (STE at Ŵ = 0 and on average; see
  :func:`_start_as_ste`); the meta-nets learn corrections from there.
  ``"paper"``: orthogonal fast-net and the slow-net's own initialisation, whose
  random sign makes the first updates ascend as often as descend (measured
  correlation with c⊙g at start: -0.6 with "rms").

``preset`` sets layout, expand, d_state, d_conv, normalize and meta_init (an explicit
option always wins); when none is named the paper variant runs "cpu" and the official
one "official" (:class:`bnnopt.methods.learned.config.FSGConfig`: ``FSGConfig.cpu()``,
``.paper()``, ``.official()``, ``.of(variant, preset)``):

* ``"cpu"``: layout per-weight, Mamba expand 1, d_state 4, d_conv 8, normalize "rms",
  meta_init "ste": sizes chosen with bench/bench_metagrad.py for a cost near STE's
  on a CPU (the per-weight layout computes only the slow-net output it reads,
  :meth:`bnnopt.ssm.mamba.Mamba.forward_last` and :mod:`bnnopt.ssm.scalar_mamba`;
  measurements in bench/README.md).
* ``"paper"`` and ``"official"`` (same values): layout flat, expand 100, d_state 16,
  d_conv 8, normalize "none", meta_init "paper": the paper and the official code,
  nothing added.

What runs, variant x preset (rendered from the presets; ``bnnopt train ... --dry-run``
prints every option):

<what-runs-table>

(*) the variant's default preset. slow_lr is 1e-3 and the fast-net hidden width 100 everywhere.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bnnopt.methods.learned.hgs import HistoryBuffer
from bnnopt.methods.learned.base import (LearnedGradientMethod, MetaInputs, flat_cat, flat_range,
                                         layer_pieces, split_like)
from bnnopt.methods.learned.config import FSGConfig, what_runs_table
from bnnopt.methods.learned.lre import LayerEmbedding, flat_slow_gradients, per_weight_slow_gradients
from bnnopt.methods.learned.meta_nets import LinearStack
from bnnopt.methods.learned.variants import slow_weight
from bnnopt.methods.learned.optimizer import LearnedOptimizer
from bnnopt.registry import METHODS

if __doc__:  # the variant x preset table, rendered from the presets
    __doc__ = __doc__.replace("<what-runs-table>", what_runs_table("rst"))


def _start_as_ste(fast: LinearStack, slow: torch.nn.Module, concat: bool) -> None:
    """meta_init "ste": the first generated gradient equals STE's, G = c ⊙ g.

    Fast-net, concat form (input (g, x)): keep the orthogonal W_1 ... W_{d-1} and set
    the last row to the first row of the pseudo-inverse of M = W_{d-1} ... W_1, so that
    the product is exactly (1, 0): F = g. (M has orthonormal columns, so that row is
    (M e_1)ᵀ, a unit vector: the last layer stays orthogonal.) Product form
    (F = g ⊙ φ_f(u), u = (Ŵ+1)/2 in [0, 1], bias-free, so φ_f(u) = k·u cannot be a
    constant 1): the last layer is rescaled so that k = 2, i.e. F = g ⊙ (Ŵ_sym + 1):
    STE at Ŵ_sym = 0 and on average over a symmetric weight distribution, and never
    of the wrong sign. Slow-net: its last linear read-out is zeroed, so S = 0 until
    the task loss trains it (its gradient is not zero: the read-out's inputs times ∂L/∂S).
    """
    with torch.no_grad():
        if concat:
            m = fast.layers[0].weight  # (hidden, 2)
            for layer in fast.layers[1:-1]:
                m = layer.weight @ m
            fast.layers[-1].weight.copy_(torch.linalg.pinv(m)[:1])
        else:
            k = float(fast.collapsed().reshape(()))
            if k == 0:
                raise ValueError("meta_init 'ste': the product-form fast-net's product is 0")
            fast.layers[-1].weight.mul_(2.0 / k)
        linears = [m for m in slow.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise ValueError("meta_init 'ste' needs a slow-net with a linear read-out")
        linears[-1].weight.zero_()
        if linears[-1].bias is not None:
            linears[-1].bias.zero_()


@METHODS.register("fsg", "FSG (AAAI 2025): fast-net + Mamba/LSTM slow-net over HGS with LRE")
class FSGMethod(LearnedGradientMethod):
    """FSG as the Trainer's Method (the optimizer for your own loop is
    :class:`bnnopt.methods.learned.fsg.FSG`): Fast and Slow Gradient generation.

    The options are the fields of :class:`bnnopt.methods.learned.config.FSGConfig`
    (``FSGMethod(**FSGConfig.official().to_options())`` or
    ``FSGMethod(variant="official", history=3)``; ``self.config`` holds the resolved config).
    """

    method_name = "fsg"
    config_class = FSGConfig

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.hgs: list[HistoryBuffer] = []

    # -- nets ----------------------------------------------------------------------------
    def build_meta(self) -> None:
        from bnnopt.methods.learned.slow_nets import make_slow_net

        opts = self.options
        paper = opts["variant"] == "paper"
        concat = opts["fast_form"] == "concat"
        self.meta_modules["fast"] = LinearStack(2 if concat else 1, opts["hidden"], depth=3,
                                                init="orthogonal" if paper else "default")
        kw = dict(opts["slow_net_options"])
        if opts["slow_net"] == "lstmfc":  # official MetaFastAndLSTM: S = g ⊙ LSTMFC(u), no HGS/LRE
            from bnnopt.methods.learned.meta_nets import LSTMFCNet

            self.meta_modules["slow"] = LSTMFCNet(**{"hidden": opts["hidden"], **kw})
            self._lstm_state = None
            self.hgs = []
            return
        if opts["slow_net"] == "mamba":
            kw = {"d_model": opts["d_model"], "d_state": opts["d_state"], "d_conv": opts["d_conv"],
                  "expand": opts["expand"], **kw}
        self.meta_modules["slow"] = make_slow_net(opts["slow_net"], **kw)
        self.meta_modules["lre"] = LayerEmbedding(len(self.layers), opts["d_model"])
        self.hgs = [HistoryBuffer(opts["history"], layer.weight.numel())
                    for _, layer in self.layers]

    def finish_meta(self) -> None:
        if self.options["meta_init"] == "ste":  # in the model's dtype, so F = g exactly
            _start_as_ste(self.meta_modules["fast"], self.meta_modules["slow"],
                          self.options["fast_form"] == "concat")

    def _make_meta_optimizers(self) -> None:
        slow_params = list(self.meta_modules["slow"].parameters())
        if "lre" in self.meta_modules:
            slow_params += list(self.meta_modules["lre"].parameters())
        self.meta_optimizers = {
            "fast": torch.optim.Adam(self.meta_modules["fast"].parameters(),
                                     lr=self.options["fast_lr"]),
            "slow": torch.optim.Adam(slow_params, lr=self.options["slow_lr"]),
        }

    # -- the step --------------------------------------------------------------------------
    def record(self, g: list[Tensor], w_hat: list[Tensor]) -> None:
        """HGS push of the newest g (so the slow-net's last token is g_{t-1} at step t)."""
        for buf, grad in zip(self.hgs, g):
            buf.push(grad)

    def _scales(self, histories: list[Tensor]) -> list[Tensor] | None:
        """Per-layer input scale r_i = RMS of the layer's HGS (normalize "rms"), else None."""
        if self.options["normalize"] == "none":
            return None
        rms = [h.pow(2).mean().sqrt() for h in histories]
        return [torch.where(r > 0, r, torch.ones_like(r)) for r in rms]

    def _layer_scales(self, inputs: MetaInputs, ids: list[int]) -> list[Tensor] | None:
        """r_i of the layers ``ids`` from each layer's full HGS, computed once per step
        (kept in ``inputs.cache``, shared by every share and chunk of the step)."""
        if self.options["normalize"] == "none":
            return None
        for i in ids:
            if ("rms", i) not in inputs.cache:
                inputs.cache[("rms", i)] = self._scales([self.hgs[i].sequence()])[0]
        return [inputs.cache[("rms", i)] for i in ids]

    def lstm_slow_gradients(self, g: Tensor, w_hat: Tensor) -> Tensor:
        """slow_net "lstmfc" (official MetaFastAndLSTM): S = g ⊙ fc(LSTM(u; h)), u = (Ŵ+1)/2.

        One LSTM step per iteration with every weight a batch item; (h, c) carried
        across iterations per weight, detached (as :class:`bnnopt.methods.learned.metaquant.LSTMFCMethod`).
        """
        out, (h, c) = self.meta_modules["slow"](0.5 * w_hat + 0.5, self._lstm_state)
        self._lstm_state = (h.detach(), c.detach())
        return g * out

    def slow_gradients(self, histories: list[Tensor], scales: list[Tensor] | None) -> Tensor:
        """S (N,) for all layers, flattened and concatenated: slow-net over [LRE, H_i / r_i], x r_i."""
        fn = flat_slow_gradients if self.options["layout"] == "flat" else per_weight_slow_gradients
        if scales is None:
            return torch.cat(fn(self.meta_modules["slow"], self.meta_modules["lre"], histories))
        scaled = [h / r for h, r in zip(histories, scales)]
        out = fn(self.meta_modules["slow"], self.meta_modules["lre"], scaled)
        return torch.cat([o * r for o, r in zip(out, scales)])

    def fast_gradients(self, g: Tensor, w_hat: Tensor, scale: Tensor | None) -> Tensor:
        """F (N,) from g, Ŵ (N,) of all layers; ``scale``: r per element (normalize "rms").

        x = (Ŵ+1)/2 in [0, 1] (``what_range`` "unit", Eq. 1) or Ŵ in [-1, 1] ("symmetric").
        fast_form "concat": F = r·fast([g/r, x]); "product" (the paper's convergence
        analysis and Fig. 1, M_f(G, x) = φ_f(x)·G; the official code): F = g ⊙ φ_f(x).
        """
        fast = self.meta_modules["fast"]
        x = 0.5 * w_hat + 0.5 if self.options["what_range"] == "unit" else w_hat
        if self.options["fast_form"] == "product":
            return g * fast(x.unsqueeze(1))
        if scale is None:
            return fast(torch.stack((g, x), dim=1))
        return scale * fast(torch.stack((g / scale, x), dim=1))

    def generate(self, inputs: MetaInputs) -> tuple[list[Tensor], list[Tensor]]:
        eta = inputs.lr  # β, or β·η/η_0 with slow_scale "lr-schedule" (bnnopt.methods.learned.variants)
        beta = slow_weight(float(self.options["beta"]), eta, self.base_lr,
                           self.options["slow_scale"])
        g, w_hat = flat_cat(inputs.g), flat_cat(inputs.w_hat)
        if self.options["slow_net"] == "lstmfc":  # no HGS: "rms" uses each layer's newest g
            scales = self._scales([t.reshape(1, -1) for t in inputs.g])
            per_elem = None
            if scales is not None:
                sizes = torch.tensor([t.numel() for t in inputs.g], device=g.device)
                per_elem = torch.repeat_interleave(torch.stack(scales), sizes)
            cf = flat_cat(inputs.c) * self.fast_gradients(g, w_hat, per_elem)
            slow = self.lstm_slow_gradients(g, w_hat)
        else:
            histories = [buf.sequence() for buf in self.hgs]  # newest row is g_{t-1}
            scales = self._scales(histories)
            per_elem = None
            if scales is not None:
                sizes = torch.tensor([t.numel() for t in inputs.g], device=histories[0].device)
                per_elem = torch.repeat_interleave(torch.stack(scales), sizes)
            cf = flat_cat(inputs.c) * self.fast_gradients(g, w_hat, per_elem)
            slow = self.slow_gradients(histories, scales)
        delta, grad = self._combine(cf, slow, eta, beta)
        return split_like(delta, inputs.g), split_like(grad, inputs.g)

    def _combine(self, cf: Tensor, slow: Tensor, eta: float, beta: float) -> tuple[Tensor, Tensor]:
        """(Δ, G detached) from c⊙F and S of the same elements."""
        if self.options["variant"] == "paper":
            delta = -eta * cf + beta * slow                 # Eq. 9 / Eq. 12
            # W - η·G == Eq. 9 (with η = 0 no optimizer step can carry β·S: drop it)
            grad = cf - (beta / eta) * slow if eta > 0 else cf
        else:
            delta = -eta * (beta * slow + (1.0 - beta) * cf)
            grad = cf
        return delta, grad.detach()

    def splittable(self) -> bool:
        """The per-weight layout with an HGS slow-net: every weight's sequence is its own
        (the flat layout scans across weights; the LSTMFC slow-net keeps the unsplit path)."""
        return self.options["layout"] == "per-weight" and self.options["slow_net"] != "lstmfc"

    def generate_share(self, inputs: MetaInputs, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """(Δ, G) of the flat elements [lo, hi): fast-net on their g, Ŵ; slow-net on their
        HGS columns, each prefixed by its layer's LRE token; ``normalize="rms"`` scales r_i
        from the full history of each layer the share touches (every rank holds the HGS)."""
        eta = inputs.lr
        beta = slow_weight(float(self.options["beta"]), eta, self.base_lr,
                           self.options["slow_scale"])
        pieces = layer_pieces(inputs.g, lo, hi)  # (layer, first, last column inside [lo, hi))
        ids = [i for i, _, _ in pieces]
        histories = [self.hgs[i].columns(a, b) for i, a, b in pieces]  # newest row is g_{t-1}
        scales = self._layer_scales(inputs, ids)
        per_elem = None
        if scales is not None:
            sizes = torch.tensor([b - a for _, a, b in pieces], device=histories[0].device)
            per_elem = torch.repeat_interleave(torch.stack(scales), sizes)
        g, w_hat = flat_range(inputs.g, lo, hi), flat_range(inputs.w_hat, lo, hi)
        cf = flat_range(inputs.c, lo, hi) * self.fast_gradients(g, w_hat, per_elem)
        slow_net, lre = self.meta_modules["slow"], self.meta_modules["lre"]
        if scales is None:
            slow = torch.cat(per_weight_slow_gradients(slow_net, lre, histories, ids))
        else:
            out = per_weight_slow_gradients(slow_net, lre,
                                            [h / r for h, r in zip(histories, scales)], ids)
            slow = torch.cat([o * r for o, r in zip(out, scales)])
        return self._combine(cf, slow, eta, beta)

    def move_extra(self, move) -> None:
        for buf in self.hgs:
            buf.buffer = move(buf.buffer)
        if getattr(self, "_lstm_state", None) is not None:
            self._lstm_state = move(self._lstm_state)

    # -- checkpoints -------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        lstm = getattr(self, "_lstm_state", None)
        return {"hgs": [buf.state_dict() for buf in self.hgs],
                "lstm_state": None if lstm is None else tuple(t.clone() for t in lstm)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        lstm = state.get("lstm_state")
        self._lstm_state = None if lstm is None else tuple(t.clone() for t in lstm)
        if len(state["hgs"]) != len(self.hgs):
            raise ValueError(f"method state has {len(state['hgs'])} HGS buffers; "
                             f"this model has {len(self.hgs)} quantized layers")
        for buf, s in zip(self.hgs, state["hgs"]):
            buf.load_state_dict(s)


class FSG(LearnedOptimizer):
    """FSG (Chen et al., AAAI 2025) as an optimizer; options of
    :class:`bnnopt.methods.learned.fsg.FSGMethod` (variant, preset, history, beta, ...)."""

    method_class = FSGMethod
