"""BLAQ: one-step forward and backtrack loss-aware quantization (Ma et al., AAAI 2024).

Ma, Zhou, Ma, Yu and Li, "One-Step Forward and Backtrack: Overcoming Zig-Zagging
in Loss-Aware Quantization Training", AAAI 2024 (arXiv 2401.16760), Eq. 4-10. LAQ's update
uses the gradient at the quantized point, whose error makes successive
directions zig-zag; BLAQ looks one step ahead and mixes the gradient found there
into the current step. One step t (notation of :mod:`bnnopt.methods.lossaware.laq`; every
parameter, quantized or not, follows it; Q_D is the D-weighted quantization):

Stage 1, one-step forward (Eq. 4-6)::

    g_t   = dL/dW_hat at W_hat_t                          closure call 1
    v_t   = b2 h_{t-1} + (1-b2) g_t^2,   D_t = sqrt(v_t/(1-b2^t)) + eps
    m'    = b1 m_{t-1} + (1-b1) g_t
    W'    = clip(W_t - lr m'/(1-b1^t) / D_t)              the LAQ step = trial point
    W_hat' = Q_{D_t}(W')
    g'    = dL/dW_hat at W_hat'                           closure call 2 (trial gradient)
    D'    = sqrt((b2 v_t + (1-b2) g'^2)/(1-b2^(t+1))) + eps  (trial D: the D the
            next LAQ step would use)

Stage 2, backtrack and update (Eq. 7-10)::

    g~ = a g_t + (1-a) g'               D~ = a D_t + (1-a) D'
    m_t = b1 m_{t-1} + (1-b1) g~
    h_t = b2 h_{t-1} + (1-b2) (a g_t^2 + (1-a) g'^2)      (h_0 = 0)
    W_{t+1} = clip(W_t - lr m_t/(1-b1^t) / D~)        from W_t (backtracked)
    W_hat_{t+1} = Q_{D~}(W_{t+1})

Moment bookkeeping. The paper writes Eq. 6 and 8 with a bare g and D and does
not say which moments carry over between steps; LAQ's Adam-style reading is
used (the first moment m of the gradients, D from the second moment). Eq. 9
feeds the first moment with g~, which contains the trial gradients g'; the
second-moment history h (state ``mixed_avg_sq``) therefore receives the squares
of the same gradients with the same weights, a g_t^2 + (1-a) g'^2 (>= g~^2), and
the current point's v_t (state ``exp_avg_sq``) and the trial's v' are built on h.
Were h fed with g_t^2 only (the trial's squares discarded), a weight whose
gradient is zero at the current point but not at the trial point (a ReLU unit
that is dead at W_hat_t and alive at W_hat') would accumulate g' in m and
nothing in v: D = eps on later steps and a step of lr * |m| / eps, i.e. of
order 10^4 * lr. On a small Conv1d + MLP network that made the loss explode
within 5 steps at lr = 1e-3. Step 1 (h_0 = 0) is the same under both
bookkeepings, and so is every step at a = 1 (then h_t = v_t: LAQ, bit for bit).
Bound: |m_hat| / sqrt(h_hat) obeys Adam's bound, and D_t, D' >= sqrt(b2 h_{t-1}
/ (1 - b2^(t+1))), so the backtracked step stays of order lr.

With a = 1 the trial is discarded and the step is LAQ's, bit for bit (the trial
is still evaluated). The paper uses a = 0.6 for the small models and 0.9 on
ImageNet. This is ``reading="trial"`` (the default): Eq. 9-10 with g^t the
gradient at the current point and g*(t+1) the trial gradient, two forward and
backward passes per step.

``reading="recursive"`` (opt-in) reads Eq. 9-10 as a recursion over steps,
the previous step's *mixed* gradient and D on the right-hand side and the
gradient at the point the previous update reached as the "next-step" one::

    g_t = dL/dW_hat at W_hat_t               closure call (the only one)
    v_t, D_t as above                        (Adam's second moment of g_t)
    g~_t = a g~_{t-1} + (1-a) g_t            Eq. 9   (g~_0 = g_0)
    D~_t = a D~_{t-1} + (1-a) D_t            Eq. 10  (D~_0 = D_0)
    m_t = b1 m_{t-1} + (1-b1) g~_t
    W_{t+1} = clip(W_t - lr m_t/(1-b1^t) / D~_t),  W_hat_{t+1} = Q_{D~_t}(W_{t+1})

One forward/backward per step (LAQ's cost). This is a different algorithm from
Eq. 4-10, not a cheaper way to compute it: no trial point is evaluated, so the
"next-step" gradient is the one at the point the previous update reached, and
the mix is an exponential average of LAQ gradients (and of LAQ's D) in front of
Adam's first moment. Here a weighs the *old* mixed gradient: a = 1 would freeze
g~ and D~ at their first values (accepted, but not LAQ), and the paper's a = 0.6
keeps 60 % of the history. At a = 0 the step is LAQ's step, but the solver runs
m rounds where LAQ runs ``max_iter`` (10): the two are equal bit for bit only
while LAQ's solver stops (converges) within m rounds. At 1 bit (closed form) and
usually at 2 bits that always holds; at 4 bits with m = 5 a layer eventually
needs more rounds and the runs part (on a small MLP, after some tens of steps).
The default stays "trial", the paper's two-pass algorithm.

Levels at k bits. The paper's "Notations" define Q as "a set of 2k quantized
values" and print Q = {-1, ..., -1/2^(k-1), -1/2^k, 1/2^k, 1/2^(k-1), ..., 1},
adding "when k = 1, Q = {-1, 1}". The printed endpoints +-1/2^k give 2k + 2
values ({+-1, +-1/2} at k = 1), contradicting both the count and the k = 1
example; the count and the example agree, so ``levels="pow2"`` uses the 2k
values +-1, +-1/2, ..., +-1/2^(k-1) (:mod:`bnnopt.methods.lossaware.levels`).
At k = 4 that is 8 values {+-1, +-1/2, +-1/4, +-1/8} in 16 codes (3 bits
would hold them): the literal reading of "k bits" as the exponent range, kept
because it is the only one consistent with the stated count; ``levels="linear"``
or ``"log"`` (LAQ's sets, with zero, 15 values at 4 bits) use all the codes.

The paper's second hyper-parameter m (5 for the small models, 10 for ImageNet)
is not defined in its body. Interpretation used here (option ``m``): the number
of rounds of LAQ's alternating alpha/b solver in each quantization Q_D (both
the trial's and the final one; it has no effect at 1 bit, where Q_D is closed
form). Rationale: BLAQ builds on LAQ, whose official code runs exactly this
alternation for a fixed number of rounds (10, BLAQ's ImageNet value), and it is
the only integer knob inside a BLAQ step. So m trades solver accuracy for time
and leaves the two-pass structure of a step (and its cost floor) unchanged.
Other readings (e.g. "take the trial step every m-th step") would change that
structure; they are not implemented.

The closure (as for torch.optim.LBFGS) must clear the gradients, evaluate the
loss at the current parameters (the forward pass reads the stored W_hat),
call backward and return the loss. It is called exactly twice per step. The
:class:`~bnnopt.methods.lossaware.method.BLAQMethod` closure also restores BatchNorm running
statistics after the trial forward, so only the real point updates them.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from bnnopt.methods.lossaware.laq import LAQ
from bnnopt.methods.lossaware.quantizer import LossAwareQuantizer

__all__ = ["BLAQ", "READINGS"]

READINGS = ("trial", "recursive")


class BLAQ(LAQ):
    """BLAQ optimizer: LAQ plus a trial step and a backtracked, mixed update.

    ``BLAQ(model, lr=1e-3, bits=2, a=0.6)`` prepares a plain model as
    :class:`LAQ` does (every quantizable layer, first and last included, unless
    ``keep_first`` / ``keep_last``; levels default to the paper's ``"pow2"``).
    ``opt.step(closure)``: the closure clears the gradients, runs the forward
    pass, backward, and returns the loss (as for torch.optim.LBFGS).

    Args (besides those of :class:`LAQ`):
        a: weight of the current gradient / D in the mix (Eq. 9-10), in [0, 1]
            (recursive reading: the weight of the previous mixed gradient / D).
        m: rounds of the alternating alpha/b solver per quantization (see the
            module docstring; replaces LAQ's ``max_iter``).
        reading: "trial" (two passes per step) or "recursive" (one pass).
        trial_bn_stats: keep the buffer updates of the trial forward pass
            (default False: when built from a model, its buffers, e.g. BatchNorm
            running statistics and num_batches_tracked, are saved before the
            trial pass and restored after it, so only the real point updates them;
            built from (weight, quantizer) pairs, the optimizer knows no buffers).
    """

    default_levels = "pow2"

    def __init__(self, params, others=(), lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip: float | None = 1.0, a: float = 0.6,
                 m: int = 5, reading: str = "trial", trial_bn_stats: bool = False,
                 **kwargs: Any):
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise ValueError(f"invalid a {a!r}; must be in [0, 1]")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"invalid m {m!r}; must be an integer >= 1")
        if reading not in READINGS:
            raise ValueError(f"invalid reading {reading!r}; valid: {', '.join(READINGS)}")
        if "max_iter" in kwargs:
            raise ValueError("invalid argument 'max_iter' for BLAQ; use m (solver rounds)")
        super().__init__(params, others, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, clip=clip, max_iter=m, **kwargs)
        for group in self.param_groups:
            group.setdefault("a", float(a))
        self.defaults["a"] = float(a)
        self.reading = reading
        self.trial_bn_stats = bool(trial_bn_stats)
        self._scratch: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def _trial_buffers(self) -> list[torch.Tensor]:
        """The model's buffers (the quantizers' excepted) as they are now: looked up at every
        step, since ``model.to(...)`` / ``model.double()`` after construction replace them."""
        if self.model is None:
            return []
        return [buf for module in self.model.modules() if not isinstance(module, LossAwareQuantizer)
                for buf in module._buffers.values() if buf is not None]

    def _buffers(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter scratch tensors, allocated once (fresh CPU allocations page-fault)."""
        bufs = self._scratch.get(p)
        if bufs is None or bufs["w_t"].shape != p.shape:
            bufs = {k: torch.empty_like(p, memory_format=torch.preserve_format)
                    for k in ("v", "denom", "w_t", "tmp")}
            self._scratch[p] = bufs
        return bufs

    @torch.no_grad()
    def _recursive_step(self, closure: Callable[[], Any] | None):
        """The one-pass reading (module docstring); closure optional, called once."""
        step = self._next_step()
        loss = self._call_once(closure)
        self._check_loss(loss, "loss", step)
        self._check_grads("gradient", step)
        for group, p, g, state in self._gradients():
            b1, b2 = group["betas"]
            a = group["a"]
            state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = self._denom(state["exp_avg_sq"], state["step"], b2, group["eps"])
            if "mix_grad" not in state:                            # g~_0 = g_0, D~_0 = D_0
                state["mix_grad"] = g.clone(memory_format=torch.preserve_format)
                state["mix_denom"] = denom
            else:
                state["mix_grad"].mul_(a).add_(g, alpha=1 - a)        # Eq. 9
                state["mix_denom"].mul_(a).add_(denom, alpha=1 - a)   # Eq. 10
            state["exp_avg"].lerp_(state["mix_grad"], 1 - b1)
            self._move(p, state["exp_avg"], state["mix_denom"], state["step"], group)
            if group["quantized"]:
                self._quantize(p, state["mix_denom"], group)
        self._check_update(step)
        return loss

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One BLAQ step; returns the loss of the first closure call (the current point)."""
        if self.reading == "recursive":
            return self._recursive_step(closure)
        if closure is None:
            raise ValueError("BLAQ.step needs a closure (it evaluates a trial point); "
                             "see torch.optim.LBFGS for the convention")
        step_number = self._next_step()
        with torch.enable_grad():
            loss = closure()
        self._check_loss(loss, "loss", step_number)
        self._check_grads("gradient", step_number)
        # ---- stage 1: trial step = the LAQ step, remembering what to backtrack to.
        # A quantized layer's forward reads only its stored W_hat, so its trial latent W'
        # goes to a scratch buffer and p keeps W_t (nothing to restore); other parameters
        # are used as they are, so they move to W' and are copied back afterwards.
        saved = []
        for group in self.param_groups:
            b1, b2 = group["betas"]
            quantized = group["quantized"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                self._moments(state, p)
                step = state["step"] + 1
                buf = self._buffers(p)
                g = p.grad                     # taken over: the trial backward gets a new one
                p.grad = None
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if "mixed_avg_sq" not in state:     # h_0 = v_0 (zeros, or a LAQ state)
                    state["mixed_avg_sq"] = state["exp_avg_sq"].clone()
                v = torch.mul(state["mixed_avg_sq"], b2, out=buf["v"]).addcmul_(g, g,
                                                                              value=1 - b2)
                denom = self._denom_into(buf["denom"], v, step, b2, group["eps"])
                m_trial = torch.lerp(state["exp_avg"], g, 1 - b1, out=buf["tmp"])
                quantizer = self._quantizer.get(p)
                snap = None
                if quantizer is not None and (quantizer.bits > 1 or self.check_finite):
                    snap = quantizer.snapshot()   # warm start of the solver / undo
                step_size = group["lr"] / (1 - b1 ** step)
                if quantized:
                    w_trial = torch.addcdiv(p, m_trial, denom, value=-step_size, out=buf["w_t"])
                    if group["clip"] is not None:
                        w_trial.clamp_(-group["clip"], group["clip"])
                    self._quantize(w_trial, denom, group, quantizer)
                else:
                    buf["w_t"].copy_(p)
                    self._move(p, m_trial, denom, step, group)
                saved.append((p, group, buf, g, snap))
        buffers = [] if self.trial_bn_stats else self._trial_buffers()
        saved_buffers = [b.clone() for b in buffers]
        with torch.enable_grad():
            trial_loss = closure()
        for buf, old in zip(buffers, saved_buffers):
            buf.copy_(old)
        if self.check_finite:
            try:
                self._check_loss(trial_loss, "trial loss", step_number)
                self._check_grads("trial gradient", step_number)
            except Exception:
                self._undo_trial(saved)
                raise
        # ---- stage 2: backtrack to W_t and take the mixed step
        for p, group, buf, g, snap in saved:
            b1, b2 = group["betas"]
            a = group["a"]
            state = self.state[p]
            step = state["step"] + 1
            v, denom = buf["v"], buf["denom"]
            w_trial = buf["w_t"] if group["quantized"] else p
            if a < 1 and p.grad is not None:
                g_trial = p.grad
                if g_trial.data_ptr() == g.data_ptr():
                    raise RuntimeError("BLAQ: the trial backward wrote into the current "
                                       "gradient's memory (DDP gradient_as_bucket_view=True?); "
                                       "use gradient_as_bucket_view=False")
                if group["weight_decay"]:
                    g_trial = g_trial.add(w_trial, alpha=group["weight_decay"])  # at W'
                # h_t = b2 h_{t-1} + (1-b2) (a g^2 + (1-a) g'^2): every gradient that enters
                # the first moment below also enters the second-moment history
                state["mixed_avg_sq"].mul_(b2).addcmul_(g, g, value=(1 - b2) * a).addcmul_(
                    g_trial, g_trial, value=(1 - b2) * (1 - a))
                v_trial = torch.mul(v, b2, out=buf["tmp"]).addcmul_(g_trial, g_trial,
                                                                     value=1 - b2)
                # D~ = a D + (1-a) D' with D' = sqrt(v'/(1-b2^(t+1))) + eps, in fewer passes:
                # a D + (1-a)/sqrt(1-b2^(t+1)) sqrt(v') + (1-a) eps
                sqrt_trial = torch.sqrt(v_trial, out=v_trial)
                denom.mul_(a).add_(sqrt_trial, alpha=(1 - a) / math.sqrt(1 - b2 ** (step + 1)))
                denom.add_((1 - a) * group["eps"])
                g.lerp_(g_trial, 1 - a)                   # g~ = a g + (1-a) g'  (Eq. 9)
            else:
                state["mixed_avg_sq"].copy_(v)            # no trial gradient: h_t = v_t
            state["step"] = step
            state["exp_avg"].lerp_(g, 1 - b1)
            state["exp_avg_sq"], buf["v"] = v, state["exp_avg_sq"]   # v_t (swap, no copy)
            if not group["quantized"]:
                p.copy_(buf["w_t"])
            self._move(p, state["exp_avg"], denom, step, group)
            if group["quantized"]:
                quantizer = self._quantizer[p]
                if snap is not None and quantizer.bits > 1:
                    quantizer.restore(snap)
                self._quantize(p, denom, group, quantizer)
        self._check_update(step_number)
        return loss

    def _undo_trial(self, saved) -> None:
        """Back to W_t after a failed trial: parameters, quantizers and gradients."""
        for p, group, buf, _g, snap in saved:
            if not group["quantized"]:
                p.copy_(buf["w_t"])
            if snap is not None:
                self._quantizer[p].restore(snap)
