"""Typed options of the learned-gradient family: FCGrad, MultiFC, LSTMFC (MetaQuant) and FSG.

Each method's options are one frozen dataclass (:mod:`bnnopt.methods.config`):
:class:`LearnedConfig` holds the family's common options, :class:`MetaQuantConfig`
MetaQuant's, and :class:`FCGradConfig`, :class:`MultiFCConfig`, :class:`LSTMFCConfig`,
:class:`FSGConfig` one method each. Every preset is complete::

    FSGConfig.cpu()        # the default: paper variant, sizes chosen for a CPU
    FSGConfig.paper()      # the paper's equations and sizes, nothing added
    FSGConfig.official()   # github two-tiger/FSG exactly
    FSGConfig.of("official", "cpu", history=3)   # any variant x preset, then overrides
    FCGradConfig.official()                      # csyhhu/MetaQuant's details

``from_options`` resolves a run's ``method_options`` the same way: the variant's
defaults (:data:`VARIANT_DETAILS`, FSG's :data:`FSG_VARIANT_DEFAULTS`), then FSG's
preset (:data:`FSG_PRESETS`, default :data:`FSG_DEFAULT_PRESET` of the variant), then
the explicit values. :func:`what_runs_rows` and :func:`what_runs_table` render FSG's
variant x preset table from the presets (the docs page and the fsg docstring show it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from bnnopt.methods.config import (MethodConfig, check_int, check_number, check_table,
                                   warn_deprecated)
from bnnopt.methods.learned.lre import LAYOUTS
from bnnopt.methods.learned.meta_nets import LSTM_IMPLS, NONLINEAR
from bnnopt.methods.learned.variants import GRAD_NORMS, SLOW_SCALES
from bnnopt.registry import choice

__all__ = [
    "ADAM_EPS", "FIRST_STEPS", "FSGConfig", "FCGradConfig", "FSG_DEFAULT_PRESET", "FSG_PRESETS",
    "FSG_VARIANT_DEFAULTS", "LOOKAHEADS", "LSTMFCConfig", "LearnedConfig", "META_DATA",
    "MetaQuantConfig", "MultiFCConfig", "VARIANTS", "VARIANT_DETAILS", "what_runs_rows",
    "what_runs_table",
]

VARIANTS = ("paper", "official")
LOOKAHEADS = ("plain", "optimizer")
FIRST_STEPS = ("ste", "skip")
ADAM_EPS = ("torch", "official")
META_DATA = ("train", "heldout")

#: The three details of the official codes, per variant (every method of the family):
#: the first step, Adam's ε placement and the bias look-ahead.
VARIANT_DETAILS: dict[str, dict[str, Any]] = {
    "paper": {"first_step": "ste", "adam_eps": "torch", "bias_lookahead": False},
    "official": {"first_step": "skip", "adam_eps": "official", "bias_lookahead": True},
}

#: Deprecated option values (kept to reproduce earlier results) and their replacements.
DEPRECATED_GRAD_NORM = {"ste": "ste-detached"}


@dataclasses.dataclass(frozen=True)
class LearnedConfig(MethodConfig):
    """Options common to the learned-gradient family (:mod:`bnnopt.methods.learned.base`).

    Attributes:
        variant: "paper" (the paper's equations) or "official" (the official code exactly).
        quantizer: weight quantizer of the quantized layers (DoReFa, FSG Eq. 1-2).
        bits: weight bits.
        estimator: the layers' surrogate-gradient estimator (used by the first, STE, step).
        estimator_options: keyword options of the estimator.
        quantizer_options: keyword options of the quantizer.
        meta_seed: seed of the meta-nets' initialisation; None: the global torch seed
            when the meta-nets are built.
        lookahead: "plain" (W̃ = W + Δ, both papers) or "optimizer" (the base
            optimizer's coming update).
        grad_norm: "learned" (G as generated), "ste-detached" (G and Δ rescaled per layer
            to STE's norm, the factor a constant to the meta-gradient) or "ste"
            (deprecated: the factor differentiable; use "ste-detached").
        first_step: "ste" (a plain STE step) or "skip" (official: no update at all).
        adam_eps: "torch" or "official" (ε added before Adam's bias correction).
        bias_lookahead: forward at b - η·r_b (official) or at b.
        meta_data: "train" (Eq. 14-15) or "heldout" (a held-out meta split).
        meta_fraction: fraction of the training images held out under "heldout", in (0, 1).
        meta_chunk: 0 (all N weights at once) or C >= 1: the meta-nets run on C weight
            elements at a time and their activations are recomputed in the backward
            (``torch.utils.checkpoint``), so the meta work's transient memory is bounded
            by C elements instead of N, at the cost of a second meta forward. For the
            per-element meta-nets only (FCGrad, MultiFC, FSG's per-weight layout with an
            HGS slow-net; LSTMFC bounds its own with ``impl="chunked"``).
    """

    variant: str = "paper"
    quantizer: str = "dorefa"
    bits: int = 1
    estimator: str = "ste"
    estimator_options: dict = dataclasses.field(default_factory=dict)
    quantizer_options: dict = dataclasses.field(default_factory=dict)
    meta_seed: int | None = None
    lookahead: str = "plain"
    grad_norm: str = "learned"
    first_step: str = "ste"
    adam_eps: str = "torch"
    bias_lookahead: bool = False
    meta_data: str = "train"
    meta_fraction: float = 0.1
    meta_chunk: int = 0

    method: ClassVar[str] = "learned-gradient"
    unset_if_none: ClassVar[tuple[str, ...]] = ("first_step", "adam_eps", "bias_lookahead")

    def validate(self) -> None:
        super().validate()
        name = self.method
        seed = self.meta_seed
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"invalid meta_seed {seed!r}; must be an integer or None")
        choice(self.lookahead, LOOKAHEADS, f"{name} lookahead")
        choice(self.grad_norm, GRAD_NORMS, f"{name} grad_norm")
        choice(self.meta_data, META_DATA, f"{name} meta_data")
        fraction = self.meta_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not 0 < fraction < 1:
            raise ValueError(f"invalid meta_fraction {fraction!r} for method "
                             f"{name!r}; valid: a number in (0, 1)")
        check_int(self.meta_chunk, f"{name} meta_chunk", minimum=0)
        choice(self.variant, VARIANTS, f"{name} variant")
        choice(self.first_step, FIRST_STEPS, f"{name} first_step")
        choice(self.adam_eps, ADAM_EPS, f"{name} adam_eps")
        if not isinstance(self.bias_lookahead, bool):
            raise ValueError(f"invalid bias_lookahead {self.bias_lookahead!r} for method "
                             f"{name!r}; must be true or false")
        check_table(self.estimator_options, f"{name} estimator_options")
        check_table(self.quantizer_options, f"{name} quantizer_options")
        if self.grad_norm in DEPRECATED_GRAD_NORM:
            warn_deprecated(f"{name} grad_norm {self.grad_norm!r} is deprecated (its rescaling "
                            "can turn the step uphill, docs/results.md); use grad_norm "
                            f"{DEPRECATED_GRAD_NORM[self.grad_norm]!r}")

    @classmethod
    def base_for(cls, explicit: Mapping[str, Any]) -> dict[str, Any]:
        variant = explicit.get("variant", "paper")
        choice(variant, VARIANTS, f"{cls.method} variant")
        return {"variant": variant, **VARIANT_DETAILS[variant]}

    @classmethod
    def paper(cls, **overrides: Any):
        """The paper variant (bnnopt's first step, torch Adam, no bias look-ahead)."""
        return cls.from_options({**overrides, "variant": "paper"})

    @classmethod
    def official(cls, **overrides: Any):
        """The official code's variant: its first step, Adam ε placement, bias look-ahead."""
        return cls.from_options({**overrides, "variant": "official"})


@dataclasses.dataclass(frozen=True)
class MetaQuantConfig(LearnedConfig):
    """MetaQuant's common options (:mod:`bnnopt.methods.learned.metaquant`).

    Attributes:
        hidden: meta-net width.
        meta_lr: learning rate of the meta-net's Adam (1e-3, the official code's).
    """

    hidden: int = 100
    meta_lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        check_int(self.hidden, "hidden")
        check_number(self.meta_lr, "meta_lr", positive=True)


@dataclasses.dataclass(frozen=True)
class FCGradConfig(MetaQuantConfig):
    """FC-Grad, M = FC(g). Attributes: nonlinear: "none" | "relu" | "tanh" between layers."""

    nonlinear: str = "none"
    method: ClassVar[str] = "fcgrad"

    def validate(self) -> None:
        super().validate()
        choice(self.nonlinear, NONLINEAR, f"{self.method} nonlinear")


@dataclasses.dataclass(frozen=True)
class MultiFCConfig(FCGradConfig):
    """MultiFC, M = g ⊙ MultiFC(u). Attributes: depth: number of linear layers (3)."""

    depth: int = 3
    method: ClassVar[str] = "multifc"

    def validate(self) -> None:
        super().validate()
        check_int(self.depth, "depth")


@dataclasses.dataclass(frozen=True)
class LSTMFCConfig(MetaQuantConfig):
    """LSTMFC, M = g ⊙ fc(LSTM(u; h)). Attributes: impl: "chunked" | "saved" | "torch"."""

    impl: str = "chunked"
    method: ClassVar[str] = "lstmfc"

    def validate(self) -> None:
        super().validate()
        choice(self.impl, LSTM_IMPLS, f"{self.method} impl")
        if self.meta_chunk:
            raise ValueError(f"lstmfc meta_chunk {self.meta_chunk} is not available (its LSTM "
                             "state advances in the generation, so it cannot be recomputed); "
                             "valid: 0, and impl 'chunked' bounds its memory")


# -- FSG ------------------------------------------------------------------------------

FSG_SLOW_NETS = ("mamba", "lstm", "lstmfc")
FSG_NORMALIZE = ("none", "rms")
FSG_META_INITS = ("paper", "ste")
FSG_FAST_FORMS = ("concat", "product")
FSG_WHAT_RANGES = ("unit", "symmetric")

#: FSG's size presets: slow-net layout and Mamba sizes, input normalisation and init.
FSG_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"layout": "per-weight", "expand": 1, "d_state": 4, "d_conv": 8,
            "normalize": "rms", "meta_init": "ste"},
    "paper": {"layout": "flat", "expand": 100, "d_state": 16, "d_conv": 8,
              "normalize": "none", "meta_init": "paper"},
    "official": {"layout": "flat", "expand": 100, "d_state": 16, "d_conv": 8,
                 "normalize": "none", "meta_init": "paper"},
}
#: The preset a variant runs with when none is named.
FSG_DEFAULT_PRESET = {"paper": "cpu", "official": "official"}
#: FSG's per-variant defaults: history length l, slow weight β, fast-net learning rate.
FSG_VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {"history": 6, "beta": 0.3, "fast_lr": 1e-3},
    "official": {"history": 5, "beta": 0.9, "fast_lr": 1e-2},
}
#: Deprecated FSG option values (kept to reproduce earlier results) -> replacement.
FSG_DEPRECATED = {"fast_form": ("concat", "product"), "what_range": ("symmetric", "unit")}


@dataclasses.dataclass(frozen=True)
class FSGConfig(LearnedConfig):
    """FSG's options (:mod:`bnnopt.methods.learned.fsg`); the defaults are ``FSGConfig.cpu()``.

    Attributes:
        preset: the size preset the layout/Mamba/normalize/meta_init values came from
            ("cpu", "paper" or "official"; :data:`FSG_PRESETS`).
        layout: "flat" (Eq. 10-11, one sequence of length l·ξ+1 per layer) or
            "per-weight" (one (l+1)-token sequence per weight).
        slow_net: "mamba", "lstm" or "lstmfc" (the official MetaFastAndLSTM).
        history: HGS length l (paper 6, official 5).
        beta: weight β of the slow gradient S in [0, 1] (Eq. 9; paper 0.3, official 0.9).
        hidden: fast-net width (100).
        expand, d_state, d_conv: Mamba block sizes.
        normalize: "none" (the paper) or "rms" (meta-net inputs divided by the HGS RMS).
        meta_init: "paper" (orthogonal fast-net, the slow-net's own init) or "ste"
            (the first generated gradient is STE's).
        fast_lr, slow_lr: Adam learning rates of the fast-net and the slow-net (+ LRE).
        slow_net_options: extra keyword arguments of the slow-net constructor.
        slow_scale: "constant" (Eq. 9) or "lr-schedule" (β·η_t/η_0; paper variant only).
        fast_form: "product" (F = g ⊙ φ_f(x), the convergence analysis and Fig. 1) or
            "concat" (deprecated: F = fast([g, x]); use "product").
        what_range: "unit" (x = Ŵ in [0, 1], Eq. 1) or "symmetric" (deprecated: x in
            [-1, 1]; use "unit").
        d_model: token width d of Eq. 10-11 (1: no projections, the official code's).
    """

    preset: str = "cpu"
    layout: str = "per-weight"
    slow_net: str = "mamba"
    history: int = 6
    beta: float = 0.3
    hidden: int = 100
    expand: int = 1
    d_state: int = 4
    d_conv: int = 8
    normalize: str = "rms"
    meta_init: str = "ste"
    fast_lr: float = 1e-3
    slow_lr: float = 1e-3
    slow_net_options: dict = dataclasses.field(default_factory=dict)
    slow_scale: str = "constant"
    fast_form: str = "product"
    what_range: str = "unit"
    d_model: int = 1

    method: ClassVar[str] = "fsg"
    unset_if_none: ClassVar[tuple[str, ...]] = LearnedConfig.unset_if_none + (
        "preset", "layout", "history", "beta", "expand", "d_state", "d_conv", "normalize",
        "meta_init", "fast_lr", "fast_form")

    def validate(self) -> None:
        super().validate()
        choice(self.preset, tuple(FSG_PRESETS), "fsg preset")
        choice(self.layout, LAYOUTS, "fsg layout")
        choice(self.slow_net, FSG_SLOW_NETS, "fsg slow_net")
        choice(self.normalize, FSG_NORMALIZE, "fsg normalize")
        choice(self.meta_init, FSG_META_INITS, "fsg meta_init")
        choice(self.fast_form, FSG_FAST_FORMS, "fsg fast_form")
        choice(self.what_range, FSG_WHAT_RANGES, "fsg what_range")
        if self.variant == "official" and (self.fast_form, self.what_range) != ("product", "unit"):
            raise ValueError("fsg variant 'official' has fast_form 'product' and what_range 'unit' "
                             f"(got {self.fast_form!r}, {self.what_range!r})")
        if self.meta_init == "ste" and self.fast_form == "product" and self.what_range == "symmetric":
            raise ValueError("fsg meta_init 'ste' with fast_form 'product' needs what_range 'unit'")
        check_int(self.d_model, "d_model")
        if self.meta_chunk and (self.layout != "per-weight" or self.slow_net == "lstmfc"):
            raise ValueError(f"fsg meta_chunk {self.meta_chunk} needs layout 'per-weight' and an "
                             f"HGS slow-net (got layout {self.layout!r}, slow_net "
                             f"{self.slow_net!r}); valid: 0 otherwise")
        if self.d_model > 1 and self.slow_net != "mamba":
            raise ValueError(f"fsg d_model {self.d_model} needs slow_net 'mamba' (Eq. 10-11); "
                             f"got slow_net {self.slow_net!r}")
        choice(self.slow_scale, SLOW_SCALES, "fsg slow_scale")
        if self.slow_scale != "constant" and self.variant != "paper":
            raise ValueError(f"fsg slow_scale {self.slow_scale!r} applies to variant 'paper' "
                             f"(the official variant's S is not in G); valid here: constant")
        for key in ("history", "hidden", "expand", "d_state", "d_conv"):
            check_int(getattr(self, key), key)
        for key in ("fast_lr", "slow_lr"):
            check_number(getattr(self, key), key, positive=True)
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
            raise ValueError(f"invalid fsg beta {beta!r}; must be a number in [0, 1]")
        check_table(self.slow_net_options, "fsg slow_net_options")
        for key, (old, new) in FSG_DEPRECATED.items():
            if getattr(self, key) == old:
                warn_deprecated(f"fsg {key} {old!r} is deprecated (kept to reproduce earlier "
                                f"results; docs/results.md); use {key} {new!r}, the default")

    @classmethod
    def base_for(cls, explicit: Mapping[str, Any]) -> dict[str, Any]:
        values = super().base_for(explicit)
        variant = values["variant"]
        preset = explicit.get("preset", FSG_DEFAULT_PRESET[variant])
        choice(preset, tuple(FSG_PRESETS), "fsg preset")
        return {**values, **FSG_VARIANT_DEFAULTS[variant], "preset": preset,
                **FSG_PRESETS[preset]}

    @classmethod
    def of(cls, variant: str, preset: str | None = None, **overrides: Any) -> "FSGConfig":
        """Variant x preset (None: the variant's default preset), then ``overrides``."""
        return cls.from_options({**overrides, "variant": variant, "preset": preset})

    @classmethod
    def cpu(cls, **overrides: Any) -> "FSGConfig":
        """The default: paper variant, preset "cpu" (per-weight layout, Mamba expand 1,
        d_state 4, RMS-normalised inputs, STE-equal start)."""
        return cls.of("paper", "cpu", **overrides)

    @classmethod
    def paper(cls, **overrides: Any) -> "FSGConfig":
        """The paper's equations and sizes: flat layout, expand 100, d_state 16, nothing added."""
        return cls.of("paper", "paper", **overrides)

    @classmethod
    def official(cls, **overrides: Any) -> "FSGConfig":
        """github two-tiger/FSG (``-meta MetaFastAndSlow``) exactly, its own sizes included."""
        return cls.of("official", "official", **overrides)


# -- the variant x preset table -----------------------------------------------------------

#: Rows of the "what runs" table: (variant, preset named or None for the default).
WHAT_RUNS = (("paper", None), ("paper", "paper"), ("official", None), ("official", "cpu"))
#: Columns: (header, option).
WHAT_RUNS_COLUMNS = (
    ("variant", "variant"), ("preset", "preset"), ("layout", "layout"), ("expand", "expand"),
    ("d_state", "d_state"), ("d_conv", "d_conv"), ("normalize", "normalize"),
    ("meta_init", "meta_init"), ("l", "history"), ("beta", "beta"), ("fast_lr", "fast_lr"),
    ("first_step", "first_step"), ("adam_eps", "adam_eps"), ("bias_lookahead", "bias_lookahead"),
)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        mantissa, _, exponent = f"{value:e}".partition("e")
        if 0 < abs(value) < 0.1:  # 1e-3, as the papers write it
            return f"{float(mantissa):g}e{int(exponent)}"
        return f"{value:g}"
    return str(value)


def what_runs_rows() -> list[list[str]]:
    """The cells of FSG's variant x preset table, from :meth:`FSGConfig.of`; the default
    preset of a variant is marked "(*)". Header row first."""
    rows = [[header for header, _ in WHAT_RUNS_COLUMNS]]
    for variant, preset in WHAT_RUNS:
        options = FSGConfig.of(variant, preset).to_options()
        cells = [_cell(options[key]) for _, key in WHAT_RUNS_COLUMNS]
        if preset is None:
            cells[1] += " (*)"
        rows.append(cells)
    return rows


def what_runs_table(fmt: str = "markdown") -> str:
    """FSG's variant x preset table: ``fmt`` "markdown" (the docs page) or "rst" (a
    reStructuredText simple table, the fsg docstring)."""
    choice(fmt, ("markdown", "rst"), "table format")
    rows = what_runs_rows()
    if fmt == "markdown":
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()

    return "\n".join([rule, line(rows[0]), rule, *map(line, rows[1:]), rule])
