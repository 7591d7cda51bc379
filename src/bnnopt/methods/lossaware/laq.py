"""LAB / LAQ: loss-aware weight quantization as a torch optimizer.

LAB (Hou, Yao and Kwok, ICLR 2017, Algorithm 1) and its m-bit extension LAQ
(Hou and Kwok, ICLR 2018, Algorithm 1) minimise the loss w.r.t. the quantized
weights with a proximal Newton step whose diagonal Hessian estimate D is Adam's
second moment. One step t, for every quantized layer l (W latent, W_hat = alpha b
the quantized weight that the forward pass used, g = dL/dW_hat from backward):

    m_t = b1 m_{t-1} + (1 - b1) g                      first moment
    v_t = b2 v_{t-1} + (1 - b2) g^2                    second moment
    D_t = sqrt(v_t / (1 - b2^t)) + eps                 diagonal Hessian estimate
    W_{t+1} = clip(W_t - lr * m_t / (1 - b1^t) / D_t,  -c, c)      (Adam-style)
    W_hat_{t+1} = argmin_{alpha, b in Q} sum D_t (alpha b - W_{t+1})^2

(LAB Eq. 6-7 closed form for 1 bit, LAQ Eq. 8-9 alternating alpha/b solver for
m bits; :mod:`bnnopt.methods.lossaware.levels`). The paper writes D_t with a 1/eta factor;
it cancels in the update and does not change the argmin. The quantization of
step t+1 therefore uses D_t, "d^{t-1}" in the papers' forward pass. Parameters
that are not quantized (biases, BatchNorm, full-precision layers) take the same
Adam update without the projection, as in the official code. ``clip`` (default
1, the papers' [-1, 1]) applies to quantized latent weights only; None disables
it. ``weight_decay`` adds ``wd * W`` to g (L2, as torch.optim.Adam).

The update is written exactly as ``torch.optim.Adam`` (single-tensor path)
writes it, so a non-quantized parameter follows Adam.

Usage::

    opt = LAQ.from_model(model, lr=1e-3)        # model prepared with "lossaware" quantizers
    loss.backward(); opt.step(); opt.zero_grad()
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from bnnopt.methods.lossaware.levels import SCALE_RULES
from bnnopt.methods.lossaware.quantizer import LossAwareQuantizer, is_lossaware

__all__ = ["LAB", "LAQ", "NonFiniteStepError", "SCALE_RULES", "lossaware_params"]


def lossaware_params(model: nn.Module) -> tuple[list[tuple[nn.Parameter, LossAwareQuantizer]],
                                                 list[nn.Parameter]]:
    """Split ``model``'s trainable parameters into (quantized weight, its quantizer)
    pairs, in module order, and all other parameters."""
    pairs, seen = [], set()
    for module in model.modules():
        if is_lossaware(module) and module.weight.requires_grad and id(module.weight) not in seen:
            pairs.append((module.weight, module.weight_quantizer))
            seen.add(id(module.weight))
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return pairs, others


class NonFiniteStepError(FloatingPointError, ValueError):
    """A loss-aware step met a NaN or infinite loss, gradient or update.

    ``what`` names it: "loss", "trial loss", "gradient", "trial gradient" or
    "update"; ``step`` is the 1-based step number. For everything but "update"
    the parameters, moments and quantizers are left as they were before the step.
    """

    def __init__(self, message: str, what: str, step: int):
        super().__init__(message)
        self.what = what
        self.step = step


_PREP_KEYS = ("bits", "levels", "keep_first", "keep_last", "first_bits", "last_bits",
              "layer_bits")


class LAQ(torch.optim.Optimizer):
    """LAB (bits=1) / LAQ (m bits) optimizer; bits and levels live in the quantizers.

    ``LAQ(model, lr=1e-3, bits=2)`` on a plain ``nn.Module`` swaps its layers to the
    "lossaware" quantizer first (:func:`~bnnopt.methods.lossaware.prepare.prepare_lossaware`:
    every quantizable layer, first and last included, unless ``keep_first`` /
    ``keep_last``), then optimizes every trainable parameter of the model. On a
    model that already has lossaware layers it uses them as they are (the
    preparation arguments must then be left out). ``LAQ(pairs, others)`` takes
    explicit (weight, quantizer) pairs instead.

    Args:
        params: an ``nn.Module``, or (weight Parameter, LossAwareQuantizer) pairs.
        others: with pairs, the remaining trainable parameters (plain Adam step).
        lr, betas, eps, weight_decay: as torch.optim.Adam.
        clip: latent-weight clipping bound c (None: off).
        max_iter: rounds of LAQ's alternating alpha/b solver per step (m bits only).
        scale_rule: the solver's alpha-step, "exact" (default, the minimiser
            <d*b, w> / <d*b, b>) or "official" (sum |b d w| / sum |b| d, the
            official LAQ code); see :func:`~bnnopt.methods.lossaware.levels.solve`.
        check_finite: raise :class:`NonFiniteStepError` on a NaN/inf loss,
            gradient or update (default True; one device sync per check).
        bits, levels, keep_first, keep_last, first_bits, last_bits, layer_bits:
            how to prepare a plain model (defaults: 1 bit, ``levels`` "linear" for
            LAQ and "pow2" for BLAQ, keep_first = keep_last = False).

    ``param_groups[0]`` holds the quantized weights, ``param_groups[1]`` (when
    present) every other parameter; ``lr`` in them is read at every step, so
    torch.optim.lr_scheduler schedulers work. ``state_dict()`` holds the
    moments and step counts; the quantizers' alpha and codes are model buffers
    (``model.state_dict()``), so a resume loads both.
    """

    default_levels = "linear"
    fixed_bits: int | None = None

    def __init__(self, params: nn.Module | Iterable[tuple[nn.Parameter, LossAwareQuantizer]],
                 others: Iterable[nn.Parameter] = (), lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip: float | None = 1.0, max_iter: int = 10,
                 *, scale_rule: str = "exact", check_finite: bool = True,
                 bits: int | None = None, levels: str | None = None,
                 keep_first: bool | None = None, keep_last: bool | None = None,
                 first_bits: int | None = None, last_bits: int | None = None,
                 layer_bits: dict[str, int] | None = None):
        if not lr > 0:
            raise ValueError(f"invalid lr {lr!r}; must be > 0")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid betas {betas!r}; each must be in [0, 1)")
        if not eps > 0:
            raise ValueError(f"invalid eps {eps!r}; must be > 0")
        if clip is not None and not clip > 0:
            raise ValueError(f"invalid clip {clip!r}; must be > 0 or None")
        if int(max_iter) < 1:
            raise ValueError(f"invalid max_iter {max_iter!r}; must be >= 1")
        if scale_rule not in SCALE_RULES:
            raise ValueError(f"invalid scale_rule {scale_rule!r}; valid: "
                             f"{', '.join(SCALE_RULES)}")
        prep = {k: v for k, v in dict(bits=bits, levels=levels, keep_first=keep_first,
                                      keep_last=keep_last, first_bits=first_bits,
                                      last_bits=last_bits, layer_bits=layer_bits).items()
                if v is not None}
        self.model: nn.Module | None = None
        if isinstance(params, nn.Module):
            if list(others):
                raise ValueError("invalid others: a model as the first argument brings all "
                                 "its parameters; pass others only with (weight, quantizer) "
                                 "pairs")
            quantized, others = self._from_module(params, prep)
            self.model = params
        else:
            if prep:
                raise ValueError(f"invalid argument {sorted(prep)[0]!r}: it prepares a plain "
                                 "model, so the first argument must be an nn.Module")
            quantized = list(params)
        self.check_finite = bool(check_finite)
        self._quantizer = {p: q for p, q in quantized}
        groups = [{"params": [p for p, _ in quantized], "quantized": True}]
        others = list(others)
        if others:
            groups.append({"params": others, "quantized": False})
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        clip=clip, max_iter=int(max_iter), scale_rule=scale_rule)
        super().__init__(groups, defaults)
        for p, q in quantized:  # a freshly built model: quantize with D = I
            if not q.initialized:
                q.requantize(p, None, solver="exact")

    def _from_module(self, model: nn.Module, prep: dict[str, Any]):
        """(pairs, others) of ``model``, swapping its layers first if it has no lossaware one."""
        from bnnopt.methods.lossaware.prepare import prepare_lossaware

        name = type(self).__name__
        if any(is_lossaware(m) for m in model.modules()):
            if prep:
                raise ValueError(f"invalid argument {sorted(prep)[0]!r}: the model already has "
                                 "lossaware layers (they keep their bits and levels); leave "
                                 "the preparation arguments out")
        else:
            if self.fixed_bits is not None and prep.get("bits", self.fixed_bits) != self.fixed_bits:
                raise ValueError(f"invalid bits {prep['bits']!r} for {name}; valid: "
                                 f"{self.fixed_bits}")
            for key in ("first_bits", "last_bits", "layer_bits"):
                if self.fixed_bits is not None and key in prep:
                    raise ValueError(f"invalid argument {key!r} for {name}: every layer is "
                                     f"{self.fixed_bits}-bit")
            policy = {k: prep[k] for k in ("keep_first", "keep_last") if k in prep}
            names = prepare_lossaware(
                model, bits=prep.get("bits", self.fixed_bits or 1),
                levels=prep.get("levels", self.default_levels), policy=policy,
                first_bits=prep.get("first_bits"), last_bits=prep.get("last_bits"),
                layer_bits=prep.get("layer_bits"))
            if not names:
                raise ValueError(f"{name}: the model has no quantizable layer to swap "
                                 "(see bnnopt.nn.binarize_); nothing to optimize")
        if self.fixed_bits is not None:
            bad = [m.weight_quantizer.bits for m in model.modules() if is_lossaware(m)
                   and m.weight_quantizer.bits != self.fixed_bits]
            if bad:
                raise ValueError(f"invalid bits {bad[0]!r} for {name}; valid: {self.fixed_bits}")
        pairs, others = lossaware_params(model)
        if not pairs:
            raise ValueError(f"{name}: the model has no trainable lossaware layer")
        return pairs, others

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> "LAQ":
        """Optimizer over every parameter of an already prepared ``model``
        (``cls(model, ...)`` also prepares a plain one)."""
        pairs, others = lossaware_params(model)
        if not pairs:
            raise ValueError("model has no layer with a 'lossaware' weight quantizer; "
                             f"construct {cls.__name__}(model, ...) to prepare a plain model, "
                             "or prepare it with the lab/laq/blaq method (or binarize_ with "
                             "weight_quantizer='lossaware') first")
        return cls(model, **kwargs)

    def quantizer_of(self, p: nn.Parameter) -> LossAwareQuantizer | None:
        return self._quantizer.get(p)

    # -- non-finite checks ------------------------------------------------------------
    def _next_step(self) -> int:
        """1-based number of the step being taken."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state:
                    return int(state["step"]) + 1
        return 1

    def _raise(self, what: str, detail: str, step: int) -> None:
        after = ("the parameters were updated and are no longer finite" if what == "update"
                 else "no parameter was changed")
        raise NonFiniteStepError(f"{type(self).__name__} step {step}: non-finite {what} "
                                 f"({detail}); {after}; try a lower lr", what, step)

    def _check_loss(self, loss, what: str, step: int) -> None:
        if self.check_finite and torch.is_tensor(loss) and not bool(torch.isfinite(loss).all()):
            self._raise(what, f"{float(loss.detach().float().sum())}", step)

    def _first_bad(self, tensors: list[tuple[str, torch.Tensor]]) -> str | None:
        """Description of the first non-finite tensor, with one device sync when all are finite."""
        if not tensors:
            return None
        if bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
            return None
        for label, t in tensors:
            if not bool(torch.isfinite(t).all()):
                return f"{label}, shape {list(t.shape)}"
        return None

    def _labelled(self, what: str) -> list[tuple[str, torch.Tensor]]:
        """(label, tensor) of every parameter's gradient ("grad") or value ("param")."""
        out = []
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                out.append((f"param_groups[{gi}] parameter {pi}", p.grad if what == "grad" else p))
                if what == "param" and p in self._quantizer:
                    out.append((f"param_groups[{gi}] parameter {pi} scale alpha",
                                self._quantizer[p].alpha))
        return out

    def _check_grads(self, what: str, step: int) -> None:
        if self.check_finite:
            bad = self._first_bad(self._labelled("grad"))
            if bad is not None:
                self._raise(what, bad, step)

    def _check_update(self, step: int) -> None:
        if self.check_finite:
            bad = self._first_bad(self._labelled("param"))
            if bad is not None:
                self._raise("update", bad, step)

    # -- building blocks (shared with BLAQ) ----------------------------------------
    def _grad(self, p: nn.Parameter, group: dict[str, Any]) -> torch.Tensor:
        g = p.grad
        if group["weight_decay"]:
            g = g.add(p, alpha=group["weight_decay"])
        return g

    @staticmethod
    def _moments(state: dict[str, Any], p: torch.Tensor) -> None:
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @staticmethod
    def _denom(v: torch.Tensor, step: int, b2: float, eps: float) -> torch.Tensor:
        """D = sqrt(v / (1 - b2^step)) + eps, as torch.optim.Adam computes it."""
        return (v.sqrt() / math.sqrt(1 - b2 ** step)).add_(eps)

    @staticmethod
    def _denom_into(out: torch.Tensor, v: torch.Tensor, step: int, b2: float,
                    eps: float) -> torch.Tensor:
        """:meth:`_denom` written into ``out`` (may be ``v``): the same operations."""
        return torch.sqrt(v, out=out).div_(math.sqrt(1 - b2 ** step)).add_(eps)

    def _move(self, p: nn.Parameter, m: torch.Tensor, denom: torch.Tensor, step: int,
              group: dict[str, Any]) -> None:
        """W <- clip(W - lr/(1 - b1^step) * m / D) (clip for quantized weights only)."""
        step_size = group["lr"] / (1 - group["betas"][0] ** step)
        p.addcdiv_(m, denom, value=-step_size)
        if group["quantized"] and group["clip"] is not None:
            p.clamp_(-group["clip"], group["clip"])

    def _quantize(self, w: torch.Tensor, denom: torch.Tensor, group: dict[str, Any],
                  quantizer: LossAwareQuantizer | None = None) -> None:
        """Quantize latent ``w`` (a quantized parameter, or BLAQ's trial copy of one)
        with D = ``denom`` into ``quantizer`` (default: the parameter's own)."""
        quantizer = self._quantizer[w] if quantizer is None else quantizer
        quantizer.requantize(w, denom, max_iter=group["max_iter"],
                             scale_rule=group.get("scale_rule", "exact"))

    # -- the step ---------------------------------------------------------------------
    def _gradients(self):
        """Yield ``(group, p, g, state)`` for every parameter with a gradient, after the
        step count advanced (``g`` = ``self._grad``: clipped, weight decay added)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self._grad(p, group)
                state = self.state[p]
                self._moments(state, p)
                state["step"] += 1
                yield group, p, g, state

    @staticmethod
    def _call_once(closure):
        """The closure's loss (with gradients enabled), or None without a closure."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    @torch.no_grad()
    def step(self, closure=None):
        """One LAB/LAQ step from the gradients in ``.grad`` (closure: optional, called once)."""
        step = self._next_step()
        loss = self._call_once(closure)
        self._check_loss(loss, "loss", step)
        self._check_grads("gradient", step)
        for group, p, g, state in self._gradients():
            b1, b2 = group["betas"]
            state["exp_avg"].lerp_(g, 1 - b1)
            state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = self._denom(state["exp_avg_sq"], state["step"], b2, group["eps"])
            self._move(p, state["exp_avg"], denom, state["step"], group)
            if group["quantized"]:
                self._quantize(p, denom, group)
        self._check_update(step)
        return loss


class LAB(LAQ):
    """LAB (Hou, Yao and Kwok, ICLR 2017): LAQ at 1 bit, closed-form alpha (Eq. 7).

    ``LAB(model, lr=1e-3)`` swaps every quantizable layer of a plain model to a
    1-bit "lossaware" quantizer (``keep_first`` / ``keep_last`` keep those in
    full precision); the arguments are LAQ's (``max_iter`` and ``scale_rule``
    have no effect at 1 bit). ValueError for a model with wider lossaware layers.
    """

    fixed_bits = 1
