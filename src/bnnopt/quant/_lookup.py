"""Registry lookup and the bits check shared by the quantizers."""
from __future__ import annotations

import numbers
from typing import Any

from bnnopt.registry import Registry


def lookup(registry: Registry, name: Any) -> Any:
    """``registry.get(name)``: a known name is answered without importing other
    sub-packages; an unknown one raises a ValueError listing the valid names."""
    return registry.get(name)


def check_bits(bits: Any, valid: tuple[int, ...], owner: str) -> int:
    """Return ``bits`` as int if it is in ``valid``; else ValueError naming both (and ``owner``)."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) not in valid:
        raise ValueError(f"invalid bits {bits!r} for {owner}; valid: {', '.join(map(str, valid))}")
    return int(bits)
