"""The loss-aware family as training methods: ``lab``, ``laq``, ``blaq``.

Each method binarize_s the model with the "lossaware" weight quantizer
(:mod:`bnnopt.methods.lossaware.quantizer`), initialises every quantized layer with the
D = I optimum, and trains with its optimizer, which owns quantization:

=====  =========================================  ==========================================
lab    LAB (Hou et al. ICLR 2017), 1 bit          options: clip, eps
laq    LAQ (Hou and Kwok ICLR 2018), 1/2/4 bits   bits (1), levels (linear|log|pow2;
                                                  default linear), clip, max_iter (10),
                                                  eps, first_bits, last_bits, layer_bits,
                                                  scale_rule (exact|official)
blaq   BLAQ (Ma et al. AAAI 2024), 1/2/4 bits     bits (1), levels (default pow2), clip,
                                                  a (0.6), m (5), reading (trial|recursive),
                                                  eps, trial_bn_stats (False), first_bits,
                                                  last_bits, layer_bits, scale_rule
=====  =========================================  ==========================================

The options are the fields of :class:`bnnopt.methods.lossaware.config.LABConfig`,
:class:`~bnnopt.methods.lossaware.config.LAQConfig` and
:class:`~bnnopt.methods.lossaware.config.BLAQConfig`.

LAQ at 1 bit is LAB (LAQ paper, Sec. 3.1). Levels: LAQ keeps its own linear/log
sets (with zero); BLAQ defaults to the paper's powers of two without zero
(``pow2``; at 1 bit all three sets are {-1, 1}). Layer policy: LAB quantizes every
layer, so when the run's ``policy`` does not say otherwise these methods use
``keep_first = keep_last = False``; ``policy = {keep_first = true, ...}`` keeps
them in full precision (those parameters then take the plain Adam step).

Per-layer bit widths (laq, blaq): ``first_bits`` / ``last_bits`` set the width of
the first / last quantizable layer (Conv2d or Linear in module order, as the
policy's keep_first/keep_last), ``layer_bits`` maps layer names (regex,
``re.fullmatch`` on ``model.named_modules()`` names) to widths; later rules win:
``bits``, then ``layer_bits``, then first/last. Widths 1, 2, 4 and 8; an 8-bit
layer uses linear levels (255 uniform levels: BLAQ's ImageNet run "uniformly
quantizes the first and last layers with 8-bit"), other widths use ``levels``.
A layer the policy keeps in full precision stays full precision.

Optimizer: the update is intrinsically Adam-style (D is Adam's second moment), so
from the run's OptimConfig only lr, betas and weight_decay are used; a name
other than "adam" is accepted with a warning.

BLAQ's ``train_step`` builds the closure (clear grads, forward, loss, backward)
that its optimizer calls twice (``reading="trial"``, the default) or once
(``reading="recursive"``, see :mod:`bnnopt.methods.lossaware.blaq`); the optimizer
restores the model's buffers (BatchNorm running statistics) after the trial
(second) call unless ``trial_bn_stats=True``. The reported loss and logits are
those of the current point (first call). The forward passes always go through
the ``model`` argument (e.g. a DDP wrapper), never a stored reference.

``scale_rule`` (laq, blaq): the m-bit solver's alpha-step, "exact" (default) or
"official" (the official LAQ code's formula; see
:func:`bnnopt.methods.lossaware.levels.solve`). A non-finite loss is returned
without a step (the Trainer stops on it); a non-finite gradient, trial loss or
update raises NonFiniteLossError with the optimizer's one-line message.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from bnnopt.methods.base import Criterion, Method, OptimConfig, StepOutput
from bnnopt.methods.config import LOSS_AWARE_POLICY, check_policy
from bnnopt.methods.lossaware.blaq import BLAQ
from bnnopt.methods.lossaware.config import BLAQConfig, LABConfig, LAQConfig, LossAwareConfig
from bnnopt.methods.lossaware.laq import LAQ, NonFiniteStepError, lossaware_params
from bnnopt.methods.lossaware.prepare import layer_widths, prepare_lossaware
from bnnopt.registry import METHODS
from bnnopt.runs.rundir import NonFiniteLossError

__all__ = ["LossAwareMethod", "LABMethod", "LAQMethod", "BLAQMethod"]


class LossAwareMethod(Method):
    """Base of lab / laq / blaq: prepare with "lossaware" quantizers, build the optimizer."""

    family = "loss-aware"
    name = "loss-aware"
    #: the typed options (:mod:`bnnopt.methods.lossaware.config`)
    config_class: type[LossAwareConfig] = LAQConfig
    policy_defaults = LOSS_AWARE_POLICY
    added_options = {"scale_rule": "exact"}

    def __init__(self, **options: Any):
        self.config = self.config_class.from_options(options)
        super().__init__(**self.config.to_options())

    # -- model -----------------------------------------------------------------------
    def quant_config(self, policy: dict[str, Any]):
        from bnnopt.nn import QuantConfig

        check_policy(policy)
        merged = {**LOSS_AWARE_POLICY, **policy}
        return QuantConfig(weight_quantizer="lossaware", weight_bits=self.options["bits"],
                           estimator="ste", quantizer_options={"levels": self.options["levels"]},
                           **merged).validate()

    def layer_widths(self, names: list[str], swapped: list[str]) -> dict[str, int]:
        """Bits of each swapped layer: ``bits``, then ``layer_bits``, then first/last.

        ``names``: every quantizable layer in module order (first/last refer to it).
        """
        opts = self.options
        return layer_widths(names, swapped, opts["bits"], opts.get("first_bits"),
                            opts.get("last_bits"), opts.get("layer_bits"))

    def prepare(self, model: nn.Module, policy: dict[str, Any]) -> list[str]:
        opts = self.options
        return prepare_lossaware(model, bits=opts["bits"], levels=opts["levels"],
                                 policy=policy, first_bits=opts.get("first_bits"),
                                 last_bits=opts.get("last_bits"),
                                 layer_bits=opts.get("layer_bits"))

    # -- optimisation ------------------------------------------------------------------
    def optimizer_kwargs(self, optim: OptimConfig) -> dict[str, Any]:
        if optim.name != "adam":
            warnings.warn(f"method {self.name!r} always takes the Adam-style loss-aware step; "
                          f"optimizer {optim.name!r} is ignored (lr, betas, weight_decay used)",
                          stacklevel=3)
        return dict(lr=optim.lr, betas=tuple(optim.betas), eps=self.options["eps"],
                    weight_decay=optim.weight_decay, clip=self.options["clip"])

    def make_optimizer(self, model: nn.Module, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
        return LAQ(model, max_iter=self.options.get("max_iter", 10),
                   scale_rule=self.options.get("scale_rule", "exact"), **kwargs)

    def build(self, model: nn.Module, optim: OptimConfig) -> None:
        pairs, _ = lossaware_params(model)
        if not pairs:
            raise ValueError(f"method {self.name!r}: the model has no lossaware layer "
                             "(call prepare first, or the policy excluded every layer)")
        self.optimizer = self.make_optimizer(model, self.optimizer_kwargs(optim))
        self.base_lr = optim.lr

    def train_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   criterion: Criterion) -> StepOutput:
        """Forward, backward and the optimizer's step. A non-finite loss skips the step
        and is returned (the Trainer stops with its message); a non-finite gradient
        or update raises NonFiniteLossError with the optimizer's message."""
        assert self.optimizer is not None, "build() first"
        self.optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = criterion(logits, y)
        if not bool(torch.isfinite(loss.detach())):
            return StepOutput(loss.detach(), logits.detach())
        loss.backward()
        try:
            self.optimizer.step()
        except NonFiniteStepError as err:
            raise NonFiniteLossError(str(err)) from err
        return StepOutput(loss.detach(), logits.detach())


@METHODS.register("lab", "LAB loss-aware binarization (Hou et al. 2017): Adam-Hessian "
                         "weighted alpha*sign(W)")
class LABMethod(LossAwareMethod):
    name = "lab"
    config_class = LABConfig
    added_options: dict[str, Any] = {}

    def layer_widths(self, names: list[str], swapped: list[str]) -> dict[str, int]:
        return {name: 1 for name in swapped}


@METHODS.register("laq", "LAQ loss-aware quantization (Hou and Kwok 2018), 1/2/4 bits, "
                         "linear|log|pow2 levels, per-layer bits")
class LAQMethod(LossAwareMethod):
    name = "laq"


@METHODS.register("blaq", "BLAQ one-step forward and backtrack LAQ (Ma et al. AAAI 2024), "
                          "pow2 levels, a=0.6, m=5, reading trial|recursive")
class BLAQMethod(LossAwareMethod):
    name = "blaq"
    config_class = BLAQConfig

    def make_optimizer(self, model: nn.Module, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
        return BLAQ(model, a=self.options["a"], m=self.options["m"],
                    reading=self.options["reading"], scale_rule=self.options["scale_rule"],
                    trial_bn_stats=bool(self.options["trial_bn_stats"]), **kwargs)

    def train_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   criterion: Criterion) -> StepOutput:
        assert self.optimizer is not None, "build() first"
        outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = criterion(logits, y)
            outputs.append((loss.detach(), logits.detach()))
            if len(outputs) == 1 and not bool(torch.isfinite(loss.detach())):
                return loss      # the optimizer refuses it before any change
            loss.backward()
            return loss

        try:
            self.optimizer.step(closure)
        except NonFiniteStepError as err:
            if err.what == "loss":   # nothing changed: the Trainer reports the loss
                return StepOutput(*outputs[0])
            raise NonFiniteLossError(str(err)) from err
        loss, logits = outputs[0]
        extra = {"trial_loss": float(outputs[1][0])} if len(outputs) > 1 else {}
        return StepOutput(loss, logits, extra)
