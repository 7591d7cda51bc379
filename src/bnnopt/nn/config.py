"""QuantConfig: what binarize_ puts into each swapped layer, and which layers it swaps."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bnnopt.quant import (ACT_QUANTIZERS, ActQuantizer, Estimator, WeightQuantizer,
                          make_act_quantizer, make_weight_quantizer)
from bnnopt.quant import resolve_spec as resolve
from bnnopt.registry import ESTIMATORS, QUANTIZERS

__all__ = ["QuantConfig", "FP_ACT_BITS"]

# act_bits value meaning "activations stay in float32" (W1A32).
FP_ACT_BITS = 32


@dataclass
class QuantConfig:
    """Configuration of ``binarize_``.

    Weights:
        weight_quantizer: registered weight quantizer (sign, dorefa, bwn, uniform, rbnn),
            a WeightQuantizer subclass (built like a name) or a WeightQuantizer
            instance, a template deep-copied into every swapped layer; an instance
            fixes its bits and estimator, so weight_bits / estimator must then stay at
            their defaults (or repeat its values) and the options be empty.
        weight_bits: bits per weight (1, 2, 4 or 8 where the quantizer supports it).
        estimator: surrogate-gradient estimator of sign for 1 bit (ste, clipped_ste,
            approx_sign, ede, reste, rbnn_sign), an Estimator subclass or an instance
            (copied into every layer); for k > 1 bits ste or clipped_ste.
        estimator_options: keyword options of the estimator (e.g. {"t_max": 10}).
        quantizer_options: keyword options of the quantizer (e.g. bwn {"per_channel": True}).
    Activations (quantized at each swapped layer's input):
        act_quantizer: None (float activations, W?A32), "sign" (1 bit), "dorefa" (k bits),
            "standardized" (RBNN's public-code activation path), an ActQuantizer subclass, or an
            ActQuantizer instance (a template copied into every layer, as above).
        act_bits: 32 = float; with a 1-bit-only act_quantizer such as "sign", 32 is read
            as 1; with an instance, 32 is read as the instance's bits.
        act_estimator: estimator of the binary activation's sign (name, class or instance).
    Layer selection (names are ``model.named_modules()`` names):
        keep_first / keep_last: keep the network's input-side / output-side layer
            (stem / classifier head: the first / last candidate in execution or
            module order, unless it lies inside an attention block) in full
            precision, the FSG paper's protocol. False for both binarizes every
            layer (the official FSG code).
        include: regex; only names matching it (re.search) are swapped.
        exclude: regex; names matching it are never swapped.
        embedding: also quantize nn.Embedding tables (off by default).
        on_unsupported: what binarize_ does about layers with weights it cannot
            quantize (ConvTranspose, RNNs, ...): "warn", "error" or "ignore".
    See bnnopt.nn.convert for the exact selection rules.

    Every swapped layer gets its own quantizer and estimator objects (no state is
    shared between layers), whatever form the values above take.
    """

    weight_quantizer: Any = "dorefa"
    weight_bits: int = 1
    estimator: Any = "ste"
    act_quantizer: Any = None
    act_bits: int = FP_ACT_BITS
    act_estimator: Any = "ste"
    keep_first: bool = True
    keep_last: bool = True
    include: str | None = None
    exclude: str | None = None
    estimator_options: dict[str, Any] = field(default_factory=dict)
    quantizer_options: dict[str, Any] = field(default_factory=dict)
    embedding: bool = False
    on_unsupported: str = "warn"

    # -- validation ----------------------------------------------------------------
    @property
    def effective_act_bits(self) -> int | None:
        """Bits of the activation quantizer, or None when activations stay float."""
        if self.act_quantizer is None:
            return None
        cls, template = resolve(ACT_QUANTIZERS, self.act_quantizer, ActQuantizer)
        if self.act_bits == FP_ACT_BITS:
            if template is not None:
                return template.bits
            if tuple(cls.supported_bits) == (1,):
                return 1
        return self.act_bits

    def validate(self) -> "QuantConfig":
        """Check every name and value (building one quantizer of each kind); return self.

        Raises ValueError naming the bad value and listing the valid ones.
        """
        resolve(QUANTIZERS, self.weight_quantizer, WeightQuantizer)
        resolve(ESTIMATORS, self.estimator, Estimator)
        if self.on_unsupported not in ("warn", "error", "ignore"):
            raise ValueError(f"invalid on_unsupported {self.on_unsupported!r}; valid: warn, error, ignore")
        for key in ("keep_first", "keep_last", "embedding"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"invalid {key} {getattr(self, key)!r}; valid: True, False")
        for key in ("include", "exclude"):
            pattern = getattr(self, key)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as err:
                    raise ValueError(f"invalid {key} regex {pattern!r}: {err}") from None
        for key in ("estimator_options", "quantizer_options"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"invalid {key} {getattr(self, key)!r}; must be a dict")
        self.make_weight_quantizer()
        if isinstance(self.act_quantizer, str) and self.act_quantizer.lower() == "none":
            self.act_quantizer = None  # the command line's act_quantizer=none
        if self.act_quantizer is not None:
            resolve(ACT_QUANTIZERS, self.act_quantizer, ActQuantizer)
            resolve(ESTIMATORS, self.act_estimator, Estimator)
            self.make_act_quantizer()
        elif self.act_bits != FP_ACT_BITS:
            raise ValueError(f"invalid act_bits {self.act_bits!r} without an act_quantizer; "
                             f"valid: {FP_ACT_BITS} (set act_quantizer to one of "
                             f"{', '.join(ACT_QUANTIZERS.names())} to quantize activations)")
        return self

    # -- factories -----------------------------------------------------------------
    def make_weight_quantizer(self):
        """A fresh weight quantizer module for one layer (a copy of an instance template)."""
        if isinstance(self.weight_quantizer, WeightQuantizer):
            # the template fixes bits and estimator: defaults mean "the template's own"
            bits = None if self.weight_bits == _DEFAULTS["weight_bits"] else self.weight_bits
            est = None if _is_default(self.estimator, "estimator") else self.estimator
            return make_weight_quantizer(self.weight_quantizer, bits, est,
                                         dict(self.estimator_options), **self.quantizer_options)
        return make_weight_quantizer(self.weight_quantizer, self.weight_bits, self.estimator,
                                     dict(self.estimator_options), **self.quantizer_options)

    def make_act_quantizer(self):
        """A fresh activation quantizer module for one layer, or None."""
        if self.act_quantizer is None:
            return None
        est = self.act_estimator
        if isinstance(self.act_quantizer, ActQuantizer) and _is_default(est, "act_estimator"):
            est = None
        return make_act_quantizer(self.act_quantizer, self.effective_act_bits, est)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (quantizer / estimator objects are deep-copied)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantConfig":
        valid = set(cls.__dataclass_fields__)
        unknown = set(d) - valid
        if unknown:
            raise ValueError(f"unknown QuantConfig key {sorted(unknown)[0]!r}; "
                             f"valid keys: {', '.join(sorted(valid))}")
        return cls(**d)


_DEFAULTS = {name: f.default for name, f in QuantConfig.__dataclass_fields__.items()}


def _is_default(value: Any, name: str) -> bool:
    return isinstance(value, str) and value.lower() == _DEFAULTS[name]
