"""Registry lookup that does not import unrelated sub-packages when the name is known."""
from __future__ import annotations

import numbers
from typing import Any

from bnnopt.registry import Registry


def lookup(registry: Registry, name: Any) -> Any:
    """``registry.get(name)``, but answered locally when ``name`` is already registered.

    ``Registry.get`` first imports every provider sub-package (models, data, ...);
    quantizers and estimators are registered by bnnopt.quant itself, so a known
    name needs none of them. Unknown names fall through to ``get`` for its
    ValueError listing the valid names.
    """
    key = name.lower() if isinstance(name, str) else name
    entry = registry._entries.get(key)  # noqa: SLF001 - read-only peek
    if entry is not None:
        return entry.obj
    return registry.get(name)


def check_bits(bits: Any, valid: tuple[int, ...], owner: str) -> int:
    """Return ``bits`` as int if it is in ``valid``; else ValueError naming both (and ``owner``)."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) not in valid:
        raise ValueError(f"invalid bits {bits!r} for {owner}; valid: {', '.join(map(str, valid))}")
    return int(bits)
