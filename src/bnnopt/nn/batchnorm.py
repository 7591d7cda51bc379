"""Re-estimate BatchNorm running statistics for the weights a network has now.

Why. In evaluation mode a BatchNorm layer normalises with its running estimates
``mu`` and ``sigma^2`` instead of the batch's own statistics:

    y = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta.

The running estimates follow an exponential average with momentum ``m`` (torch's
default 0.1): after ``k`` training steps the estimate is

    mu_k = (1 - m)^k * mu_0 + sum_{j=1..k} m (1 - m)^(k - j) * mean(x_j),

so a fraction ``(1 - m)^k`` of it is still the statistic of the network the run
started from. When a full-precision checkpoint is binarized, the pre-activations
``x`` change scale at once (sign weights instead of real ones), while ``mu_0`` and
``sigma_0^2`` describe the float network. After 4 steps 66 % of each estimate is
still stale, and a network whose training-mode accuracy is already well above
chance can evaluate near chance, with a very large loss. Training-mode batch
statistics are right at every step; only the evaluation is misled.

What. :func:`recalibrate_bn_` resets every BatchNorm layer's running statistics and
recomputes them as the plain (cumulative) average over ``num_batches`` batches,
with the network's current weights (for a quantized network: the quantized weights
its forward uses) and no weight update:

    mu = (1/N) sum_{j=1..N} mean(x_j),   sigma^2 = (1/N) sum_{j=1..N} var_unbiased(x_j).

Only the BatchNorm layers run in training mode during the pass; every other module
(dropout, for instance) stays in evaluation mode, and no gradient is recorded.
Afterwards each layer's momentum and mode are restored. This is the usual
"BN re-estimation" step of post-training quantization and weight averaging,
written for the layers of this package (``torch.nn.BatchNorm*d`` and
:class:`bnnopt.nn.sync_batchnorm.CPUSyncBatchNorm`, which share the same base class).

Usage in your own loop::

    from bnnopt.nn.batchnorm import recalibrate_bn_
    recalibrate_bn_(model, train_batches, num_batches=20)   # then model.eval(); evaluate

``bnnopt train --bn-recalibrate N`` (config key ``bn_recalibrate``) runs it over the
first ``N`` training batches of the epoch before every evaluation.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["recalibrate_bn_", "batchnorm_layers", "stale_fraction", "stale_statistics_hint"]

_BATCHNORM = nn.modules.batchnorm._BatchNorm  # noqa: SLF001 - torch's public BN layers share it


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer of ``model`` that tracks running statistics, in module order."""
    return [m for m in model.modules() if isinstance(m, _BATCHNORM) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn_(model: nn.Module, batches: Iterable, num_batches: int,
                    memory_format: torch.memory_format | None = None) -> int:
    """Recompute the running mean and variance of every BatchNorm layer of ``model``
    in place over the first ``num_batches`` items of ``batches``.

    Args:
        model: the network (its forward is called with each batch's input).
        batches: an iterable of ``(x, y)`` pairs or of input tensors ``x``
            (e.g. ``N x C x H x W`` images); only ``x`` is used.
        num_batches: how many batches to average over (an integer >= 1); fewer are
            used if ``batches`` ends first.
        memory_format: optional ``torch.channels_last`` for the inputs.

    Returns:
        The number of batches used (0 when ``model`` has no BatchNorm layer: then
        nothing is run and nothing changes).

    Raises:
        ValueError: ``num_batches`` is not an integer >= 1, or ``batches`` is empty.
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"invalid num_batches {num_batches!r}; must be an integer >= 1")
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    items = iter(batches)
    first = next(items, None)
    if first is None:  # checked before any statistic is reset
        raise ValueError("recalibrate_bn_: batches is empty; give at least one batch")
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    used = 0
    try:
        model.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: each batch weighs 1/N
            m.train()
        item = first
        while item is not None and used < num_batches:
            x = item[0] if isinstance(item, (tuple, list)) else item
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            model(x)
            used += 1
            if used < num_batches:
                item = next(items, None)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return used


def stale_fraction(model: nn.Module, steps: int) -> float:
    """The largest share ``(1 - m)^steps`` of any BatchNorm running estimate of ``model``
    that still comes from before the last ``steps`` training steps (0.0 without
    BatchNorm; layers with ``momentum=None`` average cumulatively and count as 1/(steps+1))."""
    shares = [(1.0 - m.momentum) ** steps if m.momentum is not None else 1.0 / (steps + 1)
              for m in batchnorm_layers(model)]
    return max(shares, default=0.0)


def stale_statistics_hint(model: nn.Module, steps: int, train_acc: float, test_acc: float,
                          threshold: float = 0.05) -> str | None:
    """A one-line warning when an evaluation is likely misled by stale BatchNorm statistics
    (more than ``threshold`` of some running estimate predates the ``steps`` training
    steps, and the test accuracy is below half the training accuracy); else None."""
    share = stale_fraction(model, steps)
    if share <= threshold or test_acc >= 0.5 * train_acc:
        return None
    return (f"warning: test accuracy {test_acc:.2f}% is far below train accuracy "
            f"{train_acc:.2f}% after {steps} steps; up to {100 * share:.0f}% of a BatchNorm "
            "running statistic still predates them, so the test number is not meaningful yet; "
            "add --bn-recalibrate N (config key bn_recalibrate)")
