"""Collectives shared by the training loop and the optimizers that keep state of their own.

:func:`all_reduce_mean_` (:func:`all_reduce_sum_`) averages (sums) tensors across the
processes of the default process group in place, one flat buffer per (dtype, device), so
a list of many small tensors costs one all-reduce per kind instead of one per tensor.
:func:`all_gather_rows` concatenates the processes' contiguous shares of a tensor (the
learned-gradient methods' split of the per-weight meta work).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def all_reduce_sum_(tensors: Iterable[Tensor | None], divide_by: int = 1) -> None:
    """Replace every tensor of ``tensors`` (None entries skipped) by its sum over the
    processes of the default process group, divided by ``divide_by``, in place; one flat
    buffer and one all-reduce per (dtype, device)."""
    groups: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        if t is not None:
            groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        torch.distributed.all_reduce(flat)
        if divide_by != 1:
            flat.div_(divide_by)
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def all_reduce_mean_(tensors: Iterable[Tensor | None], world_size: int) -> None:
    """Replace every tensor of ``tensors`` (None entries skipped) by its mean over the
    ``world_size`` processes of the default process group (torch.distributed initialised)."""
    all_reduce_sum_(tensors, divide_by=world_size)


def all_gather_rows(share: Tensor, sizes: list[int]) -> Tensor:
    """Concatenate, along dim 0 and in rank order, every process's ``share``.

    share: (sizes[rank], *rest) on this process; sizes: the row count of every rank
    (the same list on all). Returns (sum(sizes), *rest). The shares are padded to
    max(sizes) rows so that one ``all_gather`` of equal-sized buffers carries them
    (contiguous shares balanced by element count differ by at most one row).
    """
    width = max(sizes)
    padded = share.new_zeros((width, *share.shape[1:]))
    padded[: share.shape[0]] = share
    parts = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])
