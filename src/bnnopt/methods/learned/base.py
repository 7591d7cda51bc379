"""The learned-gradient step shared by FCGrad, MultiFC, LSTMFC (MetaQuant) and FSG.

Notation (FSG paper Sec. "Preliminaries", Eq. 1-3): latent weight W, pre-quantized
weight Ŵ = A(W) (DoReFa: tanh(W)/max|tanh W|, max held constant, Eq. 1), quantized
weight Q = q(Ŵ) (Eq. 2), stored gradient g = ∂L/∂Q, and the calibration
c = ∂A(W)/∂W (DoReFa: (1 - tanh²W)/max|tanh W|).

One training step t (FSG Algorithm 1; Eq. 12-15; MetaQuant Sec. 3)::

    if nothing is stored yet:                 # the very first step
        plain autograd step (the layers' estimator, i.e. STE)
    else:
        (Δ_i, G_i) = generate(g_{t-1}, Ŵ_{t-1}, c_t, η)   # meta-nets, per layer i
        forward at the look-ahead weight  W̃_i = W_i + Δ_i   (Eq. 12-13, via layer.delta)
        L = criterion(model(x), y);  L.backward()         # trains the meta-nets (Eq. 14-15):
                                                          #   ∂L/∂φ = Σ_i ∂L/∂W̃_i · ∂Δ_i/∂φ
        meta-optimizers step
        W_i.grad := G_i          # the generated gradient replaces autograd's
    store g_t = ∂L/∂Q (from layer.last_quantized) and Ŵ_t = A(W̃_t)
    base optimizer step (SGD, SGD-M or Adam, built by bnnopt.methods.base.build_optimizer)

Δ_i is differentiable w.r.t. the meta-net parameters φ (so they sit in the
graph); G_i is its detached value. Only the quantized layers' latent weights get
generated gradients; every other parameter (BatchNorm, biases, full-precision
layers) keeps its autograd gradient, evaluated at the look-ahead point. The
step works for every QConv2d / QLinear of any model (``bnnopt.nn.quantized_layers``).

Option ``lookahead`` (common to the family; not in either paper):

* ``"plain"`` (default, both papers): W̃ = W + Δ as above. Δ models a plain SGD
  step, -η·G, whatever the base optimizer.
* ``"optimizer"``: W̃ = W + U(-Δ/η), where U(G) is the update the base optimizer
  will make from gradient G given its current state, written differentiably in G:
  SGD -η·G; SGD-M -η·(μ·b + G) (b its momentum buffer, weight decay added to G);
  Adam -η·m̂/(√v̂ + ε) with m = β₁m + (1-β₁)G and v = β₂v + (1-β₂)G² (the v
  term detached, bias corrections at the coming step). When Δ = -η·G (the paper
  variants) the forward runs exactly at the weight the optimizer is about to
  produce, so the meta-nets are trained for the update really applied; with
  Adam that update is ~η per weight instead of η·|G|. Same as "plain" for plain
  SGD without weight decay.

Option ``grad_norm`` (common; not in either paper): ``"learned"`` (default) hands
G over as generated; ``"ste"`` rescales, per layer, G to the norm of STE's c⊙g and
the look-ahead offset Δ to η times it, so only their direction is learned;
``"ste-detached"`` the same with the rescaling factor a constant to the meta-gradient
(:mod:`bnnopt.methods.learned.variants`).

Three options reproduce details of the official codes (github two-tiger/FSG and
csyhhu/MetaQuant); each defaults to the official behaviour under
``variant="official"`` and to bnnopt's otherwise (an explicit value always wins):

* ``first_step``: "ste" (bnnopt: the first step, with nothing stored yet, is a
  plain STE step) or "skip" (official: the first iteration runs forward and
  backward to store g and Ŵ but updates nothing at all, no weight, no BN).
* ``adam_eps``: "torch" or "official": with an Adam base optimizer, the official
  code's ε placement m̂/(√v̂ + ε/√(1-β₂ᵗ)) (:mod:`bnnopt.methods.learned.official_adam`).
* ``bias_lookahead``: False or True: the forward of a quantized layer uses the
  bias b - η_t·r_b, r_b its previous refined gradient (the previous applied step
  divided by that step's η; after a skipped first step, its raw gradient), as the
  official layers do (their ``meta_bias = bias - bias.grad * lr``).

Option ``meta_data`` (common; not in either paper): ``"train"`` (default, Eq. 14-15:
the meta-nets are trained on the loss of the training batch at the look-ahead, the
same forward that yields g_t) or ``"heldout"``: the Trainer holds out
``meta_fraction`` (default 0.1) of the training images as a meta split
(:mod:`bnnopt.data.split`, disjoint from train and validation), and each step with
meta-nets runs two forwards::

    L_meta = CE(model(x_meta; W̃), y_meta)   ∂L_meta/∂φ trains the meta-nets
                                             (BatchNorm statistics untouched)
    L      = criterion(model(x; W̃ detached from φ), y)   g_t, the other parameters

(CE: mean cross-entropy over the meta batch, which is always a full batch; under
torchrun each rank takes an equal share and the meta-gradients are averaged).
so the meta-nets learn the update that lowers the loss of images the task network
does not train on (generalisation as the target, as learned-optimizer work
trains on a validation batch), at about one more forward and backward per step.
The k-th held-out batch is batch k mod n of the meta loader's epoch k div n (a pure
function of k; k is saved with the method state, so resume is exact).

Under torchrun (``set_distributed``) the model is DistributedDataParallel, which
averages the task network's gradients; this step also averages, across ranks, the
stored g_t (before it reaches ``record``, i.e. the HGS, and the meta-nets) and the
meta-nets' gradients (LRE included) before their optimizers step, so every rank
holds identical task weights, meta-nets and history (``sync_learned = False``
switches that off, for the test that shows the ranks then diverge).

Split of the meta work across ranks (``meta_split = True``, the default under
torchrun for LSTMFC and FSG; FCGrad and MultiFC, whose meta-net is about one multiply
per weight, default to False, since the gather costs more than the work it shares; set
``method.meta_split`` to choose). Every meta-net of
FCGrad, MultiFC, LSTMFC and FSG's per-weight layout acts on each weight element on its
own, so the N latent weights of all quantized layers (flattened and concatenated in
layer order) are cut into P contiguous shares balanced by element count
(:func:`bnnopt.data.split.shard_bounds`: rank r holds [lo_r, hi_r), sizes differ by at
most one) and rank r runs :meth:`LearnedGradientMethod.generate_share` on its share only::

    (Δ_r, G_r) = generate_share(g, Ŵ, c, η; lo_r, hi_r)       Δ_r in the graph of φ
    [Δ, G] = all_gather([Δ_r, G_r])                          every rank: the full values
    Δ_full = [Δ_<r (constant), Δ_r, Δ_>r (constant)]         installed on the layers
    forward + backward;  g_t all-reduced (mean over ranks = the gradient of the global
    batch's loss, as DDP's mean of the weights' gradients)
    ∂L/∂W̃_i = J_Qi(W̃_i)ᵀ g_t,i                               per layer, recomputed locally
    rank r: ∂L/∂φ|_r = ∂L/∂Δ_full · ∂Δ_full/∂φ                only Δ_r reaches φ
    ∂L/∂φ = Σ_r ∂L/∂φ|_r  (an all-reduce SUM: the partials are disjoint pieces of one sum)

∂L/∂Δ needs no communication of its own: W̃ reaches the loss only through the weight
quantizer's output Q(W̃), so ∂L/∂W̃ is the quantizer's vector-Jacobian product of g
at W̃, and a vector-Jacobian product is linear in g, so at the averaged g it is the
mean over ranks of the local ∂L/∂W̃. Each rank recomputes it only for the layers its
share overlaps. Anything computed from the full Δ and G after generation
(``grad_norm``, ``lookahead "optimizer"``) runs on every rank on the assembled values
(and then needs ∂L/∂W̃ of every layer); since the other shares are constants there,
each rank's backward yields exactly its share's part of the total derivative, so the
sum is the one-process gradient. Every rank then holds the same G,
meta-net gradients, meta-optimizer states and task weights. History: the HGS holds the
all-reduced g, which every rank has, so it stays full on every rank (no communication);
an LSTM meta-net's hidden state (N x H per step, far too large to gather each step) is
kept for the rank's share only, and :meth:`state_dict` all-gathers it, so ``state_dict``
is then a collective: call it on every rank (the Trainer does). The result equals one
process up to the order of floating-point sums. The flat layout (a scan across weights),
FSG's LSTMFC slow-net and ``meta_data="heldout"`` (the held-out loss is not a per-share
sum) keep the unsplit path.

Communication per step, N quantized weights, |φ| meta-net parameters, P ranks (values
of the weights' dtype): unsplit, one all-reduce of g and ∂L/∂φ (N + |φ|); split,
all-gather of Δ and G (2N/P sent, 2N received per rank), all-reduce of g (N) and
all-reduce of ∂L/∂φ plus one flag per meta-net tensor (|φ| + #tensors); the meta
work per rank falls from N to about N/P weights. With a GradScaler, the decision to
skip a step with a non-finite g or meta-gradient is taken after these all-reduces, so
every rank takes the same one.

The step runs in three phases (:meth:`LearnedGradientMethod.begin_step`,
:meth:`~LearnedGradientMethod.end_lookahead`, :meth:`~LearnedGradientMethod.finish_step`),
driven by the public optimizers of :mod:`bnnopt.methods.learned.optimizer`
(``bnnopt.FSG`` etc.): ``begin_step`` installs Δ as a detached leaf proxy per layer and a
forward hook that sums ∂L/∂Q over the backward passes that follow; ``finish_step``
back-propagates the proxies' gradients ∂L/∂W̃_i through Δ_i into the meta-nets (the same
∂L/∂φ as one backward through both), then steps. ``train_step`` (the Trainer's) is
``optimizer.step(closure)`` with the closure forward + criterion + backward: one step
implementation for the Trainer and a user's own loop.

Subclasses implement :meth:`build_meta` (create meta-nets and their optimizers)
and :meth:`generate`; optionally :meth:`record` (e.g. push g into a history) and
:meth:`extra_state` / :meth:`load_extra_state`.
"""
from __future__ import annotations

import copy as copy_module
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bnnopt.collectives import all_gather_rows, all_reduce_sum_
from bnnopt.data.split import shard_bounds
from bnnopt.methods.base import Method, OptimConfig, StepOutput
from bnnopt.methods.config import check_policy
from bnnopt.methods.learned.config import LearnedConfig
from bnnopt.methods.learned.optimizer import LearnedOptimizer
from bnnopt.methods.learned.variants import ste_normalized


def calibration(quantizer: nn.Module, weight: Tensor) -> Tensor:
    """c = ∂A(W)/∂W element-wise at ``weight`` (A's normaliser, e.g. max|tanh W|, held constant).

    Uses the quantizer's closed form ``pre_derivative`` when it has one (DoReFa:
    (1 - tanh²W)/max|tanh W|); otherwise autograd through ``pre``: with the
    normaliser detached each output depends only on its own input, so the
    gradient of Σ A(W) is exactly the element-wise derivative. A quantizer with
    neither has A = identity, c = 1.
    """
    closed = getattr(quantizer, "pre_derivative", None)
    if closed is not None:
        with torch.no_grad():
            return closed(weight.detach())
    pre = getattr(quantizer, "pre", None)
    if pre is None:
        return torch.ones_like(weight, memory_format=torch.contiguous_format)
    with torch.enable_grad():
        w = weight.detach().requires_grad_(True)
        (c,) = torch.autograd.grad(pre(w).sum(), w)
    return c


@torch.no_grad()
def pre_quantized(quantizer: nn.Module, weight: Tensor) -> Tensor:
    """Ŵ = A(weight) (detached copy); identity for a quantizer without ``pre``."""
    pre = getattr(quantizer, "pre", None)
    return (weight if pre is None else pre(weight)).detach().clone()


def flat_cat(tensors: list[Tensor]) -> Tensor:
    """Concatenate the flattened tensors of all layers -> (N,)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def layer_pieces(tensors: list[Tensor], lo: int, hi: int) -> list[tuple[int, int, int]]:
    """The layers that the flat elements [lo, hi) of :func:`flat_cat` touch, as
    (layer index, first, last) with [first, last) the columns inside that layer."""
    pieces, start = [], 0
    for i, t in enumerate(tensors):
        a, b = max(lo, start), min(hi, start + t.numel())
        if a < b:
            pieces.append((i, a - start, b - start))
        start += t.numel()
    return pieces


def flat_range(tensors: list[Tensor], lo: int, hi: int) -> Tensor:
    """``flat_cat(tensors)[lo:hi]`` (hi - lo,) without concatenating the other elements."""
    parts = [tensors[i].reshape(-1)[a:b] for i, a, b in layer_pieces(tensors, lo, hi)]
    if not parts:
        return tensors[0].new_empty(0)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def split_like(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    """Inverse of :func:`flat_cat`: split (N,) into tensors shaped like ``like``."""
    parts = torch.split(flat, [t.numel() for t in like])
    return [p.reshape(t.shape) for p, t in zip(parts, like)]


@dataclass
class MetaInputs:
    """What the meta-nets see at step t, one entry per quantized layer.

    g: ∂L/∂Q of step t-1 (weight shape); w_hat: Ŵ = A(W̃) of step t-1;
    c: ∂A/∂W at the current latent weight; lr: the base optimizer's current η.
    cache: values of this step that several shares or chunks of the weights use
    (e.g. FSG's per-layer input scale), computed once by whichever needs them first.
    """

    g: list[Tensor]
    w_hat: list[Tensor]
    c: list[Tensor]
    lr: float
    cache: dict = field(default_factory=dict, repr=False, compare=False)


class LearnedGradientMethod(Method):
    """Base class of the learned-gradient family (see the module docstring)."""

    family = "learned-gradient"
    method_name = "learned-gradient"
    added_options = {"meta_data": "train", "meta_fraction": 0.1, "meta_chunk": 0}
    #: the typed options (:mod:`bnnopt.methods.learned.config`); ``self.config`` is the
    #: resolved instance and ``self.options`` its ``to_options()`` dict
    config_class: type[LearnedConfig] = LearnedConfig
    needs_prev_step = False  # record the applied update W_before - W_after per layer
    sync_learned = True  # average g and the meta-nets' gradients across torchrun ranks
    meta_split = True  # under torchrun, each rank runs the meta-nets for its share of weights

    def __init__(self, **options: Any):
        self.config = self.config_class.from_options(options)
        super().__init__(**self.config.to_options())
        self.layers: list[tuple[str, nn.Module]] = []
        self.meta_modules = nn.ModuleDict()
        self.meta_optimizers: dict[str, torch.optim.Optimizer] = {}
        self._g: list[Tensor] | None = None
        self._w_hat: list[Tensor] | None = None
        self._prev_step: list[Tensor] | None = None
        self._prev_bias_step: list[Tensor | None] | None = None
        self._prev_lr: float | None = None
        self.steps = 0
        self.meta_batches = 0  # held-out batches used so far (meta_data "heldout")
        self._meta_loader = None
        self._meta_forward = None
        self._meta_iter = None  # (k, iterator positioned at batch k)
        self.model: nn.Module | None = None  # the task network (not DDP-wrapped)
        self.learned = None  # the LearnedOptimizer the step runs through (build / attach)
        self._pending: dict[str, Any] | None = None  # a look-ahead awaiting finish_step
        self.last_meta_step = False  # whether the last finished step used the meta-nets

    # -- options -------------------------------------------------------------------
    def resolved_options(self) -> dict[str, Any]:
        """Every option after presets and variants (what will run)."""
        return copy_module.deepcopy(self.options)

    @classmethod
    def held_out_fraction(cls, options: dict[str, Any]) -> float:
        """``meta_fraction`` under ``meta_data="heldout"``, else 0."""
        config = cls.config_class.from_options(options)
        return float(config.meta_fraction) if config.meta_data == "heldout" else 0.0

    def set_meta_data(self, loader, forward) -> None:
        """The meta split's loader (``epoch(e, start)``, ``len``) and the model to run it
        through (the task network itself, not DDP-wrapped: the meta forward's backward
        reaches only the meta-nets)."""
        if self.options["meta_data"] != "heldout":
            raise ValueError(f"{self.method_name} got a meta split but meta_data is "
                             f"{self.options['meta_data']!r}")
        if len(loader) < 1:
            raise ValueError("the meta split has no batch")
        self._meta_loader, self._meta_forward, self._meta_iter = loader, forward, None

    def _next_meta_batch(self) -> tuple[Tensor, Tensor]:
        """Held-out batch number ``self.meta_batches``: batch k mod n of epoch k div n."""
        k, n = self.meta_batches, len(self._meta_loader)
        if self._meta_iter is None or self._meta_iter[0] != k or k % n == 0:
            self._meta_iter = (k, self._meta_loader.epoch(k // n, start=k % n))
        batch = next(self._meta_iter[1])
        self.meta_batches = k + 1
        self._meta_iter = (k + 1, self._meta_iter[1])
        return batch

    def _heldout_meta_gradients(self, meta_closure) -> None:
        """``meta_data="heldout"``: ∂L_meta/∂φ at the look-ahead (deltas already set on
        the layers) into the meta-nets' .grad, L_meta = ``meta_closure()``; the model's
        buffers (BatchNorm statistics) are restored afterwards."""
        buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        try:
            with torch.enable_grad():
                loss = meta_closure()
            params = [p for p in self.meta_modules.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g

    # -- model ---------------------------------------------------------------------
    def quant_config(self, policy: dict[str, Any]):
        from bnnopt.nn import QuantConfig

        check_policy(policy)
        cfg = QuantConfig(weight_quantizer=self.options["quantizer"],
                          weight_bits=self.options["bits"], estimator=self.options["estimator"],
                          estimator_options=dict(self.options["estimator_options"]),
                          quantizer_options=dict(self.options["quantizer_options"]), **policy)
        return cfg.validate()

    def prepare(self, model: nn.Module, policy: dict[str, Any]) -> list[str]:
        from bnnopt.nn import binarize_

        return binarize_(model, self.quant_config(policy))

    def build(self, model: nn.Module, optim: OptimConfig) -> None:
        """Base optimizer over all parameters (``adam_eps="official"``: :class:`OfficialEpsAdam`),
        then :meth:`attach` and the public optimizer (``self.learned``) the step runs through."""
        super().build(model, optim)
        if self.options["adam_eps"] == "official" and type(self.optimizer) is torch.optim.Adam:
            from bnnopt.methods.learned.official_adam import OfficialEpsAdam

            group = self.optimizer.param_groups[0]
            self.optimizer = OfficialEpsAdam(model.parameters(), lr=group["lr"],
                                             betas=group["betas"], eps=group["eps"],
                                             weight_decay=group["weight_decay"])

        self.learned = LearnedOptimizer.from_method(self, model, self.optimizer)

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Take ``optimizer`` as the base optimizer and build the meta-nets for every
        quantized layer of ``model`` (seeded by ``meta_seed``, else torch.initial_seed(),
        without moving the global RNG; in the weights' dtype and device)."""
        from bnnopt.nn import quantized_layers

        if self.options["adam_eps"] == "official" and type(optimizer) is torch.optim.Adam:
            raise ValueError(f"{self.method_name} adam_eps 'official' (the default of variant "
                             "'official') needs base=bnnopt.methods.learned.OfficialEpsAdam(...); "
                             "got torch.optim.Adam (or pass adam_eps='torch')")
        self.optimizer = optimizer
        if self.base_lr is None:
            self.base_lr = float(optimizer.param_groups[0]["lr"])
        self.model = model
        self.layers = list(quantized_layers(model))
        if not self.layers:
            raise ValueError(f"method {self.method_name!r} needs at least one quantized layer "
                             "(QConv2d/QLinear); the model has none: call "
                             "bnnopt.binarize_(model, ...) before building the optimizer")
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [name for name, layer in self.layers if id(layer.weight) not in held]
        if missing:
            raise ValueError(f"the base optimizer does not hold the weight of quantized layer "
                             f"{missing[0]!r}; build it over model.parameters() after "
                             "bnnopt.binarize_(model, ...)")
        for _, layer in self.layers:
            layer.track_quantized = True
        first = self.layers[0][1].weight
        seed = self.options["meta_seed"]
        seed = torch.initial_seed() if seed is None else seed
        with torch.random.fork_rng(devices=[]):  # meta-net init never shifts the global RNG
            torch.manual_seed(seed)
            self.build_meta()
        self.meta_modules.to(device=first.device, dtype=first.dtype)  # follow the model
        self.finish_meta()
        self._make_meta_optimizers()

    def build_meta(self) -> None:
        """Create ``self.meta_modules`` entries (uses ``self.layers``)."""
        raise NotImplementedError

    def finish_meta(self) -> None:
        """Hook after the meta-nets moved to the model's device and dtype (e.g. exact inits)."""

    def _make_meta_optimizers(self) -> None:
        """Create ``self.meta_optimizers`` (name -> optimizer over meta-net parameters)."""
        raise NotImplementedError

    # -- the step --------------------------------------------------------------------
    def generate(self, inputs: MetaInputs) -> tuple[list[Tensor], list[Tensor]]:
        """Return (Δ_i differentiable look-ahead offsets, G_i detached generated gradients)."""
        raise NotImplementedError

    def splittable(self) -> bool:
        """Whether :meth:`generate_share` serves the current options (per-element meta-nets)."""
        return False

    def generate_share(self, inputs: MetaInputs, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """(Δ, G) of the flat weight elements [lo, hi) of all layers concatenated in layer
        order, each (hi - lo,): the same values as :meth:`generate`'s, sliced; Δ differentiable.
        ``inputs`` holds the full g, Ŵ, c of every layer."""
        raise NotImplementedError(f"{self.method_name} has no split of the meta work")

    def split_active(self) -> bool:
        """Whether the next step splits the meta work across ranks (module docstring)."""
        return (self.dist is not None and self.dist.enabled and self.sync_learned
                and self.meta_split and self.options["meta_data"] == "train"
                and self.splittable())

    def share_bounds(self, n: int) -> tuple[int, int]:
        """[lo, hi) of this rank's share of ``n`` flat weight elements."""
        return shard_bounds(n, self.dist.rank, self.dist.world_size)

    def _generate_split(self, inputs: MetaInputs) -> tuple[list[Tensor], list[Tensor]]:
        """Generate this rank's share and all-gather (Δ, G) (module docstring): Δ full,
        differentiable on this rank's share only; G full, detached."""
        n = sum(t.numel() for t in inputs.g)
        world = self.dist.world_size
        lo, hi = self.share_bounds(n)
        delta, grad = self.generate_range(inputs, lo, hi)
        sizes = [b - a for a, b in (shard_bounds(n, r, world) for r in range(world))]
        both = all_gather_rows(torch.stack((delta.detach(), grad.detach()), dim=1), sizes)
        full_delta = torch.cat((both[:lo, 0], delta, both[hi:, 0]))
        return split_like(full_delta, inputs.g), split_like(both[:, 1].contiguous(), inputs.g)

    def generate_range(self, inputs: MetaInputs, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """:meth:`generate_share` of [lo, hi), in chunks of ``meta_chunk`` elements when set.

        Each chunk runs under ``torch.utils.checkpoint`` (non-reentrant): its activations
        are dropped after the forward and recomputed when the backward reaches it, so at
        most one chunk's activations are alive at a time (the backward visits the chunks
        one after another, newest first). The recomputation reads the same g, Ŵ, c, HGS
        and meta-net parameters, because :meth:`finish_step` back-propagates before it
        records the new g or steps the meta-optimizers; values and gradients equal the
        unchunked ones up to the order of floating-point sums.
        """
        chunk = self.options["meta_chunk"]
        if not chunk or hi - lo <= chunk:
            return self.generate_share(inputs, lo, hi)
        deltas, grads = [], []
        for a in range(lo, hi, chunk):
            delta, grad = checkpoint(self.generate_share, inputs, a, min(hi, a + chunk),
                                     use_reentrant=False)
            deltas.append(delta)
            grads.append(grad)
        return torch.cat(deltas), torch.cat(grads)

    def record(self, g: list[Tensor], w_hat: list[Tensor]) -> None:
        """Hook called with the newly stored g_t and Ŵ_t at the end of every step."""

    def train_step(self, model: nn.Module, x: Tensor, y: Tensor, criterion) -> StepOutput:
        """One Trainer step: :meth:`LearnedOptimizer.step` with the closure forward +
        criterion + backward (and, under ``meta_data="heldout"``, the held-out meta
        closure), so the Trainer and a user's own loop run the same code."""
        assert self.learned is not None, "build() first"
        opt, out = self.learned, {}

        def closure() -> Tensor:
            opt.zero_grad(set_to_none=True)
            out["logits"] = model(x)
            loss = criterion(out["logits"], y)
            loss.backward()
            return loss

        meta_closure = None
        if self.options["meta_data"] == "heldout" and self._g is not None:
            meta_closure = self._trainer_meta_closure
        loss = opt.step(closure, meta_closure=meta_closure)
        return StepOutput(loss.detach(), out["logits"].detach(),
                          {"meta_step": float(self.last_meta_step)})

    def _trainer_meta_closure(self) -> Tensor:
        """The Trainer's held-out meta loss: mean CE of the next meta batch (``set_meta_data``)."""
        if self._meta_loader is None:
            raise ValueError(f"{self.method_name} meta_data 'heldout' needs the Trainer's meta "
                             "split (set_meta_data); none was given")
        import torch.nn.functional as F

        # meta batches are full and the global batch divides by the ranks: every rank's
        # share has the same size, so the ranks' mean gradients average to the global one
        x, y = self._next_meta_batch()
        return F.cross_entropy(self._meta_forward(x), y)

    # -- the step in phases (driven by bnnopt.methods.learned.optimizer) -------------------
    def begin_step(self, meta_closure=None) -> None:
        """Phase 1: generate (Δ, G) from the stored g, Ŵ and install the look-ahead.

        Every quantized layer gets ``layer.delta`` (a detached leaf proxy of Δ_i whose
        .grad collects ∂L/∂W̃_i over however many backwards follow, so gradient
        accumulation works; :meth:`finish_step` back-propagates it into the meta-nets
        once) and a forward hook that sums ∂L/∂Q of every forward into g_t. With
        ``meta_closure`` (meta_data "heldout") the meta-nets' gradients come from
        ∂(meta_closure())/∂φ at the look-ahead instead (BatchNorm buffers restored
        afterwards) and Δ is installed detached.
        """
        self.discard_step()
        self._follow_weights()
        layers = [layer for _, layer in self.layers]
        meta = self._g is not None
        heldout = meta and self.options["meta_data"] == "heldout"
        if heldout and meta_closure is None:
            raise ValueError(f"{self.method_name} meta_data 'heldout' needs a meta_closure "
                             "returning the held-out loss (step(closure, meta_closure=...))")
        lr = float(self.optimizer.param_groups[0]["lr"])
        pending: dict[str, Any] = {"meta": meta, "split": False, "lr": lr, "grads": [],
                                   "deltas": None,
                                   "proxies": None, "acc": [None] * len(layers), "hooks": [],
                                   "open": True}
        self._pending = pending
        try:
            if meta:
                for opt in self.meta_optimizers.values():
                    opt.zero_grad(set_to_none=True)
                c = [calibration(layer.weight_quantizer, layer.weight) for layer in layers]
                inputs = MetaInputs(self._g, self._w_hat, c, lr)
                pending["split"] = self.split_active()
                if pending["split"]:
                    deltas, grads = self._generate_split(inputs)
                elif self.options["meta_chunk"]:
                    delta, grad = self.generate_range(inputs, 0, sum(t.numel() for t in self._g))
                    deltas, grads = split_like(delta, self._g), split_like(grad, self._g)
                else:
                    deltas, grads = self.generate(inputs)
                if self.options["grad_norm"] != "learned":
                    deltas, grads = ste_normalized(
                        deltas, grads, [ci * gi for ci, gi in zip(c, self._g)], lr,
                        detach_scale=self.options["grad_norm"] == "ste-detached")
                if self.options["lookahead"] == "optimizer" and lr > 0:
                    deltas = [self._optimizer_update(layer.weight, -d / lr, lr)
                              for layer, d in zip(layers, deltas)]
                pending["grads"] = grads
                for layer, delta in zip(layers, deltas):
                    layer.delta = delta
                if self.options["bias_lookahead"] and self._prev_bias_step is not None:
                    for layer, step in zip(layers, self._prev_bias_step):
                        if step is not None:
                            layer.bias_delta = -(lr / self._prev_lr) * step
                if heldout:  # the meta-nets learn from the held-out batch; the step from x
                    self._heldout_meta_gradients(meta_closure)
                    for layer in layers:
                        layer.delta = layer.delta.detach()
                else:
                    # under the split finish_step derives ∂L/∂W̃ from the averaged g:
                    # those proxies need no gradient of their own
                    proxies = [d.detach().requires_grad_(not pending["split"]) for d in deltas]
                    pending["deltas"], pending["proxies"] = deltas, proxies
                    for layer, proxy in zip(layers, proxies):
                        layer.delta = proxy
            for i, layer in enumerate(layers):
                pending["hooks"].append(layer.register_forward_hook(self._g_hook(i)))
        except BaseException:
            self.discard_step()
            raise

    def _g_hook(self, i: int):
        """Forward hook of layer i: sum ∂L/∂Q of this forward's Q into the pending g_t
        (a backward that runs after the look-ahead block closed is not counted)."""
        def hook(module, inputs, output) -> None:
            pending = self._pending
            q = getattr(module, "last_quantized", None)
            if pending is None or q is None or not q.requires_grad:
                return

            def on_grad(grad: Tensor) -> None:
                if pending["open"]:
                    acc = pending["acc"]
                    acc[i] = grad.detach().clone() if acc[i] is None else acc[i] + grad.detach()
            q.register_hook(on_grad)
        return hook

    def end_lookahead(self, store: bool = True) -> None:
        """Phase 2 (after the backward passes): store Ŵ_t = A(W̃_t) (``store``); remove Δ
        and the hooks."""
        pending = self._pending
        layers = [layer for _, layer in self.layers]
        try:
            if store and pending is not None and "w_hat" not in pending:
                new_w = []
                for layer in layers:
                    w_eff = layer.weight.detach()
                    if layer.delta is not None:
                        w_eff = w_eff + layer.delta.detach()
                    new_w.append(pre_quantized(layer.weight_quantizer, w_eff))
                pending["w_hat"] = new_w
        finally:
            if pending is not None:
                pending["open"] = False
                for handle in pending["hooks"]:
                    handle.remove()
                pending["hooks"] = []
            for layer in layers:
                layer.delta = None
                layer.bias_delta = None

    def discard_step(self) -> None:
        """Forget a look-ahead whose step was not taken (e.g. skipped by a GradScaler)."""
        if self._pending is not None:
            self.end_lookahead(store=False)
        self._pending = None

    @property
    def step_pending(self) -> bool:
        """True between :meth:`begin_step` and :meth:`finish_step`."""
        return self._pending is not None

    def finish_step(self, inv_scale: float | None = None) -> bool:
        """Phase 3: store g_t, train the meta-nets, hand G to the base optimizer and step.

        ``inv_scale``: 1/loss scale of a GradScaler (g and ∂L/∂Δ are unscaled by it; a
        non-finite one then skips the whole step and returns False). True when done.
        """
        pending = self._pending
        if pending is None:
            raise RuntimeError(f"{self.method_name}: no look-ahead to finish; call "
                               "step(closure), or run the backward inside `with opt.lookahead():` "
                               "before step()")
        self.end_lookahead()
        self._pending = None
        layers = [layer for _, layer in self.layers]
        meta, lr, grads = pending["meta"], pending["lr"], pending["grads"]
        new_g = [torch.zeros_like(layer.weight) if a is None else a
                 for a, layer in zip(pending["acc"], layers)]
        proxies = pending["proxies"]
        split = pending["split"] and proxies is not None
        outer = None if proxies is None or split else [p.grad for p in proxies]
        if inv_scale is not None:
            new_g = [g * inv_scale for g in new_g]
            outer = None if outer is None else [None if o is None else o * inv_scale
                                                for o in outer]
        new_w = pending["w_hat"]
        syncing = self.dist is not None and self.dist.enabled and self.sync_learned
        if split:
            # g averaged over ranks; ∂L/∂W̃ = J_Q(W̃)ᵀ g on the layers this rank's share
            # reaches, back-propagated through the share; the partials summed over ranks
            self.dist.average_(new_g)
            reach = self._layers_reaching_share()
            outer = [self._lookahead_gradient(i, new_g[i], proxies[i]) for i in reach]
            torch.autograd.backward([pending["deltas"][i] for i in reach], outer)
            meta_grads = self._sum_meta_gradients()
        else:
            if outer is not None:
                used = [(d, o) for d, o in zip(pending["deltas"], outer) if o is not None]
                if used:
                    torch.autograd.backward([d for d, _ in used], [o for _, o in used])
            meta_grads = [p.grad for p in self.meta_modules.parameters()] if meta else []
            if syncing:  # every rank ran the same meta work: the same tensors have grads
                self.dist.average_(new_g + meta_grads)
        if inv_scale is not None:
            # after the all-reduce, so that every rank takes the same decision; a local
            # ∂L/∂Δ (unsplit, several ranks) reaches the check through the meta-gradients
            local = syncing and not split
            checked = new_g + [t for t in meta_grads if t is not None]
            checked += [o for o in (outer or []) if o is not None and not local]
            if not all(bool(torch.isfinite(t).all()) for t in checked):
                return False
        if meta:
            for opt in self.meta_optimizers.values():
                opt.step()
            for layer, grad in zip(layers, grads):
                layer.weight.grad = grad.detach().to(layer.weight.dtype).reshape(layer.weight.shape)
        self._g, self._w_hat = new_g, new_w
        self.record(new_g, new_w)
        self.last_meta_step = meta
        track_w, track_b = self.needs_prev_step, self.options["bias_lookahead"]
        if not meta and self.options["first_step"] == "skip":
            # official first iteration: no update; the raw gradients stand for the step
            def raw(p):
                return torch.zeros_like(p) if p.grad is None else lr * p.grad.detach()
            if track_w:
                self._prev_step = [raw(layer.weight) for layer in layers]
            if track_b:
                self._prev_bias_step = [None if layer.bias is None else raw(layer.bias)
                                        for layer in layers]
            self._prev_lr = lr
            self.steps += 1
            return True
        before = [layer.weight.detach().clone() for layer in layers] if track_w else None
        before_b = ([None if layer.bias is None else layer.bias.detach().clone() for layer in layers]
                    if track_b else None)
        self.optimizer.step()
        if before is not None:
            self._prev_step = [b - layer.weight.detach() for b, layer in zip(before, layers)]
        if before_b is not None:
            self._prev_bias_step = [None if b is None else b - layer.bias.detach()
                                    for b, layer in zip(before_b, layers)]
        self._prev_lr = lr
        self.steps += 1
        return True

    def _layers_reaching_share(self) -> list[int]:
        """Indices of the layers whose ∂L/∂W̃ reaches this rank's meta-gradient: those
        overlapping its share, or all of them when the full Δ is post-processed
        (``grad_norm``, ``lookahead="optimizer"``: every element then depends on the share)."""
        if self.options["grad_norm"] != "learned" or self.options["lookahead"] == "optimizer":
            return list(range(len(self.layers)))
        weights = [layer.weight for _, layer in self.layers]
        lo, hi = self.share_bounds(sum(w.numel() for w in weights))
        return [i for i, _, _ in layer_pieces(weights, lo, hi)]

    def _lookahead_gradient(self, i: int, g: Tensor, proxy: Tensor) -> Tensor:
        """∂L/∂W̃ of layer i from g = ∂L/∂Q: the vector-Jacobian product J_Q(W̃)ᵀ g of its
        weight quantizer at the look-ahead W̃ = W + Δ (recomputed; W is not stepped yet).

        It equals the gradient the backward left on Δ, since W̃ reaches the loss only
        through Q(W̃); and as a vector-Jacobian product is linear in g, at the averaged g
        it is the mean over ranks of their local ∂L/∂W̃.
        """
        layer = self.layers[i][1]
        w_tilde = (layer.weight.detach() + proxy).requires_grad_(True)
        with torch.enable_grad():
            q = layer.weight_quantizer(w_tilde)
        if not q.requires_grad:
            return torch.zeros_like(w_tilde)
        return torch.autograd.grad(q, w_tilde, g.to(q.dtype).reshape(q.shape))[0]

    def _sum_meta_gradients(self) -> list[Tensor | None]:
        """Σ over ranks of the meta-nets' partial gradients; a tensor that no rank reached
        keeps grad None (as in one process: its optimizer then skips it). Returns them."""
        params = list(self.meta_modules.parameters())
        if not params:
            return []
        reached = torch.tensor([float(p.grad is not None) for p in params],
                               dtype=params[0].dtype, device=params[0].device)
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        all_reduce_sum_(grads + [reached])
        for p, g, hit in zip(params, grads, reached.tolist()):
            p.grad = g if hit > 0 else None
        return [p.grad for p in params]

    # -- dtype / device --------------------------------------------------------------------
    def _follow_weights(self) -> None:
        """Move the meta-nets, their optimizers' state and every stored tensor to the
        quantized weights' dtype and device when the model was moved after build."""
        first = self.layers[0][1].weight
        ref = next(self.meta_modules.parameters(), None)
        if ref is None or (ref.dtype == first.dtype and ref.device == first.device):
            return
        device, dtype = first.device, first.dtype

        def move(t):
            if t is None:
                return None
            if isinstance(t, (list, tuple)):
                return type(t)(move(u) for u in t)
            return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

        self.meta_modules.to(device=device, dtype=dtype)
        for opt in self.meta_optimizers.values():
            for state in opt.state.values():
                for key, value in state.items():
                    if isinstance(value, Tensor) and key != "step":
                        state[key] = move(value)
        self._g, self._w_hat = move(self._g), move(self._w_hat)
        self._prev_step, self._prev_bias_step = move(self._prev_step), move(self._prev_bias_step)
        self.move_extra(move)

    def move_extra(self, move) -> None:
        """Hook: apply ``move`` (tensor -> tensor) to subclass-held state (HGS, LSTM state)."""

    def previous_offsets(self, lr: float) -> list[Tensor] | None:
        """-(η/η_prev)·(W_prev - W) per layer: minus η times the previous refined gradient.

        The official look-ahead value offset (its ``- lr * weight.grad``, where
        weight.grad holds the previous step's refined gradient); None before any step.
        """
        if self._prev_step is None:
            return None
        scale = lr / self._prev_lr if self._prev_lr else 1.0
        return [-scale * s for s in self._prev_step]

    def _optimizer_update(self, weight: Tensor, grad: Tensor, lr: float) -> Tensor:
        """The base optimizer's coming update of ``weight`` from ``grad``, differentiable in it.

        torch.optim.Adam (not amsgrad) and torch.optim.SGD are modelled; any other
        optimizer gets the plain SGD step -lr·grad.
        """
        opt = self.optimizer
        group = next(g for g in opt.param_groups if any(p is weight for p in g["params"]))
        state = opt.state.get(weight, {})
        w = weight.detach().reshape(grad.shape)
        if group.get("weight_decay", 0):
            grad = grad + group["weight_decay"] * w
        if isinstance(opt, torch.optim.Adam) and not group.get("amsgrad", False):
            beta1, beta2 = group["betas"]
            step = float(state["step"]) + 1 if "step" in state else 1.0
            m = state.get("exp_avg")
            v = state.get("exp_avg_sq")
            m = (1 - beta1) * grad if m is None else beta1 * m.reshape(grad.shape) + (1 - beta1) * grad
            g2 = grad.detach().square()
            v = (1 - beta2) * g2 if v is None else beta2 * v.reshape(grad.shape) + (1 - beta2) * g2
            eps = group["eps"]
            if type(opt).__name__ == "OfficialEpsAdam":  # ε added to √v, before bias correction
                eps = eps / math.sqrt(1 - beta2 ** step)
            denom = (v / (1 - beta2 ** step)).sqrt() + eps
            return -lr * (m / (1 - beta1 ** step)) / denom
        if isinstance(opt, torch.optim.SGD) and group.get("momentum", 0):
            mu, damp = group["momentum"], group.get("dampening", 0)
            buf = state.get("momentum_buffer")
            buf = grad if buf is None else mu * buf.reshape(grad.shape) + (1 - damp) * grad
            return -lr * (grad + mu * buf if group.get("nesterov", False) else buf)
        return -lr * grad

    # -- checkpoints -----------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()

        def copy(ts):
            return None if ts is None else [t.clone() for t in ts]

        state.update({
            "layers": [name for name, _ in self.layers],
            "steps": self.steps, "meta_batches": self.meta_batches,
            "g": copy(self._g), "w_hat": copy(self._w_hat), "prev_step": copy(self._prev_step),
            "prev_bias_step": (None if self._prev_bias_step is None else
                               [None if t is None else t.clone() for t in self._prev_bias_step]),
            "prev_lr": self._prev_lr,
            "meta_modules": self.meta_modules.state_dict(),
            "meta_optimizers": {k: opt.state_dict() for k, opt in self.meta_optimizers.items()},
            "extra": self.extra_state(),
        })
        return copy_module.deepcopy(state)  # a snapshot: training on must not change it

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [name for name, _ in self.layers]
        if state.get("layers") != names:
            raise ValueError(f"method state was saved for layers {state.get('layers')}; "
                             f"this model's quantized layers are {names}")
        super().load_state_dict(state)
        self.steps = int(state["steps"])
        self.meta_batches = int(state.get("meta_batches", 0))
        self._meta_iter = None
        self.discard_step()
        self._g, self._w_hat, self._prev_step = state["g"], state["w_hat"], state["prev_step"]
        self._prev_bias_step = state.get("prev_bias_step")
        self._prev_lr = state.get("prev_lr")
        self.meta_modules.load_state_dict(state["meta_modules"])
        for key, opt in self.meta_optimizers.items():
            opt.load_state_dict(state["meta_optimizers"][key])
        self.load_extra_state(state["extra"])
