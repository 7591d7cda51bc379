"""Argument checks shared by the model constructors.

Every constructor validates its sizes up front so that a bad value fails with a
``ValueError`` that names the argument and the value, instead of an obscure
shape error deep inside ``forward``.
"""
from __future__ import annotations

from typing import Iterable


def positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1 (bools refused), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def positive_ints(name: str, values: Iterable[object]) -> tuple[int, ...]:
    """Validate a sequence of sizes (e.g. hidden widths); each must be an int >= 1."""
    if isinstance(values, (int, str)):
        raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}")
    out = tuple(values)
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must contain only positive integers, got {values!r}")
    return out


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial size after a convolution or pooling: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1
