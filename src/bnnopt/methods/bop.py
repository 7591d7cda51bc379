"""Bop, the binary optimizer (Helwegen et al., NeurIPS 2019, "Latent weights do not
exist: rethinking binarized neural network optimization", Algorithm 1).

Bop keeps no latent real-valued weight. Each binary weight w_i in {-1, +1} has one
real state m_i, an exponential moving average of its gradient g_i = dL/dw_i, and is
flipped when that average is both strong enough and points in w_i's own direction
(a step against the gradient then changes the sign)::

    m_t = (1 - gamma) m_{t-1} + gamma g_t                      (gamma: adaptivity rate)
    w_t = -w_{t-1}   if |m_t| > tau and sign(m_t) = sign(w_{t-1})   (tau: threshold)
    w_t =  w_{t-1}   otherwise

with m_0 = 0. Since w_i = +-1, the flip condition is m_i w_i > tau (the form larq's
implementation uses). A larger gamma reacts faster and is noisier; a larger tau
flips less often.

How the binary weights live in a bnnopt model: a quantized layer (``QLinear``,
``QConv2d``) whose latent ``weight`` holds +-1 exactly and whose weight quantizer is
``sign`` with the identity straight-through estimator, so the forward pass uses
Q(W) = sign(W) = W and the gradient autograd leaves in ``weight.grad`` is dL/dw.
:meth:`BopMethod.prepare` builds such layers with ``binarize_``; :class:`Bop` sets the
weights it is given to sign(W) (sign(0) := +1) when it is created. With the
``scaled_sign`` quantizer (option ``scale="learned"``, not in the paper) the forward
uses Q = alpha * w, alpha a learned real scale per output channel, and dL/dw =
alpha * dL/dQ. Everything else (biases, normalisation layers, float layers,
embeddings, those scales) is real-valued and is trained by a second, ordinary
optimizer (``base``), which :meth:`Bop.step` steps after the flips::

    binarize_(model, QuantConfig(weight_quantizer="sign", estimator="ste"))
    binary, real = split_params(model)
    opt = bnnopt.Bop(model, base=torch.optim.Adam(real, lr=1e-3), gamma=1e-4, tau=1e-8)
    for x, y in batches:
        opt.zero_grad()                 # both optimizers' gradients
        criterion(model(x), y).backward()
        opt.step()                      # flips, then the base step

``Bop(params, ...)`` also takes an iterable of tensors (all binary) or of parameter
groups (dicts with their own "gamma" / "tau"), like any torch.optim optimizer.
``state_dict()`` holds every m (and the base optimizer's state under "base").

Registered as the method ``bop`` (options gamma, tau, scale; :class:`BopConfig`): the
run's optimizer (``--optimizer``, ``--lr`` and the schedule) is the base optimizer
of the real-valued parameters; gamma and tau stay constant.

Shapes: any weight shape; m has the shape of its weight.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import nn

from bnnopt.methods.base import Criterion, Method, OptimConfig, StepOutput, build_optimizer
from bnnopt.methods.config import MethodConfig, check_number, check_policy
from bnnopt.registry import METHODS

__all__ = ["Bop", "BopConfig", "BopMethod", "split_params"]


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(binary, real) parameters of ``model``: the weights of its quantized layers, and
    every other parameter that requires a gradient (each parameter once).

    ValueError when a quantized layer's weight quantizer is not 1-bit ``sign`` or
    ``scaled_sign`` (Bop's weights are the +-1 values themselves; another quantizer would
    reinterpret them). A ``scaled_sign`` layer's learned scale is a real-valued parameter.
    """
    from bnnopt.nn import quantized_layers

    binary: list[nn.Parameter] = []
    seen: set[int] = set()
    for name, layer in quantized_layers(model):
        quantizer = layer.weight_quantizer
        if getattr(quantizer, "name", None) not in BINARY_QUANTIZERS or quantizer.bits != 1:
            raise ValueError(f"Bop needs 1-bit 'sign' or 'scaled_sign' weight quantizers; "
                             f"layer {name!r} has "
                             f"{getattr(quantizer, 'name', type(quantizer).__name__)!r} at "
                             f"{quantizer.bits} bits")
        if id(layer.weight) not in seen:
            seen.add(id(layer.weight))
            binary.append(layer.weight)
    real = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return binary, real


#: weight quantizers whose forward is (a scale times) the +-1 latent weight itself
BINARY_QUANTIZERS = ("sign", "scaled_sign")
#: ``BopConfig.scale`` -> the weight quantizer of the binary layers
SCALES = {"none": "sign", "learned": "scaled_sign"}


def _check_hyper(gamma: Any, tau: Any) -> None:
    number = not isinstance(gamma, bool) and isinstance(gamma, (int, float))
    if not (number and 0.0 < gamma <= 1.0):
        raise ValueError(f"invalid Bop gamma (adaptivity rate) {gamma!r}; must be a number "
                         "in (0, 1]")
    check_number(tau, "Bop tau (threshold)", low=0.0)


class Bop(torch.optim.Optimizer):
    """Binary optimizer: flip w in {-1, +1} when |m| > tau and sign(m) = sign(w),
    m the gradient's moving average with rate gamma (see the module docstring).

    Args:
        params: an ``nn.Module`` (its quantized layers' weights are the binary
            parameters, :func:`split_params`), or an iterable of tensors / parameter
            groups, all binary.
        base: optimizer of the real-valued parameters, stepped after the flips and
            zeroed with them (None: no real-valued parameter is trained here). It
            must not hold a binary parameter.
        gamma: adaptivity rate, 0 < gamma <= 1.
        tau: threshold, tau >= 0.

    Attributes:
        base: the base optimizer (or None).
        last_flips: number of weights flipped by the last :meth:`step`.
    """

    def __init__(self, params: nn.Module | Iterable[Any], base: torch.optim.Optimizer | None = None,
                 gamma: float = 1e-4, tau: float = 1e-8) -> None:
        _check_hyper(gamma, tau)
        if isinstance(params, nn.Module):
            params, _ = split_params(params)
            if not params:
                raise ValueError("Bop: the model has no quantized layer; binarize_ it with "
                                 "QuantConfig(weight_quantizer='sign') first")
        if base is not None and not isinstance(base, torch.optim.Optimizer):
            raise ValueError(f"invalid Bop base {base!r}; must be a torch.optim.Optimizer or None")
        super().__init__(params, dict(gamma=float(gamma), tau=float(tau)))
        for group in self.param_groups:
            _check_hyper(group["gamma"], group["tau"])
        binary_ids = {id(p) for group in self.param_groups for p in group["params"]}
        if base is not None:
            shared = [p for g in base.param_groups for p in g["params"] if id(p) in binary_ids]
            if shared:
                raise ValueError(f"Bop base optimizer holds {len(shared)} binary parameter(s) of "
                                 f"shape {tuple(shared[0].shape)}; pass it the real-valued ones "
                                 "only (bnnopt.methods.bop.split_params)")
        self.base = base
        self.last_flips = 0
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.copy_(torch.where(p >= 0, 1.0, -1.0).to(p.dtype))

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        if self.base is not None:
            self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One Bop update of every binary weight that has a gradient, then ``base.step()``.

        ``closure`` (optional) re-evaluates the model and returns the loss, called once
        with gradients enabled before the update.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        flips = 0
        for group in self.param_groups:
            gamma, tau = group["gamma"], group["tau"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "m" not in state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["m"]
                m.mul_(1.0 - gamma).add_(p.grad, alpha=gamma)
                flip = (m.abs() > tau) & (torch.sign(m) == torch.sign(p))
                p.copy_(torch.where(flip, -p, p))
                flips += int(flip.sum())
        self.last_flips = flips
        if self.base is not None:
            self.base.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.base is not None:
            state["base"] = self.base.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        base = state_dict.pop("base", None)
        if (base is None) != (self.base is None):
            raise ValueError("Bop state_dict " + ("has no" if base is None else "has a")
                             + " base optimizer state, but this Bop "
                             + ("has one" if self.base is not None else "has none"))
        super().load_state_dict(state_dict)
        if base is not None:
            self.base.load_state_dict(base)


@dataclasses.dataclass(frozen=True)
class BopConfig(MethodConfig):
    """Options of the method ``bop``.

    Attributes:
        gamma: adaptivity rate of the gradient's moving average, 0 < gamma <= 1.
        tau: flip threshold on |m|, >= 0.
        scale: "none" (the paper: Q = w, the networks it was published with normalise
            after every binary layer) or "learned" (not in the paper: Q = alpha * w with
            alpha a real-valued parameter per output channel, initialised to mean|W| of
            the float weights and trained by the base optimizer; the ``scaled_sign``
            quantizer), for networks without a normalisation after each binary layer,
            such as a pre-norm Transformer. With it dL/dw = alpha * dL/dQ, so tau is
            relative to the scale.
    """

    gamma: float = 1e-4
    tau: float = 1e-8
    scale: str = "none"

    method: ClassVar[str] = "bop"

    def validate(self) -> None:
        super().validate()
        _check_hyper(self.gamma, self.tau)
        if self.scale not in SCALES:
            raise ValueError(f"invalid Bop scale {self.scale!r}; valid: {', '.join(SCALES)}")


@METHODS.register("bop", "Bop (Helwegen et al. 2019): binary weights flipped when the "
                         "gradient average exceeds tau; options gamma, tau, scale")
class BopMethod(Method):
    """``bop``: sign layers with +-1 weights, trained by :class:`Bop`; the run's optimizer
    (and its learning-rate schedule) trains the real-valued parameters."""

    family = "bop"
    added_options = {"scale": "none"}

    def __init__(self, **options: Any):
        #: the resolved typed options (:class:`BopConfig`)
        self.config = BopConfig.from_options(options)
        super().__init__(**self.config.to_options())
        self.bop: Bop | None = None

    def quant_config(self, policy: dict[str, Any]):
        from bnnopt.nn import QuantConfig

        check_policy(policy)
        return QuantConfig(weight_quantizer=SCALES[self.config.scale], weight_bits=1,
                           estimator="ste", **policy).validate()

    def prepare(self, model: nn.Module, policy: dict[str, Any]) -> list[str]:
        from bnnopt.nn import binarize_, quantized_layers

        names = binarize_(model, self.quant_config(policy))
        with torch.no_grad():  # the +-1 weights (Bop sets them again when built)
            for _, layer in quantized_layers(model):
                layer.weight.copy_(torch.where(layer.weight >= 0, 1.0, -1.0))
        return names

    def build(self, model: nn.Module, optim: OptimConfig) -> None:
        binary, real = split_params(model)
        base = build_optimizer(real, optim) if real else None
        self.bop = Bop(binary, base=base, gamma=self.config.gamma, tau=self.config.tau)
        self.optimizer = base
        self.base_lr = optim.lr

    def set_lr(self, lr: float) -> None:
        assert self.bop is not None, "build() first"
        if self.optimizer is not None:
            super().set_lr(lr)

    def train_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   criterion: Criterion) -> StepOutput:
        assert self.bop is not None, "build() first"
        self.bop.zero_grad(set_to_none=True)
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
        self.bop.step()
        return StepOutput(loss.detach(), logits.detach(), {"flips": float(self.bop.last_flips)})

    def state_dict(self) -> dict[str, Any]:
        return {"bop": self.bop.state_dict() if self.bop is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.bop is not None and state.get("bop") is not None:
            self.bop.load_state_dict(state["bop"])
