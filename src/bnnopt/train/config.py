"""Run configuration: one flat, JSON/TOML-serialisable description of a run.

A run is fully described by a :class:`RunConfig`; it is resolved from, in order,
defaults < a named protocol < a TOML file (``--config``) < command-line flags <
``--set key=value`` overrides. The resolved config is written to the run
directory and stored in every checkpoint, which is what makes ``bnnopt eval``
and ``--resume`` possible without the original command line.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnopt.registry import choice

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SCHEDULES = ("step", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_CUDA_INDEX = re.compile(r"^cuda:(0|[1-9][0-9]*)$")


def check_device_name(name: Any) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether it exists is checked when used)."""
    if isinstance(name, str) and (name in ("auto", "cpu", "cuda") or _CUDA_INDEX.match(name)):
        return name
    raise ValueError(f"invalid device {name!r}; valid: {', '.join(DEVICES)}")


@dataclass
class RunConfig:
    """Everything that determines a training run.

    model / model_options      registered model constructor and its kwargs
    dataset / data_root        registered dataset and where its files are
    method / method_options    registered training method and its options
    policy                     layer selection and activation quantization: the keys
                               of bnnopt.methods.config.POLICY_KEYS (keep_first,
                               keep_last, include, exclude, act_quantizer, act_bits,
                               act_estimator)
    optim                      base optimizer: name (sgd|sgdm|adam), lr, momentum,
                               weight_decay
    schedule                   "step" (x gamma every step_size epochs, both papers),
                               "cosine" or "constant"
    train_limit / test_limit   use only the first N images (0 = all)
    val_fraction               hold this fraction of the training images out as a
                               validation split chosen by the seed (0 = none;
                               bnnopt.data.split); every choice is made on it
    early_stop                 stop after this many epochs without a higher
                               validation accuracy (0 = never; needs val_fraction)
    zigzag                     number of weights tracked for oscillation stats (0 = off)
    zigzag_options             {every = "step"|"epoch", last_k = 5, lock = 0}: sampling
                               cadence, summary window, locked weight (bnnopt.diagnostics.zigzag)
    precision                  fp32 | bf16 | fp16 | fp64 (bnnopt.train.precision)
    channels_last              NHWC memory format for the model and its inputs
    sync_bn                    BatchNorm over the global batch of all torchrun ranks
    bn_recalibrate             before each evaluation, re-estimate the BatchNorm running
                               statistics over this many training batches with the
                               current (quantized) weights, no weight update (None or
                               0 = off; bnnopt.nn.batchnorm.recalibrate_bn_)
    """

    model: str = "resnet20"
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "cifar10"
    data_root: str | None = None
    download: bool = False
    method: str = "ste"
    method_options: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=lambda: {"name": "adam", "lr": 1e-3})
    epochs: int = 10
    batch_size: int = 128
    schedule: str = "step"
    step_size: int = 30
    gamma: float = 0.1
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    init: str | None = None
    train_limit: int = 0
    test_limit: int = 0
    val_fraction: float = 0.0
    early_stop: int = 0
    zigzag: int = 0
    zigzag_options: dict[str, Any] = field(default_factory=dict)
    protocol: str | None = None
    precision: str = "fp32"
    channels_last: bool = False
    sync_bn: bool = False
    bn_recalibrate: int | None = None

    # -- validation --------------------------------------------------------------
    def validate(self) -> "RunConfig":
        from bnnopt.registry import DATASETS, METHODS, MODELS

        from bnnopt.registry import PROTOCOLS

        _check_options(MODELS.get(self.model), self.model_options, f"model {self.model!r}",
                       "model_options")
        DATASETS.get(self.dataset)
        METHODS.get(self.method)(**self.method_options)  # unknown options: ValueError
        from bnnopt.methods.config import check_policy

        check_policy(self.policy)
        if self.protocol is not None:
            PROTOCOLS.get(self.protocol)
        choice(self.schedule, SCHEDULES, "schedule")
        check_device_name(self.device)
        from bnnopt.train.precision import PRECISIONS

        choice(self.precision, PRECISIONS, "precision")
        for name in ("epochs", "batch_size", "step_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"invalid {name} {value!r}; must be an integer >= 1")
        for name in ("train_limit", "test_limit", "zigzag", "seed", "early_stop"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"invalid {name} {value!r}; must be an integer >= 0")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0 <= self.val_fraction < 1:
            raise ValueError(f"invalid val_fraction {self.val_fraction!r}; must be a number in [0, 1)")
        if self.bn_recalibrate is not None and (
                not isinstance(self.bn_recalibrate, int) or isinstance(self.bn_recalibrate, bool)
                or self.bn_recalibrate < 0):
            raise ValueError(f"invalid bn_recalibrate {self.bn_recalibrate!r}; must be an "
                             "integer >= 0 (a number of training batches; 0 or none = off)")
        from bnnopt.diagnostics.zigzag import check_options

        check_options(self.zigzag_options)
        from bnnopt.data.text import has_fixed_validation

        fixed_val = has_fixed_validation(self.dataset)
        if fixed_val and self.val_fraction:
            raise ValueError(f"invalid val_fraction {self.val_fraction!r} for text dataset "
                             f"{self.dataset!r}: its validation split is fixed; valid: 0")
        if self.early_stop and not self.val_fraction and not fixed_val:
            raise ValueError(f"early_stop {self.early_stop} needs a validation split; "
                             "valid: val_fraction in (0, 1), or early_stop 0")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) \
                or not 0 < self.gamma <= 1:
            raise ValueError(f"invalid gamma {self.gamma!r}; must be in (0, 1]")
        self.optim_config().validate()
        return self

    def optim_config(self):
        from bnnopt.methods.base import OptimConfig

        known = {f.name for f in dataclasses.fields(OptimConfig)}
        unknown = set(self.optim) - known
        if unknown:
            raise ValueError(
                f"unknown optim key {sorted(unknown)[0]!r}; valid keys: {', '.join(sorted(known))}"
            )
        return OptimConfig(**{k: _check_optim_value(k, v) for k, v in self.optim.items()})

    # -- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        cfg = cls()
        cfg.update(data)
        return cfg

    def update(self, data: dict[str, Any]) -> "RunConfig":
        """Merge ``data`` into this config (dict-valued fields merge key by key)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for key, value in data.items():
            if key not in fields:
                raise ValueError(
                    f"unknown config key {key!r}; valid keys: {', '.join(sorted(fields))}"
                )
            current = getattr(self, key)
            if isinstance(current, dict):
                if not isinstance(value, dict):
                    raise ValueError(f"config key {key!r} must be a table, got {value!r}")
                merged = dict(current)
                merged.update(value)
                setattr(self, key, merged)
            else:
                setattr(self, key, _coerce(key, value, current, fields[key]))
        return self

    def set(self, assignment: str) -> "RunConfig":
        """Apply one ``key=value`` or ``table.key=value`` override (value parsed as a literal)."""
        if "=" not in assignment:
            raise ValueError(f"malformed override {assignment!r}; expected key=value")
        key, raw = assignment.split("=", 1)
        key = key.strip()
        value = parse_literal(raw.strip())
        if "." in key:
            table, sub = key.split(".", 1)
            if not sub:
                raise ValueError(f"malformed override {assignment!r}; expected table.key=value")
            return self.update({table: {sub: value}})
        return self.update({key: value})


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file (ValueError on a missing, unreadable or malformed file).

    A ``protocol = "name"`` key is kept; :func:`bnnopt.cli.main.resolve_config` applies
    that protocol beneath the file's other keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"malformed config file {path}: not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise ValueError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"malformed config file {path}: {msg}") from None


def _check_options(fn: Any, options: Any, owner: str, key: str) -> None:
    """Refuse option names that ``fn`` does not accept (unless it takes ``**kwargs``)."""
    if not isinstance(options, dict):
        raise ValueError(f"config key {key!r} must be a table, got {options!r}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    for name in options:
        if name not in valid:
            raise ValueError(f"unknown {key} key {name!r} for {owner}; valid: {', '.join(valid)}")


def _check_optim_value(key: str, value: Any) -> Any:
    """Type-check one ``optim`` entry: name a string, numbers finite, betas a pair."""
    def number(v: Any, what: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"invalid value {v!r} for {what!r}; expected a finite number")
        return float(v)

    if key == "name":
        if not isinstance(value, str):
            raise ValueError(f"invalid value {value!r} for 'optim.name'; expected a string")
        return value
    if key == "betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"invalid value {value!r} for 'optim.betas'; expected two numbers "
                             "in [0, 1), e.g. [0.9, 0.999]")
        betas = tuple(number(b, "optim.betas") for b in value)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid value {list(value)!r} for 'optim.betas'; each must be in [0, 1)")
        return betas
    value = number(value, f"optim.{key}")
    if key == "momentum" and not 0 <= value < 1:
        raise ValueError(f"invalid value {value!r} for 'optim.momentum'; must be in [0, 1)")
    return value


def parse_literal(raw: str) -> Any:
    """Command-line value -> Python: true/false, null, numbers, lists; else the string.

    ``none`` stays the string "none" (a real choice of several options, e.g. FSG's
    ``normalize`` or MetaQuant's ``nonlinear``); ``null`` is None. A top-level
    config key that may be None also takes ``none`` (see :func:`_coerce`).
    """
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if lowered == "none":
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw


def _coerce(key: str, value: Any, current: Any, f: dataclasses.Field) -> Any:
    """Check a scalar override against the field's type; ints may become floats."""
    annotation = str(f.type)
    if isinstance(value, str) and value.lower() == "none" and "None" in annotation:
        value = None
    if value is None:
        if "None" in annotation:
            return None
        raise ValueError(f"config key {key!r} cannot be None")
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"invalid value {value!r} for {key!r}; expected true or false")
        return value
    if annotation == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"invalid value {value!r} for {key!r}; expected an integer")
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f"invalid value {value!r} for {key!r}; expected a finite number")
        return float(value)
    if annotation.startswith("str"):
        if not isinstance(value, str):
            value = str(value)
        return value
    return value
