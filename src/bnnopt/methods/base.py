"""The Method interface: what happens inside one optimisation step.

The Trainer owns everything around a step (data, epochs, learning-rate schedule,
evaluation, checkpoints, logs); a Method owns the step itself. Three families
implement it (docs/design.md):

1. estimator family (fp, ste, ede, reste, ...): binarize_ the model with a
   quantizer + surrogate-gradient estimator, then plain autograd + optimizer.
2. learned-gradient family (fcgrad, lstmfc, fsg): meta-nets generate the
   gradient handed to the base optimizer.
3. loss-aware family (lab, laq, blaq): the optimizer owns quantization.

Life cycle, as the Trainer drives it::

    method = METHODS.get(name)(**options)
    method.prepare(model, policy)          # make the model quantized (in place)
    method.build(model, optim_config)      # create optimizers
    for epoch in range(start, epochs):
        method.on_epoch_start(epoch, epochs)
        method.set_lr(lr_for(epoch))
        for x, y in batches:
            out = method.train_step(model, x, y, criterion)
    method.state_dict() / load_state_dict()  # saved in every checkpoint

``prepare`` must be a deterministic function of the method's options and the
policy, so that a checkpoint (config + state dicts) can rebuild the model for
``bnnopt eval`` and ``--resume``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from bnnopt.registry import OPTIMIZERS, choice


@dataclass
class OptimConfig:
    """Base optimizer of the task weights.

    name: "sgd" (plain), "sgdm" (SGD with momentum, Nesterov off) or "adam".
    lr: initial learning rate (the Trainer's schedule scales it per epoch).
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)

    def validate(self) -> "OptimConfig":
        choice(self.name, OPTIMIZERS.names(), "optimizer")
        if not self.lr > 0:
            raise ValueError(f"invalid lr {self.lr!r}; must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"invalid weight_decay {self.weight_decay!r}; must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@OPTIMIZERS.register("sgd", "plain SGD (no momentum)")
def _sgd(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("sgdm", "SGD with momentum (cfg.momentum, default 0.9)")
def _sgdm(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adam", "Adam (Kingma and Ba 2015)")
def _adam(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Create the registered base optimizer ``cfg.name`` over ``params``."""
    return OPTIMIZERS.get(cfg.name)(params, cfg)


@dataclass
class StepOutput:
    """What one training step reports: the (detached) mean loss and logits."""

    loss: torch.Tensor
    logits: torch.Tensor
    extra: dict[str, float] = field(default_factory=dict)


Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Method:
    """Base class of every training method. Subclasses register with METHODS.

    Attributes set by ``build``: ``optimizer`` (the base optimizer whose learning
    rate the schedule controls) and ``base_lr``.
    """

    family: str = "estimator"
    #: layer-selection defaults this method applies under the run's ``policy`` (which wins)
    policy_defaults: dict[str, Any] = {}
    #: options added after runs began storing their resolved options (compare's reuse
    #: check), each with the value that reproduces the code before it: a stored run
    #: without the key equals a run whose value is that one.
    added_options: dict[str, Any] = {}

    def __init__(self, **options: Any):
        self.options = dict(options)
        self.optimizer: torch.optim.Optimizer | None = None
        self.base_lr: float | None = None
        self.scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling (estimator family)
        self.dist = None  # bnnopt.train.distributed.DistContext, set by set_distributed

    def resolved_options(self) -> dict[str, Any]:
        """Every option of this method after its defaults, presets and variants (what runs)."""
        import copy

        return copy.deepcopy(self.options)

    # -- model -----------------------------------------------------------------
    def prepare(self, model: nn.Module, policy: dict[str, Any]) -> list[str]:
        """Quantize ``model`` in place for this method; return the changed module names.

        ``policy`` carries the layer-selection options of binarize_ (keep_first,
        keep_last, include, exclude) and activation quantization.
        """
        raise NotImplementedError

    # -- optimisation ------------------------------------------------------------
    def build(self, model: nn.Module, optim: OptimConfig) -> None:
        """Create the optimizer(s). Default: the base optimizer over all parameters."""
        self.optimizer = build_optimizer(model.parameters(), optim)
        self.base_lr = optim.lr

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of the base optimizer (called by the schedule)."""
        assert self.optimizer is not None, "build() first"
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @classmethod
    def held_out_fraction(cls, options: dict[str, Any]) -> float:
        """Fraction of the training images this method wants held out for itself
        (the learned-gradient methods' meta split); 0 for none."""
        return 0.0

    def set_meta_data(self, loader, forward) -> None:
        """Called by the Trainer when :meth:`held_out_fraction` > 0, with the held-out
        split's loader and the module to run it through (not DDP-wrapped)."""
        raise NotImplementedError(f"{type(self).__name__} holds out no data")

    def set_distributed(self, ctx) -> None:
        """Called by the Trainer under torchrun with its DistContext. The model handed
        to ``train_step`` is then DistributedDataParallel, which averages the model's
        gradients; a method that keeps other state derived from gradients averages
        that itself (see bnnopt.train.distributed)."""
        self.dist = ctx

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        """Hook for annealed estimators; ``epoch`` counts from 0."""

    def train_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   criterion: Criterion) -> StepOutput:
        """One optimisation step on a batch: forward, backward, update."""
        assert self.optimizer is not None, "build() first"
        self.optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = criterion(logits, y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return StepOutput(loss.detach(), logits.detach())

    # -- checkpoints -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything besides the model needed to resume exactly."""
        state = {"optimizer": self.optimizer.state_dict() if self.optimizer else None}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
