"""Numeric precision of the task network: ``--precision fp32|bf16|fp16|fp64``.

========  ====================================================================
fp32      everything float32 (default)
bf16      the task network's forward under ``torch.autocast(dtype=bfloat16)``;
          weights, gradients, optimizer state, meta-nets, HGS and the
          loss-aware D / alpha stay float32 (they live outside the autocast)
fp16      as bf16 with float16, plus dynamic loss scaling (``torch.amp.GradScaler``);
          the estimator family only: the learned-gradient and loss-aware
          steps read raw gradients (dL/dQ, Adam's second moment) that a loss
          scale would corrupt, so they refuse fp16 and name bf16
fp64      the model and the batches in float64 (exact reference runs, tests)
========  ====================================================================

The logits leave the autocast region as float32, so the loss is float32 too.
"""
from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16", "fp64")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def param_dtype(precision: str) -> torch.dtype:
    """dtype of the model's parameters and of the input batches."""
    return torch.float64 if precision == "fp64" else torch.float32


def check_precision(precision: str, family: str, method: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"invalid precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp16" and family != "estimator":
        raise ValueError(f"precision 'fp16' needs loss scaling, which the {family} method "
                         f"{method!r} cannot use; valid for it: bf16, fp32, fp64")


class AutocastForward(nn.Module):
    """``module``'s forward under autocast to ``dtype``; returns float32 logits."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            out = self.module(*args, **kwargs)
        return out.float()


def with_precision(module: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """The module to call for forwards: autocast-wrapped for bf16/fp16, else ``module``."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return module if dtype is None else AutocastForward(module, device.type, dtype)
