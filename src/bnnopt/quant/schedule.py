"""Annealing of the estimators: the training progress p in [0, 1] as a scheduler object.

Some estimators change their surrogate derivative over training: IR-Net's EDE
(t = t_min (t_max/t_min)^p), RBNN's training-aware sign (t = T_min (T_max/T_min)^p)
and ReSTE (o = o_min + (o_max - o_min) p). They read a *progress* p in [0, 1].
:class:`EstimatorSchedule` sets p on every estimator of a model, in the style of
``torch.optim.lr_scheduler``: construct it once (p = 0), then call ``step()``
once per epoch or once per optimisation step::

    sched = EstimatorSchedule(model, total_epochs=E)      # p = 0 now
    for epoch in range(E):
        train_one_epoch(model)
        sched.step()                                       # p = (epoch + 1) / (E - 1)

After i calls of ``step()`` (``last_step == i``) the progress is, with N the total
number of epochs (or steps)::

    endpoint=True  (IR-Net):  p_i = min(i / max(N - 1, 1), 1)   the last epoch has p = 1
    endpoint=False (RBNN):    p_i = min(i / max(N, 1), 1)       p = epoch / epochs, the
                                                                public RBNN code's schedule

These are the values the Trainer's ``irnet`` / ``reste`` (endpoint=True) and ``rbnn``
(endpoint=False) methods set at the start of each epoch (their ``on_epoch_start``
uses this class). Progress past the end stays at 1.

Which modules are annealed: :func:`set_estimator_progress` walks the model from
the root and calls ``set_progress(p)`` on every outermost module that has that
method (a quantized layer, which forwards it to its weight and activation
quantizers and their estimators; or an estimator / activation quantizer used
directly in a model), without descending further into it.
"""
from __future__ import annotations

import numbers
from typing import Any

from torch import nn

__all__ = ["EstimatorSchedule", "estimator_progress", "set_estimator_progress"]


def _check_count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"invalid {what} {value!r}; must be an integer >= {minimum}")
    return int(value)


def estimator_progress(step: int, total: int, endpoint: bool = True) -> float:
    """Progress after ``step`` of ``total`` epochs/steps: step / max(total - 1, 1) with
    ``endpoint`` (the last one reaches 1), else step / max(total, 1); capped at 1."""
    step = _check_count(step, "step", 0)
    total = _check_count(total, "total", 1)
    return min(step / max(total - 1 if endpoint else total, 1), 1.0)


def set_estimator_progress(model: nn.Module, p: float) -> int:
    """Set progress p in [0, 1] on every outermost module of ``model`` with ``set_progress``.

    Returns how many modules were set (0 when the model has no quantized layer or
    estimator). ValueError when p is outside [0, 1].
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"invalid model {type(model).__name__}; must be a torch.nn.Module")
    count = 0
    stack = [model]
    while stack:
        module = stack.pop()
        if callable(getattr(module, "set_progress", None)):
            module.set_progress(p)
            count += 1
        else:
            stack.extend(reversed(list(module.children())))
    return count


class EstimatorSchedule:
    """Scheduler-like annealing of a model's estimators (see the module docstring).

    Args:
        model: the (binarized) model; its estimators are found anew at every step,
            so the schedule may be created before or after ``binarize_``.
        total_steps: the number N of steps the annealing spans (call ``step()`` once
            per optimisation step); give this or ``total_epochs``, not both.
        total_epochs: the same N counted in epochs (call ``step()`` once per epoch);
            the two differ only in name.
        endpoint: True (default, IR-Net / ReSTE): p = i / (N - 1), the last epoch at
            p = 1; False (RBNN's public code): p = i / N.

    Attributes:
        last_step: how many times ``step()`` has been called (0 after construction).
        total: N.

    Construction sets p = 0 on the model (like an lr scheduler's initial step).
    ``state_dict()`` / ``load_state_dict()`` save and restore the position;
    loading applies the restored progress to the model.
    """

    def __init__(self, model: nn.Module, total_steps: int | None = None, *,
                 total_epochs: int | None = None, endpoint: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"invalid model {type(model).__name__}; must be a torch.nn.Module")
        if (total_steps is None) == (total_epochs is None):
            raise ValueError(f"give exactly one of total_steps, total_epochs; got "
                             f"total_steps={total_steps!r}, total_epochs={total_epochs!r}")
        if not isinstance(endpoint, bool):
            raise ValueError(f"invalid endpoint {endpoint!r}; valid: True, False")
        self.model = model
        self.unit = "step" if total_steps is not None else "epoch"
        self.total = _check_count(total_steps if total_steps is not None else total_epochs,
                                  f"total_{self.unit}s", 1)
        self.endpoint = endpoint
        self.last_step = 0
        self._apply()

    # -- the schedule ----------------------------------------------------------------
    def progress_at(self, step: int) -> float:
        """The progress p after ``step`` calls of :meth:`step` (module docstring)."""
        return estimator_progress(step, self.total, self.endpoint)

    @property
    def progress(self) -> float:
        """The progress p currently set on the model."""
        return self.progress_at(self.last_step)

    def step(self) -> float:
        """Advance by one epoch/step and set the new progress on the model; returns it."""
        self.last_step += 1
        return self._apply()

    def set_step(self, step: int) -> float:
        """Jump to position ``step`` (e.g. the epoch index at its start) and apply it."""
        self.last_step = _check_count(step, "step", 0)
        return self._apply()

    def _apply(self) -> float:
        p = self.progress
        set_estimator_progress(self.model, p)
        return p

    # -- state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{"last_step", "total", "endpoint", "unit"}: plain Python values."""
        return {"last_step": self.last_step, "total": self.total, "endpoint": self.endpoint,
                "unit": self.unit}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` and set its progress on the model."""
        missing = {"last_step", "total", "endpoint"} - set(state)
        if missing:
            raise ValueError(f"invalid EstimatorSchedule state: missing {sorted(missing)[0]!r}; "
                             "expected keys: last_step, total, endpoint, unit")
        self.total = _check_count(state["total"], "total", 1)
        self.endpoint = bool(state["endpoint"])
        self.unit = state.get("unit", self.unit)
        self.last_step = _check_count(state["last_step"], "last_step", 0)
        self._apply()

    def __repr__(self) -> str:
        return (f"EstimatorSchedule(total_{self.unit}s={self.total}, endpoint={self.endpoint}, "
                f"last_step={self.last_step}, progress={self.progress:.4g})")
