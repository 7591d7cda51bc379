"""Registry lookup, name-or-object resolution and the bits check shared by the quantizers."""
from __future__ import annotations

import numbers
from typing import Any

from bnnopt.registry import Registry


def lookup(registry: Registry, name: Any) -> Any:
    """``registry.get(name)``: a known name is answered without importing other
    sub-packages; an unknown one raises a ValueError listing the valid names."""
    return registry.get(name)


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (for error messages)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def resolve(registry: Registry, spec: Any, base: type) -> tuple[type, Any]:
    """(class, instance or None) for ``spec``: a registered name, a subclass of ``base``
    or an instance of ``base``. Anything else: ValueError naming it and the valid names."""
    if isinstance(spec, base):
        return type(spec), spec
    if isinstance(spec, type) and issubclass(spec, base):
        return spec, None
    if isinstance(spec, str):
        return registry.get(spec), None
    raise ValueError(f"invalid {registry.kind} {short_repr(spec)}; valid: a name "
                     f"({', '.join(registry.names())}) or a {base.__name__} subclass or instance")


def check_bits(bits: Any, valid: tuple[int, ...], owner: str) -> int:
    """Return ``bits`` as int if it is in ``valid``; else ValueError naming both (and ``owner``)."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) not in valid:
        raise ValueError(f"invalid bits {bits!r} for {owner}; valid: {', '.join(map(str, valid))}")
    return int(bits)
