"""Historical Gradient Storage (HGS), FSG paper Sec. "Historical Gradient Storage".

For one quantized layer with ξ weights, HGS keeps the last ``l`` flattened
gradients g = ∂L/∂Q(W) (one per training step) and hands them to the slow-net
as a time series, **oldest first**::

    H_t = [g_{t-k+1}, ..., g_{t-1}, g_t]        shape (k, ξ),  k = min(t, l)

While the buffer is filling (fewer than ``l`` pushes) the sequence simply has
fewer rows; once full, every push drops the oldest row. The newest gradient is
part of the sequence (the official code counts it in its ``length``).

Storage is a ring buffer of shape (l, ξ) allocated on the first push (device
and dtype follow the gradient), so a push is one row copy and no reallocation.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class HistoryBuffer:
    """HGS of one layer: the last ``length`` gradients of a ``numel``-element weight."""

    def __init__(self, length: int, numel: int):
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"invalid history length {length!r}; must be an integer >= 1")
        if not isinstance(numel, int) or numel < 1:
            raise ValueError(f"invalid numel {numel!r}; must be an integer >= 1")
        self.length = length
        self.numel = numel
        self.count = 0  # total number of pushes so far
        self.buffer: Tensor | None = None  # (length, numel), rows in ring order

    def __len__(self) -> int:
        """Number of gradients currently held, k = min(count, length)."""
        return min(self.count, self.length)

    def push(self, grad: Tensor) -> None:
        """Append the newest gradient (any shape with ``numel`` elements; detached copy)."""
        flat = grad.detach().reshape(-1)
        if flat.numel() != self.numel:
            raise ValueError(f"gradient has {flat.numel()} elements; this HGS holds {self.numel}")
        if self.buffer is None:
            self.buffer = flat.new_zeros(self.length, self.numel)
        self.buffer[self.count % self.length].copy_(flat)
        self.count += 1

    def sequence(self) -> Tensor:
        """The held gradients as a (k, numel) tensor, oldest first (k = len(self))."""
        return self.columns(0, self.numel)

    def columns(self, first: int, last: int) -> Tensor:
        """Columns [first, last) of :meth:`sequence`, (k, last - first), without copying
        the other columns."""
        if self.buffer is None:
            raise ValueError("HGS is empty: push a gradient first")
        part = self.buffer[:, first:last]
        if self.count <= self.length:
            return part[: self.count]
        start = self.count % self.length
        if start == 0:
            return part
        return torch.cat((part[start:], part[:start]), dim=0)

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "numel": self.numel,
            "count": self.count,
            "buffer": None if self.buffer is None else self.buffer.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["length"] != self.length or state["numel"] != self.numel:
            raise ValueError(
                f"HGS state has length {state['length']} and numel {state['numel']}; "
                f"expected length {self.length} and numel {self.numel}"
            )
        self.count = int(state["count"])
        buf = state["buffer"]
        self.buffer = None if buf is None else buf.clone()
