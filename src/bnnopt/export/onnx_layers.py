"""Layers a loaded packed model is rewritten into before ``torch.onnx.export``.

Each PackedConv1d/2d/3d / PackedLinear / PackedEmbedding becomes an
:class:`OnnxConv` / :class:`OnnxLinear` / :class:`OnnxEmbedding` holding the same
quantized weight ``Q`` (buffer ``weight``, so its ONNX initializer is named
``<layer>.weight``) and computing

    x_q = A(x)                        (activation quantizer, if the layer had one)
    y   = convNd(x_q, W(Q), bias)  or  linear(x_q, W(Q), bias)  or  embedding(x, W(Q))

Standard ONNX (``qonnx=False``): ``W(Q) = Q`` (an initializer with the exact
quantized float values) and ``A`` is written with standard ops::

    sign    A(x) = Where(x >= 0, 1, -1)                (sign(0) := +1, as in training)
    dorefa  A(x) = Round(n * Clip(x, 0, 1)) / n,  n = 2^k - 1   (DoReFa Eq. 5)
    absmax  A(x) = Clip(Round(x Q_b / g), -Q_b, Q_b - 1) g / Q_b,  g = max(ReduceMax |x|, eps)
            per token, Q_b = 2^(k-1) (BitNet Eq. 4-5), after an affine-free LayerNorm
            (``absmax_ln``, Eq. 11-12) or RMSNorm (``absmax_rms``); standard ONNX only

QONNX (``qonnx=True``, domain ``qonnx.custom_op.general``): the bit widths are
kept in the graph through QONNX's quantization ops, which FINN-style tools read::

    1-bit weight, levels {-a, +a}:   W = BipolarQuant(Q, a)          = a * sign(Q)
    k-bit weight, uniform levels:    W = Quant(Q, s, z, k, signed=0)  = (clip(round(Q/s + z), 0, 2^k - 1) - z) * s
    sign activation:                 A = BipolarQuant(x, 1)
    dorefa activation:               A = Quant(x, 1/n, 0, k, signed=0)

with ``s`` the level spacing and ``z = -l_0 / s`` (``l_0`` the level of code 0),
per tensor or per output channel (``[C_out, 1, ...]``) like the file's level
table. Because ``Q`` already lies on the grid, these ops give back ``Q`` up to
float32 rounding of ``Q/s``. A k-bit layer whose levels are not equally spaced
(LAQ ``levels="log"``, BLAQ's learned levels) cannot be written as ``Quant`` and
is refused with a message pointing to ``--format onnx``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

QONNX_DOMAIN = "qonnx.custom_op.general"
_UNIFORM_RTOL = 1e-6


class BipolarQuantFn(Function):
    """a * sign(x) (sign(0) := +1) forward; exported as QONNX ``BipolarQuant(x, a)``."""

    @staticmethod
    def forward(ctx, x, scale):  # noqa: D102
        return torch.where(x >= 0, scale, -scale).to(x.dtype)

    @staticmethod
    def symbolic(g, x, scale):  # noqa: D102
        out = g.op(f"{QONNX_DOMAIN}::BipolarQuant", x, scale)
        out.setType(x.type())
        return out


class QuantFn(Function):
    """QONNX ``Quant``: (clip(round(x/s + z), lo, hi) - z) * s; exported as the op itself."""

    @staticmethod
    def forward(ctx, x, scale, zeropt, bitwidth, signed: int, narrow: int):  # noqa: D102
        k = int(bitwidth)
        lo = -(2 ** (k - 1)) + narrow if signed else 0
        hi = 2 ** (k - 1) - 1 if signed else 2 ** k - 1 - narrow
        q = torch.round((x / scale + zeropt).clamp(lo, hi))
        return ((q - zeropt) * scale).to(x.dtype)

    @staticmethod
    def symbolic(g, x, scale, zeropt, bitwidth, signed: int, narrow: int):  # noqa: D102
        out = g.op(f"{QONNX_DOMAIN}::Quant", x, scale, zeropt, bitwidth,
                   signed_i=int(signed), narrow_i=int(narrow), rounding_mode_s="ROUND")
        out.setType(x.type())
        return out


#: BitNet's per-token absmax activation quantizers (bnnopt.quant.bitnet) -> their normalisation
ABSMAX_NORMS = {"absmax": "none", "absmax_ln": "layernorm", "absmax_rms": "rmsnorm"}


def _absmax(x: torch.Tensor, norm: str, bits: int, eps: float, features: int) -> torch.Tensor:
    """Per-token absmax fake quantization with standard ops (ReduceMax, Round, Clip),
    after an optional affine-free LayerNorm / RMSNorm over the last dimension::

        gamma = max(max_j |x_j|, eps),  x_q = Clip(Round(x Q_b / gamma), -Q_b, Q_b - 1) gamma / Q_b

    with Q_b = 2^(bits - 1) (BitNet Eq. 4-5, 11-12; the same arithmetic as
    ``bnnopt.quant.bitnet.absmax_quantize``, whose straight-through part is the identity
    at inference). Shapes: [..., F] -> [..., F], ``features`` = F.
    """
    if norm == "layernorm":
        x = F.layer_norm(x, (features,), eps=eps)
    elif norm == "rmsnorm":
        x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    qb = float(1 << (bits - 1))
    gamma = x.abs().amax(dim=-1, keepdim=True).clamp_min(eps)
    return torch.round(x * (qb / gamma)).clamp(-qb, qb - 1) * (gamma / qb)


@dataclass
class WeightGrid:
    """How a quantized weight is written in QONNX: ``kind`` "bipolar" (scale) or
    "quant" (scale, zeropt, bits); tensors broadcastable to the weight."""

    kind: str
    bits: int
    scale: torch.Tensor
    zeropt: torch.Tensor | None = None


def _group_view(t: torch.Tensor, per_channel: bool, ndim: int) -> torch.Tensor:
    return t.reshape([-1] + [1] * (ndim - 1)) if per_channel else t.reshape(())


def weight_grid(q: torch.Tensor, codes: torch.Tensor, bits: int, name: str) -> WeightGrid:
    """The QONNX op that reproduces ``q`` (quantized weight) from its integer ``codes``.

    1 bit with levels {-a, +a} per tensor / per output channel -> BipolarQuant;
    otherwise levels l_c = l_0 + s c (checked on the codes that occur, relative
    tolerance 1e-6) -> Quant with zero point z = -l_0 / s. Raises ValueError for
    non-uniform levels.
    """
    rows = q.shape[0]
    q2 = q.detach().double().reshape(rows, -1)
    c2 = codes.reshape(rows, -1).double()
    mag = q2.abs()
    if bits == 1 and bool((mag > 0).all()):
        a = mag.amax(dim=1)
        if bool((mag == a[:, None]).all()):
            per_channel = bool((a != a[0]).any())
            scale = a if per_channel else a[:1]
            return WeightGrid("bipolar", 1, _group_view(scale.to(q.dtype), per_channel, q.dim()))
    # Fit l = l0 + s * c per output channel, on the codes that occur.
    scale = torch.empty(rows, dtype=torch.float64)
    zero = torch.empty(rows, dtype=torch.float64)
    nominal = None
    for r in range(rows):
        c, v = c2[r], q2[r]
        cmin, cmax = c.min(), c.max()
        if cmax > cmin:
            s = (v[c == cmax][0] - v[c == cmin][0]) / (cmax - cmin)
            l0 = v[c == cmin][0] - s * cmin
            nominal = s if nominal is None else nominal
        else:
            s, l0 = None, v[0] - 0.0 * cmin
        scale[r] = float("nan") if s is None else s
        zero[r] = l0
        if s is not None:
            fit = l0 + s * c
            if not torch.allclose(fit, v, rtol=_UNIFORM_RTOL, atol=_UNIFORM_RTOL * float(v.abs().max())) or s <= 0:
                raise ValueError(
                    f"layer {name!r}: its {bits}-bit levels are not equally spaced (e.g. LAQ levels='log' or "
                    "BLAQ's learned levels), which QONNX's Quant op cannot express; use --format onnx")
    if nominal is None:  # every channel uses one code: any spacing works
        nominal = torch.tensor(1.0, dtype=torch.float64)
    for r in range(rows):  # single-code channels: l0 = v - s*c with the common spacing
        if torch.isnan(scale[r]):
            scale[r] = nominal
            zero[r] = zero[r] - nominal * c2[r][0]
    zeropt = -zero / scale
    per_channel = bool((scale != scale[0]).any() or (zeropt != zeropt[0]).any())
    view = (lambda t: _group_view(t if per_channel else t[:1], per_channel, q.dim()).to(q.dtype))
    return WeightGrid("quant", bits, view(scale), view(zeropt))


class _OnnxLayer(nn.Module):
    """Shared part of OnnxConv2d / OnnxLinear (see the module docstring)."""

    def __init__(self, packed: nn.Module, qonnx: bool, grid: WeightGrid | None) -> None:
        super().__init__()
        self.register_buffer("weight", packed.weight.detach().clone())
        self.register_buffer("bias", None if packed.bias is None else packed.bias.detach().clone())
        self.bits = int(packed.bits)
        self.qonnx = qonnx
        self.grid_kind = grid.kind if grid is not None else None
        if grid is not None:
            self.register_buffer("weight_scale", grid.scale.clone())
            if grid.kind == "quant":
                self.register_buffer("weight_zeropt", grid.zeropt.clone())
                self.register_buffer("weight_bitwidth", torch.tensor(float(grid.bits)))
        act = getattr(packed, "act_quantizer", None)
        self.act_name = getattr(act, "name", None) if act is not None else None
        self.act_bits = int(act.bits) if act is not None else 32
        valid = ("sign", "dorefa") if qonnx else ("sign", "dorefa", *ABSMAX_NORMS)
        if act is not None and self.act_name not in valid:
            raise ValueError(f"activation quantizer {self.act_name!r} has no {'QONNX' if qonnx else 'ONNX'} "
                             f"form; valid: {', '.join(valid)}")
        self.act_eps = float(getattr(act, "eps", 1e-5))
        if qonnx and self.act_name == "sign":
            self.register_buffer("act_scale", torch.tensor(1.0, dtype=self.weight.dtype))
        elif qonnx and self.act_name == "dorefa":
            n = 2 ** self.act_bits - 1
            self.register_buffer("act_scale", torch.tensor(1.0 / n, dtype=self.weight.dtype))
            self.register_buffer("act_zeropt", torch.tensor(0.0, dtype=self.weight.dtype))
            self.register_buffer("act_bitwidth", torch.tensor(float(self.act_bits)))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_name is None:
            return x
        if self.act_name in ABSMAX_NORMS:  # features as a constant: the traced graph keeps it static
            return _absmax(x, ABSMAX_NORMS[self.act_name], self.act_bits, self.act_eps,
                           int(self.weight.shape[1]))
        if self.act_name == "sign":
            if self.qonnx:
                return BipolarQuantFn.apply(x, self.act_scale)
            one = torch.ones((), dtype=x.dtype)
            return torch.where(x >= 0, one, -one)
        if self.qonnx:
            return QuantFn.apply(x, self.act_scale, self.act_zeropt, self.act_bitwidth, 0, 0)
        n = 2 ** self.act_bits - 1
        return torch.round(n * x.clamp(0, 1)) / n

    def _weight(self) -> torch.Tensor:
        if self.grid_kind == "bipolar":
            return BipolarQuantFn.apply(self.weight, self.weight_scale)
        if self.grid_kind == "quant":
            return QuantFn.apply(self.weight, self.weight_scale, self.weight_zeropt, self.weight_bitwidth, 0, 0)
        return self.weight


class OnnxConv(_OnnxLayer):
    """convNd(A(x), W(Q), bias) with the packed layer's geometry (N = 1, 2, 3)."""

    def __init__(self, packed: nn.Module, qonnx: bool, grid: WeightGrid | None) -> None:
        super().__init__(packed, qonnx, grid)
        self.dims = packed.dims
        self.stride, self.padding = packed.stride, packed.padding
        self.dilation, self.groups = packed.dilation, packed.groups
        self.padding_mode = packed.padding_mode
        self._rev_pad = getattr(packed, "_rev_pad", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._input(x)
        w = self._weight()
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        if self.padding_mode != "zeros":
            x = F.pad(x, self._rev_pad, mode=self.padding_mode)
            return conv(x, w, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


#: the 2-D name the ONNX path has always used
OnnxConv2d = OnnxConv


class OnnxEmbedding(_OnnxLayer):
    """embedding(x, W(Q)): a Gather on the quantized table."""

    def __init__(self, packed: nn.Module, qonnx: bool, grid: WeightGrid | None) -> None:
        super().__init__(packed, qonnx, grid)
        self.padding_idx = packed.padding_idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self._weight(), self.padding_idx)


class OnnxLinear(_OnnxLayer):
    """linear(A(x), W(Q), bias)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input(x), self._weight(), self.bias)


def onnx_ready(packed_model: nn.Module, codes: dict[str, torch.Tensor] | None = None, *,
               qonnx: bool = False) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
    """A copy of a ``load_packed`` model with every packed layer rewritten for export.

    ``codes``: layer name -> integer codes of its weight (needed for ``qonnx``).
    Returns ``(module, layers)`` where ``layers`` maps each rewritten layer's name
    to ``{"weight": initializer name, "bits", "act_bits", "grid"}``.
    """
    from bnnopt.export.layers import PackedEmbedding, PackedLinear, PackedConv

    model = copy.deepcopy(packed_model).eval()
    done: dict[int, nn.Module] = {}
    layers: dict[str, dict[str, Any]] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, (PackedConv, PackedLinear, PackedEmbedding)) or id(module) in done:
            continue
        grid = None
        if qonnx:
            if codes is None or name not in codes:
                raise ValueError(f"layer {name!r}: no codes given; QONNX export needs the packed file's codes")
            grid = weight_grid(module.weight, codes[name], int(module.bits), name)
        cls = (OnnxConv if isinstance(module, PackedConv) else
               OnnxEmbedding if isinstance(module, PackedEmbedding) else OnnxLinear)
        try:
            new = cls(module, qonnx, grid)
        except ValueError as err:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): {err}") from None
        done[id(module)] = new
        for parent in list(model.modules()):
            for key, sub in list(parent._modules.items()):
                if sub is module:
                    setattr(parent, key, new)
        layers[name] = {"weight": f"{name}.weight", "bits": new.bits, "act_bits": new.act_bits,
                        "grid": grid.kind if grid is not None else None}
    return model, layers
