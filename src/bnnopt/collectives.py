"""Collectives shared by the training loop and the optimizers that keep state of their own.

:func:`all_reduce_mean_` averages tensors across the processes of the default process
group in place, one flat buffer per (dtype, device), so a list of many small tensors
costs one all-reduce per kind instead of one per tensor.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def all_reduce_mean_(tensors: Iterable[Tensor | None], world_size: int) -> None:
    """Replace every tensor of ``tensors`` (None entries skipped) by its mean over the
    ``world_size`` processes of the default process group (torch.distributed initialised)."""
    groups: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        if t is not None:
            groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        torch.distributed.all_reduce(flat)
        flat.div_(world_size)
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n
