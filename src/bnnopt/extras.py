"""Lazy imports of optional dependencies, with a message naming the extra to install.

The core of bnnopt never needs these packages; the features that do import
them through :func:`require`, which raises :class:`MissingExtraError` (a
ValueError, so the CLI prints one line and exits with status 2) naming the
``pip install "bnnopt[EXTRA]"`` that provides them.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ValueError):
    """An optional dependency is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``import module`` or raise MissingExtraError naming ``bnnopt[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{feature} needs the optional package {module.split('.')[0]!r} ({err}); "
            f"install it with: pip install \"bnnopt[{extra}]\"") from None


def available(module: str) -> bool:
    """True if ``module`` imports."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
