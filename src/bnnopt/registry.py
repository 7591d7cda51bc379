"""Name -> object registries, one per kind of thing.

Every estimator, quantizer, method, model, dataset, optimizer and protocol is
registered by name with a one-line description, so that ``bnnopt list`` can
show them and unknown names fail with a message that lists the valid ones::

    @MODELS.register("resnet20", "CIFAR ResNet-20 (He et al. 2016), 0.27M params")
    def resnet20(num_classes=10): ...

    MODELS.get("resnet20")          # -> the function
    MODELS.get("resnet2")           # ValueError: unknown model 'resnet2'; valid: ...
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

# Sub-packages whose import registers entries; loaded lazily on first lookup so
# that importing one part of bnnopt never requires every other part to import.
_PROVIDERS = (
    "bnnopt.quant",
    "bnnopt.models",
    "bnnopt.data",
    "bnnopt.methods.lossaware",
    "bnnopt.methods.learned",
    "bnnopt.train",
)


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    description: str


class Registry:
    """A named collection of constructors of one kind (e.g. "model")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str = "") -> Callable[[Any], Any]:
        """Decorator: register ``obj`` under ``name`` (lower-case, unique)."""
        if not name or name != name.lower():
            raise ValueError(f"{self.kind} names must be non-empty lower-case, got {name!r}")

        def decorator(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            lines = (obj.__doc__ or "").strip().splitlines()
            text = description or (lines[0] if lines else "")
            self._entries[name] = Entry(name, obj, text)
            return obj

        return decorator

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``; ValueError listing valid names if absent."""
        key = name.lower() if isinstance(name, str) else name
        if key not in self._entries:
            _load_providers()
        if key not in self._entries:
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            )
        return self._entries[key].obj

    def __contains__(self, name: object) -> bool:
        _load_providers()
        return name in self._entries

    def names(self) -> list[str]:
        _load_providers()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        _load_providers()
        for name in sorted(self._entries):
            yield self._entries[name]


_loaded = False


def _load_providers() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _PROVIDERS:
        importlib.import_module(module)


ESTIMATORS = Registry("estimator")
QUANTIZERS = Registry("quantizer")
ACT_QUANTIZERS = Registry("activation quantizer")
METHODS = Registry("method")
MODELS = Registry("model")
DATASETS = Registry("dataset")
OPTIMIZERS = Registry("optimizer")
PROTOCOLS = Registry("protocol")

ALL = {
    "estimator": ESTIMATORS,
    "quantizer": QUANTIZERS,
    "act_quantizer": ACT_QUANTIZERS,
    "method": METHODS,
    "model": MODELS,
    "dataset": DATASETS,
    "optimizer": OPTIMIZERS,
    "protocol": PROTOCOLS,
}


def choice(value: Any, valid: list | tuple, what: str) -> Any:
    """Return ``value`` if it is one of ``valid``, else raise a ValueError naming both."""
    if value not in valid:
        raise ValueError(f"invalid {what} {value!r}; valid: {', '.join(map(str, valid))}")
    return value
