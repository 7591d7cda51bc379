"""Learning-rate schedules, as a pure function of the epoch (so resume is exact).

step:     lr_e = lr_0 * gamma ** floor(e / step_size)   (both papers: x0.1 every 30)
cosine:   lr_e = lr_0 * (1 + cos(pi * e / E)) / 2
constant: lr_e = lr_0
"""
from __future__ import annotations

import math

from bnnopt.registry import choice
from bnnopt.train.config import SCHEDULES


def lr_at(epoch: int, base_lr: float, total_epochs: int, schedule: str = "step",
          step_size: int = 30, gamma: float = 0.1) -> float:
    """Learning rate for ``epoch`` (0-based) of ``total_epochs``."""
    choice(schedule, SCHEDULES, "schedule")
    if schedule == "step":
        return base_lr * gamma ** (epoch // step_size)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(total_epochs, 1)))
    return base_lr
