"""Typed method options: the base of every method's config, and the conventions the
families share, each defined once here.

A method's options are a frozen dataclass (:class:`MethodConfig` subclass) with one
typed field per option. Three ways to make one:

* a named preset, complete (no field left to be decided elsewhere), e.g.
  ``FSGConfig.official()`` or ``FSGConfig.paper(history=4)`` (keyword overrides on top);
* ``Config.from_options(options)``: the pure resolution of a loose option dict (a
  run's ``method_options``): the preset/variant the dict names, then its explicit
  values; an unknown name is a ValueError listing the valid ones;
* the constructor, ``Config(field=value, ...)``: the class defaults plus the given
  fields, nothing derived (use a preset when a variant changes other defaults).

Every construction validates (ValueError naming the bad value and the valid ones;
a deprecated value gives a DeprecationWarning naming its replacement).
``config.to_options()`` is the plain dict a Method stores and prints
(``Method.resolved_options()``, ``bnnopt train --dry-run``, a run's ``argv.json``).

Shared conventions: :data:`POLICY_KEYS` (the layer-selection keys of a run's
``policy``, the fields of :class:`bnnopt.nn.QuantConfig` that a method does not set),
:func:`check_policy`, :data:`LOSS_AWARE_POLICY` (the loss-aware family quantizes every
layer unless the policy says otherwise).
"""
from __future__ import annotations

import copy
import dataclasses
import sys
import warnings
from typing import Any, ClassVar, Mapping, TypeVar

#: Keys of a run's ``policy`` table: which layers are quantized (``keep_first``,
#: ``keep_last``, ``include``, ``exclude``) and how activations are (``act_quantizer``,
#: ``act_bits``, ``act_estimator``); the same-named fields of ``bnnopt.nn.QuantConfig``.
POLICY_KEYS: tuple[str, ...] = ("keep_first", "keep_last", "include", "exclude",
                                "act_quantizer", "act_bits", "act_estimator")

#: The loss-aware family's policy defaults (LAB binarizes every layer, first and last
#: included); a run's explicit ``policy`` entries win.
LOSS_AWARE_POLICY: dict[str, Any] = {"keep_first": False, "keep_last": False}

C = TypeVar("C", bound="MethodConfig")


def check_policy(policy: Mapping[str, Any]) -> None:
    """ValueError on a key of ``policy`` that is not one of :data:`POLICY_KEYS`."""
    if not isinstance(policy, Mapping):
        raise ValueError(f"invalid policy {policy!r}; must be a table with keys "
                         f"{', '.join(POLICY_KEYS)}")
    unknown = set(policy) - set(POLICY_KEYS)
    if unknown:
        raise ValueError(f"unknown policy key {sorted(unknown)[0]!r}; "
                         f"valid keys: {', '.join(POLICY_KEYS)}")


def warn_deprecated(message: str) -> None:
    """DeprecationWarning attributed to the first caller outside the bnnopt package
    (so Python's default filters show it to the user's own script)."""
    level, frame = 1, sys._getframe(1)  # noqa: SLF001 - the standard way to walk the stack
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "bnnopt":
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level + 1)


def check_int(value: Any, what: str, minimum: int = 1) -> None:
    """ValueError unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"invalid {what} {value!r}; must be an integer >= {minimum}")


def check_number(value: Any, what: str, low: float | None = None, high: float | None = None,
                 positive: bool = False) -> None:
    """ValueError unless ``value`` is a number (not a bool), > 0 if ``positive``, and in
    [low, high] where given."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and positive:
        ok = value > 0
    if ok and low is not None:
        ok = value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        if positive:
            kind = "a number > 0"
        elif low is not None and high is not None:
            kind = f"a number in [{low:g}, {high:g}]"
        else:
            kind = "a number"
        raise ValueError(f"invalid {what} {value!r}; must be {kind}")


def check_table(value: Any, what: str) -> None:
    """ValueError unless ``value`` is a dict (a TOML table of keyword arguments)."""
    if not isinstance(value, dict):
        raise ValueError(f"invalid {what} {value!r}; must be a table of keyword arguments")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base of every method's typed options (see the module docstring).

    Subclasses set ``method`` (the registered name, used in messages), declare their
    options as dataclass fields with defaults, and extend :meth:`validate`; a
    method with variants or presets overrides :meth:`base_for`.
    """

    #: registered method name (error messages)
    method: ClassVar[str] = "method"
    #: options whose explicit None means "not given" (their former None defaults)
    unset_if_none: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on a bad value (subclasses extend, calling super first)."""

    # -- resolution ----------------------------------------------------------------
    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Every option this method takes, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def explicit(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The given options minus those in ``unset_if_none`` set to None; ValueError on an
        unknown name."""
        if not isinstance(options, Mapping):
            raise ValueError(f"invalid options {options!r} for method {cls.method!r}; "
                             "must be a table")
        names = cls.option_names()
        unknown = set(options) - set(names)
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} for method {cls.method!r}; "
                             f"valid options: {', '.join(sorted(names))}")
        return {k: v for k, v in options.items()
                if not (v is None and k in cls.unset_if_none)}

    @classmethod
    def base_for(cls: type[C], explicit: Mapping[str, Any]) -> dict[str, Any]:
        """The complete field values that the explicit options' variant/preset name
        (default: the class defaults, i.e. no variant)."""
        return {}

    @classmethod
    def from_options(cls: type[C], options: Mapping[str, Any] | None = None) -> C:
        """Resolve a loose option dict: the variant/preset it names, then its explicit
        values. Pure: the same dict always gives the same config; nothing else changes."""
        explicit = cls.explicit(options or {})
        values = {**cls.base_for(explicit), **copy.deepcopy(explicit)}
        return cls(**values)

    def to_options(self) -> dict[str, Any]:
        """The plain option dict (a deep copy): what ``Method.resolved_options()`` returns."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied (validated; unknown names are a ValueError)."""
        self.explicit(changes)
        return dataclasses.replace(self, **changes)
