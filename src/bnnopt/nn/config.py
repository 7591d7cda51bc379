"""QuantConfig: what binarize_ puts into each swapped layer, and which layers it swaps."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bnnopt.quant import ACT_QUANTIZERS, make_act_quantizer, make_weight_quantizer
from bnnopt.quant._lookup import lookup
from bnnopt.registry import ESTIMATORS, QUANTIZERS

__all__ = ["QuantConfig", "FP_ACT_BITS"]

# act_bits value meaning "activations stay in float32" (W1A32).
FP_ACT_BITS = 32


@dataclass
class QuantConfig:
    """Configuration of ``binarize_``.

    Weights:
        weight_quantizer: registered weight quantizer (sign, dorefa, bwn, uniform).
        weight_bits: bits per weight (1, 2, 4 or 8 where the quantizer supports it).
        estimator: surrogate-gradient estimator of sign for 1 bit (ste, clipped_ste,
            approx_sign, ede, reste); for k > 1 bits ste or clipped_ste.
        estimator_options: keyword options of the estimator (e.g. {"t_max": 10}).
        quantizer_options: keyword options of the quantizer (e.g. bwn {"per_channel": True}).
    Activations (quantized at each swapped layer's input):
        act_quantizer: None (float activations, W?A32), "sign" (1 bit) or "dorefa" (k bits).
        act_bits: 32 = float; with act_quantizer "sign", 32 is read as 1.
        act_estimator: estimator of the binary activation's sign.
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
    """

    weight_quantizer: str = "dorefa"
    weight_bits: int = 1
    estimator: str = "ste"
    act_quantizer: str | None = None
    act_bits: int = FP_ACT_BITS
    act_estimator: str = "ste"
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
        if self.act_quantizer == "sign" and self.act_bits == FP_ACT_BITS:
            return 1
        return self.act_bits

    def validate(self) -> "QuantConfig":
        """Check every name and value (building one quantizer of each kind); return self.

        Raises ValueError naming the bad value and listing the valid ones.
        """
        lookup(QUANTIZERS, self.weight_quantizer)
        lookup(ESTIMATORS, self.estimator)
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
            lookup(ACT_QUANTIZERS, self.act_quantizer)
            lookup(ESTIMATORS, self.act_estimator)
            self.make_act_quantizer()
        elif self.act_bits != FP_ACT_BITS:
            raise ValueError(f"invalid act_bits {self.act_bits!r} without an act_quantizer; "
                             f"valid: {FP_ACT_BITS} (set act_quantizer to one of "
                             f"{', '.join(ACT_QUANTIZERS.names())} to quantize activations)")
        return self

    # -- factories -----------------------------------------------------------------
    def make_weight_quantizer(self):
        """A fresh weight quantizer module for one layer."""
        return make_weight_quantizer(self.weight_quantizer, self.weight_bits, self.estimator,
                                     dict(self.estimator_options), **self.quantizer_options)

    def make_act_quantizer(self):
        """A fresh activation quantizer module for one layer, or None."""
        if self.act_quantizer is None:
            return None
        return make_act_quantizer(self.act_quantizer, self.effective_act_bits, self.act_estimator)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantConfig":
        valid = set(cls.__dataclass_fields__)
        unknown = set(d) - valid
        if unknown:
            raise ValueError(f"unknown QuantConfig key {sorted(unknown)[0]!r}; "
                             f"valid keys: {', '.join(sorted(valid))}")
        return cls(**d)
