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

from bnnopt.methods.lossaware.blaq import BLAQ, READINGS
from bnnopt.methods.lossaware.laq import LAQ, NonFiniteStepError, lossaware_params
from bnnopt.methods.lossaware.levels import BITS, SCALE_RULES
from bnnopt.methods.lossaware.prepare import (POLICY_KEYS, check_layer_bits, layer_widths,
                                              prepare_lossaware)
from bnnopt.registry import METHODS, choice
from bnnopt.methods.base import Criterion, Method, OptimConfig, StepOutput
from bnnopt.runs.rundir import NonFiniteLossError

__all__ = ["LossAwareMethod", "LABMethod", "LAQMethod", "BLAQMethod"]

class LossAwareMethod(Method):
    """Base of lab / laq / blaq: prepare with "lossaware" quantizers, build the optimizer."""

    family = "loss-aware"
    name = "loss-aware"
    defaults: dict[str, Any] = {"bits": 1, "levels": "linear", "clip": 1.0, "max_iter": 10,
                                "eps": 1e-8, "first_bits": None, "last_bits": None,
                                "layer_bits": None, "scale_rule": "exact"}
    added_options = {"scale_rule": "exact"}
    bits_allowed: tuple[int, ...] = BITS

    def __init__(self, **options: Any):
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} for method "
                             f"{self.name!r}; valid options: {', '.join(sorted(self.defaults))}")
        merged = {**self.defaults, **options}
        choice(merged["bits"], self.bits_allowed, "bits")
        check_layer_bits(merged["bits"], merged["levels"], merged.get("first_bits"),
                         merged.get("last_bits"), merged.get("layer_bits"))
        if "scale_rule" in merged:
            choice(merged["scale_rule"], SCALE_RULES, "scale_rule")
        clip = merged["clip"]
        if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
            raise ValueError(f"invalid clip {clip!r}; must be > 0 or None")
        super().__init__(**merged)

    # -- model -----------------------------------------------------------------------
    def quant_config(self, policy: dict[str, Any]):
        from bnnopt.nn import QuantConfig

        unknown = set(policy) - set(POLICY_KEYS)
        if unknown:
            raise ValueError(f"unknown policy key {sorted(unknown)[0]!r}; "
                             f"valid keys: {', '.join(POLICY_KEYS)}")
        merged = {"keep_first": False, "keep_last": False, **policy}
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
    defaults = {"bits": 1, "clip": 1.0, "eps": 1e-8, "levels": "linear"}
    added_options: dict[str, Any] = {}
    bits_allowed = (1,)

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
    defaults = {"bits": 1, "levels": "pow2", "clip": 1.0, "eps": 1e-8, "a": 0.6, "m": 5,
                "reading": "trial", "trial_bn_stats": False, "first_bits": None,
                "last_bits": None, "layer_bits": None, "scale_rule": "exact"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        a, m = self.options["a"], self.options["m"]
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise ValueError(f"invalid a {a!r}; must be a number in [0, 1]")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"invalid m {m!r}; must be an integer >= 1")
        choice(self.options["reading"], READINGS, "reading")

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
