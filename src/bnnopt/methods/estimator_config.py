"""Typed options of the estimator family (:mod:`bnnopt.methods.estimator`).

Every registered method of the family is an :class:`EstimatorConfig` preset
(:data:`ESTIMATOR_PRESETS`): a weight quantizer, its bits, and the surrogate-gradient
estimator of the binarization; ``rbnn`` adds its rotation cadence
(:class:`RBNNConfig`). ``fp`` (full precision) takes no option (:class:`FPConfig`)::

    EstimatorConfig.preset("irnet")                 # sign + EDE
    EstimatorConfig.preset("ste", bits=2)           # DoReFa 2-bit + STE
    EstimatorConfig.from_options({"estimator": "clipped_ste"}, method="bwn")
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from bnnopt.methods.config import MethodConfig, check_int, check_table
from bnnopt.registry import choice

__all__ = ["ESTIMATOR_PRESETS", "EstimatorConfig", "FPConfig", "RBNNConfig"]

#: Each registered estimator method: its description and the options it changes from
#: :class:`EstimatorConfig`'s defaults (DoReFa weights, 1 bit, identity STE).
ESTIMATOR_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "ste": ("DoReFa weights (FSG Eq. 1-2) + identity straight-through estimator", {}),
    "clipped_ste": ("sign(W) + clipped STE 1{|W|<=1} (BinaryConnect / BNN)",
                    {"quantizer": "sign", "estimator": "clipped_ste"}),
    "bwn": ("BWN/XNOR weights mean|W|*sign(W) + clipped STE",
            {"quantizer": "bwn", "estimator": "clipped_ste"}),
    "approx_sign": ("sign(W) + Bi-Real ApproxSign derivative 2-2|W|",
                    {"quantizer": "sign", "estimator": "approx_sign"}),
    "irnet": ("sign(W) + IR-Net EDE estimator (t annealed 1e-3 -> 10)",
              {"quantizer": "sign", "estimator": "ede"}),
    "reste": ("sign(W) + ReSTE rectified power estimator (o annealed 1 -> 3)",
              {"quantizer": "sign", "estimator": "reste"}),
}


@dataclasses.dataclass(frozen=True)
class EstimatorConfig(MethodConfig):
    """Options of an estimator-family method (``binarize_`` + autograd).

    Attributes:
        quantizer: registered weight quantizer (checked when the model is prepared).
        bits: weight bits.
        estimator: registered surrogate-gradient estimator of the binarization.
        estimator_options: keyword options of the estimator (e.g. {"t_max": 10}); in
            :meth:`to_options` only when not empty (the stored form of earlier runs).
    """

    quantizer: str = "dorefa"
    bits: int = 1
    estimator: str = "ste"
    estimator_options: dict = dataclasses.field(default_factory=dict)

    method: ClassVar[str] = "ste"

    def validate(self) -> None:
        super().validate()
        check_table(self.estimator_options, "estimator_options")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "EstimatorConfig":
        """The registered method ``name``'s options (:data:`ESTIMATOR_PRESETS`), then overrides."""
        return cls.from_options(overrides, method=name)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None,  # type: ignore[override]
                     method: str = "ste") -> "EstimatorConfig":
        """The preset of the registered method ``method``, then the explicit ``options``."""
        choice(method, tuple(ESTIMATOR_PRESETS), "estimator method")
        explicit = cls._explicit_for(method, options or {})
        return cls(**{**ESTIMATOR_PRESETS[method][1], **explicit})

    @classmethod
    def _explicit_for(cls, method: str, options: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(options, Mapping):
            raise ValueError(f"invalid options {options!r} for method {method!r}; must be a table")
        names = cls.option_names()
        unknown = set(options) - set(names)
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} for method {method!r}; "
                             f"valid options: {', '.join(sorted(names))}")
        return dict(options)

    def to_options(self) -> dict[str, Any]:
        options = super().to_options()
        if not options["estimator_options"]:
            del options["estimator_options"]
        return options


@dataclasses.dataclass(frozen=True)
class RBNNConfig(EstimatorConfig):
    """RBNN's options (:class:`bnnopt.methods.estimator.RBNNMethod`).

    Attributes:
        rotation_update: update the rotations R1, R2 every this many epochs (1, as the
            public code).
        act_path: "policy" (the run's activation policy) or "official" (the public
            code's per-sample standardisation and activation sign; see
            :class:`bnnopt.methods.estimator.RBNNMethod`).
    """

    quantizer: str = "rbnn"
    estimator: str = "rbnn_sign"
    rotation_update: int = 1
    act_path: str = "policy"

    method: ClassVar[str] = "rbnn"

    def validate(self) -> None:
        super().validate()
        check_int(self.rotation_update, "rotation_update")
        choice(self.act_path, ("policy", "official"), "act_path")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None,  # type: ignore[override]
                     method: str = "rbnn") -> "RBNNConfig":
        choice(method, ("rbnn",), "RBNN method")
        return cls(**cls._explicit_for(method, options or {}))


@dataclasses.dataclass(frozen=True)
class FPConfig(MethodConfig):
    """``fp`` (full precision): no option."""

    method: ClassVar[str] = "fp"

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> "FPConfig":
        if options:
            raise ValueError(f"method 'fp' takes no options, got {sorted(options)}")
        return cls()
