"""summary(model): per-layer bits, parameters, storage and MACs, in the spirit of larq's summary.

One row per module that directly owns parameters (in module order); a packed
inference layer (``load_packed``: weight held as a buffer, ``packed_info``) counts
its weight as parameters too.

Storage::

    float32 bytes = 4 * params
    packed bytes  = ceil(weight.numel() * bits / 8) + 4 * (bias.numel() + #scales)   (quantized)
                  = 4 * params                                                       (others)

where #scales is what the weight quantizer's ``encode`` stores (0 for sign/DoReFa,
1 per tensor or C_out per channel for BWN, 1 for uniform; for a packed layer the
entries of its level table). Totals are given for the whole model and for the
quantized layers alone; the compression ratio is float32 bytes / packed bytes
(32x is the 1-bit limit).

Compute (only with ``input_shape``, one sample ``[1, *input_shape]`` run through
the model in eval mode under ``no_grad`` with forward hooks): for every Conv /
Linear layer (float, quantized or packed) with weight ``W`` ([C_out, C_in/groups,
kH, kW] or [out, in]) and output ``y`` of one sample,

    MACs = y.numel() * W[0].numel()          (each output element: C_in/groups*kH*kW, or in, MACs)
    BOPs = MACs * b_w * b_a                  (bit operations, Baskin et al. 2018 "UNIQ"),

``b_w`` the weight bits and ``b_a`` the bits of the layer's input (1 with a sign
activation quantizer, k with DoReFa's, 32 for float inputs). A W1A1 MAC is one
XNOR-popcount bit operation; a float MAC is 32 x 32 = 1024. MACs are grouped by
weight precision: binary (b_w = 1), k-bit (1 < b_w < 32), float (b_w = 32);
``binary_mac_share`` = binary MACs / all MACs, and ``xnor_macs`` counts the MACs
with both weights and inputs binary. Other layers (BatchNorm, pooling, additions,
activations) are not counted, as usual; nor are attention's activation-by-activation
products (q k^T, A v). A QMultiheadAttention counts its projections through their
layers' hooks, except its packed in-projection applied to distinct query / key /
value tensors (cross-attention), which computes from the layer's weight without
calling the layer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from bnnopt.nn.layers import QLayer

__all__ = ["LayerSummary", "ModelSummary", "summary", "default_input_shape"]

FLOAT_BITS = 32


@dataclass
class LayerSummary:
    """One row: a module that owns parameters (see the module docstring)."""

    name: str
    type: str
    bits: int              # bits per weight (32 for float layers)
    params: int
    float32_bytes: int
    packed_bytes: int
    quantized: bool
    act_bits: int = FLOAT_BITS   # bits of the layer's input (32: float)
    macs: int | None = None      # per sample; None when not measured / not a Conv or Linear
    bops: int | None = None      # macs * bits * act_bits


@dataclass
class ModelSummary:
    """Rows plus totals; ``str()`` is a table, ``to_dict()`` JSON-able."""

    layers: list[LayerSummary] = field(default_factory=list)
    input_shape: list[int] | None = None

    # -- storage totals -------------------------------------------------------------
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

    # -- compute totals (None without an input shape) --------------------------------
    def _macs(self, keep) -> int | None:
        if self.input_shape is None:
            return None
        return sum(r.macs for r in self.layers if r.macs is not None and keep(r))

    @property
    def total_macs(self) -> int | None:
        return self._macs(lambda r: True)

    @property
    def binary_macs(self) -> int | None:
        """MACs of layers with 1-bit weights."""
        return self._macs(lambda r: r.bits == 1)

    @property
    def kbit_macs(self) -> int | None:
        """MACs of layers with 2..31-bit weights."""
        return self._macs(lambda r: 1 < r.bits < FLOAT_BITS)

    @property
    def float_macs(self) -> int | None:
        return self._macs(lambda r: r.bits >= FLOAT_BITS)

    @property
    def xnor_macs(self) -> int | None:
        """MACs with binary weights *and* binary inputs (XNOR-popcount)."""
        return self._macs(lambda r: r.bits == 1 and r.act_bits == 1)

    @property
    def bops(self) -> int | None:
        """Sum over layers of MACs * weight bits * input bits."""
        if self.input_shape is None:
            return None
        return sum(r.bops for r in self.layers if r.bops is not None)

    @property
    def binary_mac_share(self) -> float | None:
        total = self.total_macs
        return None if total is None else (self.binary_macs / total if total else 0.0)

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
            "input_shape": self.input_shape,
            "macs": self.total_macs,
            "binary_macs": self.binary_macs,
            "kbit_macs": self.kbit_macs,
            "float_macs": self.float_macs,
            "xnor_macs": self.xnor_macs,
            "binary_mac_share": self.binary_mac_share,
            "bops": self.bops,
        }

    def __str__(self) -> str:
        compute = self.input_shape is not None
        head = ("layer", "type", "W/A bits", "params", "float32 KiB", "packed KiB") + (("MACs",) if compute else ())
        rows = []
        for r in self.layers:
            wa = f"{r.bits}/{r.act_bits}" if r.macs is not None or r.quantized else str(r.bits)
            row = (r.name, r.type, wa, f"{r.params:,}", f"{r.float32_bytes / 1024:.2f}",
                   f"{r.packed_bytes / 1024:.2f}")
            if compute:
                row += ("-" if r.macs is None else f"{r.macs:,}",)
            rows.append(row)
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
        if compute:
            shape = "x".join(map(str, self.input_shape))
            lines += [
                f"MACs per {shape} sample: {self.total_macs:,} = binary-weight {self.binary_macs:,} "
                f"+ k-bit {self.kbit_macs:,} + float {self.float_macs:,}; binary share "
                f"{100 * self.binary_mac_share:.1f}%, of which W1A1 (XNOR) {self.xnor_macs:,}",
                f"BOPs (MACs x weight bits x input bits): {self.bops:,}",
            ]
        return "\n".join(lines)


def _is_packed_layer(module: nn.Module) -> bool:
    return hasattr(module, "packed_info") and isinstance(getattr(module, "weight", None), torch.Tensor)


def _act_bits(module: nn.Module) -> int:
    act = getattr(module, "act_quantizer", None)
    return int(getattr(act, "bits", FLOAT_BITS)) if act is not None else FLOAT_BITS


def _row(name: str, module: nn.Module) -> LayerSummary | None:
    packed = _is_packed_layer(module)
    params = sum(p.numel() for p in module.parameters(recurse=False))
    if packed and not any(p is module.weight for p in module.parameters(recurse=False)):
        params += module.weight.numel()
    if params == 0:
        return None
    f32 = 4 * params
    if isinstance(module, QLayer) or packed:
        w = module.weight
        other = params - w.numel()  # bias
        if packed:
            info = module.packed_info
            groups = w.shape[0] if info.get("group_dim") == 0 else 1
            scales = groups * 2 ** int(module.bits)
        else:
            scales = module.weight_quantizer.scale_numel(tuple(w.shape))
        bits = int(module.bits)
        packed_bytes = (w.numel() * bits + 7) // 8 + 4 * (other + scales)
        return LayerSummary(name or "(root)", type(module).__name__, bits, params, f32,
                            packed_bytes, True, _act_bits(module))
    return LayerSummary(name or "(root)", type(module).__name__, FLOAT_BITS, params, f32, f32,
                        False, FLOAT_BITS)


def _computes(module: nn.Module) -> bool:
    """Conv / Linear layers, float, quantized or packed."""
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) or _is_packed_layer(module)


@torch.no_grad()
def _count_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Module name -> MACs of one sample (forward hooks, eval mode, state restored)."""
    macs: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if _computes(module):
            def hook(mod, _inputs, output, name=name):
                macs[name] = macs.get(name, 0) + output.numel() * mod.weight[0].numel()
            handles.append(module.register_forward_hook(hook))
    modes = {m: m.training for m in model.modules()}
    param = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    try:
        model.eval()
        model(torch.zeros([1, *input_shape], dtype=dtype, device=device))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return macs


def summary(model: nn.Module, input_shape: Sequence[int] | None = None) -> ModelSummary:
    """Per-layer and total parameters, storage and (given ``input_shape`` = [C, H, W]
    or [features], without the batch) MACs and BOPs of ``model``; see the module docstring."""
    rows = [_row(n, m) for n, m in model.named_modules()]
    result = ModelSummary([r for r in rows if r is not None],
                          list(map(int, input_shape)) if input_shape is not None else None)
    if input_shape is not None:
        macs = _count_macs(model, result.input_shape)
        for r in result.layers:
            name = "" if r.name == "(root)" else r.name
            if name in macs:
                r.macs = macs[name]
                r.bops = r.macs * r.bits * r.act_bits
    return result


def default_input_shape(model_name: str, options: dict[str, Any] | None = None,
                        data: dict[str, Any] | None = None) -> list[int]:
    """[C, H, W] of one input of registered model ``model_name``: from the data info
    (``in_channels``, ``image_size``) if given, else from ``options`` / the
    constructor's defaults (``in_channels``, ``input_size``)."""
    import inspect

    from bnnopt.registry import MODELS

    data = data or {}
    if data.get("in_channels") and data.get("image_size"):
        size = data["image_size"]
        size = [size, size] if isinstance(size, int) else list(size)
        return [int(data["in_channels"]), *map(int, size)]
    params = inspect.signature(MODELS.get(model_name)).parameters
    options = options or {}

    def value(key, fallback):
        if key in options:
            return options[key]
        p = params.get(key)
        return p.default if p is not None and p.default is not inspect.Parameter.empty else fallback

    size = int(value("input_size", 32))
    return [int(value("in_channels", 3)), size, size]
