"""summary(model): per-layer bits, parameter counts and storage, in the spirit of larq's summary.

One row per module that directly owns parameters (in module order):

    float32 bytes = 4 * params
    packed bytes  = ceil(weight.numel() * bits / 8) + 4 * (bias.numel() + #scales)   (QLayer)
                  = 4 * params                                                       (others)

where #scales is what the weight quantizer's ``encode`` stores (0 for sign/DoReFa,
1 per tensor or C_out per channel for BWN, 1 for uniform). Totals are given for the
whole model and for the quantized layers alone; the compression ratio is
float32 bytes / packed bytes (32x is the 1-bit limit).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from bnnopt.nn.layers import QLayer

__all__ = ["LayerSummary", "ModelSummary", "summary"]

FLOAT_BITS = 32


@dataclass
class LayerSummary:
    name: str
    type: str
    bits: int              # bits per weight (32 for float layers)
    params: int
    float32_bytes: int
    packed_bytes: int
    quantized: bool


@dataclass
class ModelSummary:
    layers: list[LayerSummary] = field(default_factory=list)

    # -- totals ---------------------------------------------------------------------
    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def float32_bytes(self) -> int:
        return sum(r.float32_bytes for r in self.layers)

    @property
    def packed_bytes(self) -> int:
        return sum(r.packed_bytes for r in self.layers)

    @property
    def quantized_params(self) -> int:
        return sum(r.params for r in self.layers if r.quantized)

    @property
    def quantized_float32_bytes(self) -> int:
        return sum(r.float32_bytes for r in self.layers if r.quantized)

    @property
    def quantized_packed_bytes(self) -> int:
        return sum(r.packed_bytes for r in self.layers if r.quantized)

    @property
    def compression(self) -> float:
        """Whole model: float32 bytes / packed bytes."""
        return self.float32_bytes / self.packed_bytes if self.packed_bytes else 1.0

    @property
    def quantized_compression(self) -> float:
        """Quantized layers only: float32 bytes / packed bytes (1.0 when there are none)."""
        p = self.quantized_packed_bytes
        return self.quantized_float32_bytes / p if p else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [asdict(r) for r in self.layers],
            "total_params": self.total_params,
            "quantized_params": self.quantized_params,
            "float32_bytes": self.float32_bytes,
            "packed_bytes": self.packed_bytes,
            "compression": self.compression,
            "quantized_float32_bytes": self.quantized_float32_bytes,
            "quantized_packed_bytes": self.quantized_packed_bytes,
            "quantized_compression": self.quantized_compression,
        }

    def __str__(self) -> str:
        head = ("layer", "type", "bits", "params", "float32 KiB", "packed KiB")
        rows = [(r.name, r.type, str(r.bits), f"{r.params:,}", f"{r.float32_bytes / 1024:.2f}",
                 f"{r.packed_bytes / 1024:.2f}") for r in self.layers]
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
                  for i, h in enumerate(head)]

        def fmt(cells):
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(fmt(head))
        n_q = sum(r.quantized for r in self.layers)
        lines = [fmt(head), rule, *map(fmt, rows), rule,
                 f"total params: {self.total_params:,} ({self.quantized_params:,} quantized "
                 f"in {n_q} layers)",
                 f"memory: float32 {self.float32_bytes / 1024:.2f} KiB, packed "
                 f"{self.packed_bytes / 1024:.2f} KiB, compression {self.compression:.2f}x",
                 f"quantized layers: float32 {self.quantized_float32_bytes / 1024:.2f} KiB, "
                 f"packed {self.quantized_packed_bytes / 1024:.2f} KiB, compression "
                 f"{self.quantized_compression:.2f}x"]
        return "\n".join(lines)


def _row(name: str, module: nn.Module) -> LayerSummary | None:
    params = sum(p.numel() for p in module.parameters(recurse=False))
    if params == 0:
        return None
    f32 = 4 * params
    if isinstance(module, QLayer):
        w = module.weight
        other = params - w.numel()  # bias
        scales = module.weight_quantizer.scale_numel(tuple(w.shape))
        packed = (w.numel() * module.bits + 7) // 8 + 4 * (other + scales)
        return LayerSummary(name or "(root)", type(module).__name__, module.bits, params, f32,
                            packed, True)
    return LayerSummary(name or "(root)", type(module).__name__, FLOAT_BITS, params, f32, f32,
                        False)


def summary(model: nn.Module) -> ModelSummary:
    """Per-layer and total parameter counts and storage of ``model`` (see module docstring)."""
    rows = [_row(n, m) for n, m in model.named_modules()]
    return ModelSummary([r for r in rows if r is not None])
