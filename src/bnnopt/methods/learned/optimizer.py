"""The learned-gradient methods as torch optimizers: the base of ``bnnopt.FSG``, ``FCGrad``, ``MultiFC``, ``LSTMFC``.

The four public classes live beside their engines (:mod:`bnnopt.methods.learned.fsg`,
:mod:`bnnopt.methods.learned.metaquant`); each sets ``method_class``.

Each wraps a base optimizer the user builds (SGD, SGD-M, Adam, ...) and a method
engine (:class:`~bnnopt.methods.learned.base.LearnedGradientMethod`) that owns the
meta-nets. One step (FSG Algorithm 1; Eq. 12-15; MetaQuant Sec. 3)::

    (Δ_i, G_i) = meta-nets(g_{t-1}, Ŵ_{t-1}, c_t, η)       per quantized layer i
    forward + backward at W̃_i = W_i + Δ_i                  (the user's closure)
    meta-optimizers step on ∂L/∂φ = Σ_i ∂L/∂W̃_i · ∂Δ_i/∂φ
    W_i.grad := G_i;  base optimizer step;  store g_t = ∂L/∂Q, Ŵ_t = A(W̃_t)

(the very first step, with nothing stored, is a plain STE step; see
:mod:`bnnopt.methods.learned.base` for the options and the official-code variants).

The model must already be quantized (``bnnopt.binarize_``; ``FSG.quant_config()``
is the configuration the method's Trainer runs use: DoReFa 1-bit weights, STE):
the optimizer does not swap layers itself, since the base optimizer already holds
the model's parameters. Usage, torch LBFGS convention::

    bnnopt.binarize_(model, bnnopt.FSG.quant_config())
    opt = bnnopt.FSG(model, base=torch.optim.Adam(model.parameters(), lr=1e-3))
    def closure():
        opt.zero_grad()
        loss = criterion(model(x), y)       # any output type: pick the logits yourself
        loss.backward()
        return loss
    opt.step(closure)                      # installs the look-ahead, runs closure, steps

Two-phase form (gradient accumulation, torch.amp.GradScaler)::

    with opt.lookahead():                  # Δ installed; ∂L/∂Q and ∂L/∂Δ summed over backwards
        for xb, yb in micro_batches:
            scaler.scale(criterion(model(xb), yb) / n).backward()
    scaler.step(opt)                       # unscale_ (base parameters), then opt.step()
    scaler.update()

A GradScaler must be given to the constructor (``scaler=``): g = ∂L/∂Q and ∂L/∂Δ
are not parameters of the base optimizer, so ``scaler.unscale_`` does not see
them; ``step()`` divides them by the current scale and skips the whole step (meta
and base) when one is not finite. (The scaler only skips ``step()`` when the base
parameters' gradients are not finite.) An LSTM meta-net's hidden state has advanced
at ``lookahead()`` even when the step is then skipped.

``param_groups`` are the base optimizer's own group dicts, so torch LR schedulers
drive the η the step uses (the look-ahead η and the base step). ``state_dict()``
carries the base optimizer, meta-nets, meta-optimizers, stored g / Ŵ, the HGS,
the LSTM states and the step counters: a checkpoint taken between steps resumes
exactly. ``meta_data="heldout"``: ``step(closure, meta_closure=...)`` (or
``lookahead(meta_closure=...)``) where ``meta_closure()`` returns the held-out loss
computed with the model at the look-ahead; the model's buffers (BatchNorm running
statistics) are restored after it. When torch.distributed is initialised and the
model is DistributedDataParallel, g and the meta-nets' gradients are averaged
across ranks before they are used, so every rank stays identical; the per-weight meta
work is split across the ranks (:mod:`bnnopt.methods.learned.base`, ``meta_split``), and
for LSTMFC ``state_dict()`` then gathers the ranks' hidden states: call it on every rank. After
``model.to(dtype or device)`` the meta-nets and every stored tensor follow the
quantized weights at the next step.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import Tensor, nn

from bnnopt.collectives import all_reduce_mean_

if TYPE_CHECKING:  # the engine imports this module; no import back at run time
    from bnnopt.methods.learned.base import LearnedGradientMethod

__all__ = ["LearnedOptimizer"]


class _ProcessGroupMean:
    """This process's rank and world size in the default process group, and the mean over
    it in place (one flat buffer per dtype/device)."""

    enabled = True

    def __init__(self) -> None:
        self.world_size = torch.distributed.get_world_size()
        self.rank = torch.distributed.get_rank()

    def average_(self, tensors) -> None:
        all_reduce_mean_(tensors, self.world_size)


def _options(config: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Method options from ``config`` (None, a dict, or an object with ``to_options()``)
    and keyword options (which win)."""
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, dict):
        base = dict(config)
    elif callable(getattr(config, "to_options", None)):
        base = dict(config.to_options())
    else:
        raise ValueError(f"invalid config {config!r}; valid: None, a dict of options, or an "
                         "object with to_options()")
    return {**base, **options}


def _subclasses(klass: type) -> list[type]:
    """Every subclass of ``klass``, depth first."""
    found = []
    for sub in klass.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


class LearnedOptimizer(torch.optim.Optimizer):
    """A learned-gradient method as a torch optimizer (see the module docstring).

    model: the quantized task network (or its DistributedDataParallel wrapper);
    base: the torch optimizer over the model's parameters that applies the generated
    gradients; config / options: the method's options (``bnnopt methods`` lists them);
    scaler: the ``torch.amp.GradScaler`` of the two-phase form, if any.
    """

    #: the engine class (set by each public subclass)
    method_class: type[LearnedGradientMethod] | None = None

    def __init__(self, model: nn.Module, base: torch.optim.Optimizer, config: Any = None, *,
                 scaler: torch.amp.GradScaler | None = None, **options: Any):
        if self.method_class is None:
            raise TypeError("LearnedOptimizer is abstract; use bnnopt.FSG, FCGrad, MultiFC "
                            "or LSTMFC")
        if not isinstance(base, torch.optim.Optimizer):
            raise ValueError(f"invalid base {base!r}; valid: a torch.optim.Optimizer over the "
                             "model's parameters")
        self._setup(self.method_class(**_options(config, options)), model, base, scaler)

    @classmethod
    def from_method(cls, method: LearnedGradientMethod, model: nn.Module,
                    base: torch.optim.Optimizer) -> "LearnedOptimizer":
        """The optimizer of an already created method (what the Trainer's methods use)."""
        kind = next((c for c in _subclasses(LearnedOptimizer)
                     if type(method) is c.method_class), cls)
        opt = kind.__new__(kind)
        opt._setup(method, model, base, None)
        return opt

    @classmethod
    def quant_config(cls, config: Any = None, **policy: Any):
        """The :class:`bnnopt.nn.QuantConfig` this method's runs use (quantizer, bits and
        estimator options of ``config``; ``policy``: keep_first, keep_last, include, ...)."""
        return cls.method_class(**_options(config, {})).quant_config(policy)

    def _setup(self, method: LearnedGradientMethod, model: nn.Module,
               base: torch.optim.Optimizer, scaler) -> None:
        from torch.nn.parallel import DistributedDataParallel

        # the Optimizer machinery (hooks, profiling), then the base optimizer's own groups
        super().__init__([{"params": list(g["params"])} for g in base.param_groups],
                         dict(base.defaults))
        self.param_groups = base.param_groups
        self.state = base.state
        self.defaults = base.defaults
        self.base = base
        self.method = method
        self.scaler = scaler
        inner = model.module if isinstance(model, DistributedDataParallel) else model
        method.attach(inner, base)
        method.learned = self
        if (isinstance(model, DistributedDataParallel) and torch.distributed.is_available()
                and torch.distributed.is_initialized()):
            method.set_distributed(_ProcessGroupMean())

    # -- the step -------------------------------------------------------------------------
    @contextmanager
    def lookahead(self, meta_closure: Callable[[], Tensor] | None = None) -> Iterator["LearnedOptimizer"]:
        """Install the look-ahead W̃ = W + Δ for the forward/backward passes in the block.

        ∂L/∂Q and ∂L/∂Δ are summed over every backward in the block (gradient
        accumulation: scale each micro-batch loss as for a plain optimizer). Then call
        :meth:`step` (or ``scaler.step(opt)``). ``meta_closure``: see :meth:`step`.
        """
        with torch.enable_grad():
            self.method.begin_step(meta_closure)
        try:
            yield self
        except BaseException:
            self.method.discard_step()
            raise
        self.method.end_lookahead()

    def step(self, closure: Callable[[], Tensor] | None = None,
             meta_closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One step. With ``closure`` (clears the gradients, computes the loss from the
        model's output, calls backward, returns the loss): look-ahead, closure, step;
        returns the closure's loss. Without: finishes the step prepared by a
        :meth:`lookahead` block. ``meta_closure`` (``meta_data="heldout"``): returns
        the held-out loss; it runs at the look-ahead before ``closure`` and alone
        trains the meta-nets (model buffers restored after it)."""
        if closure is None:
            if meta_closure is not None:
                raise ValueError("meta_closure goes with a closure; in the two-phase form pass "
                                 "it to lookahead(meta_closure=...)")
            self._finish()
            return None
        if self.scaler is not None and self.scaler.is_enabled():
            raise ValueError("with a GradScaler use the two-phase form: backward inside "
                             "`with opt.lookahead():`, then scaler.step(opt)")
        with self.lookahead(meta_closure):
            with torch.enable_grad():
                loss = closure()
        self._finish()
        return loss

    def _finish(self) -> bool:
        inv = None
        if self.scaler is not None and self.scaler.is_enabled():
            inv = 1.0 / float(self.scaler.get_scale())
        return self.method.finish_step(inv_scale=inv)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base"):  # during the Optimizer constructor
            return super().add_param_group(param_group)
        self.base.add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:  # copy.deepcopy / pickle: every attribute
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Base optimizer, meta-nets, meta-optimizers, stored g / Ŵ, HGS, LSTM states, counters."""
        return self.method.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.method.load_state_dict(state_dict)

    # -- views ----------------------------------------------------------------------------
    @property
    def meta_modules(self) -> nn.ModuleDict:
        """The meta-nets (fast/slow-net, LRE, or MetaQuant's meta-net)."""
        return self.method.meta_modules

    @property
    def steps(self) -> int:
        """Finished steps (the official first iteration included)."""
        return self.method.steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method.method_name!r}, base={self.base!r})"

