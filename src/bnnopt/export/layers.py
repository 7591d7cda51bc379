"""Inference layers that run a packed (decoded-once) quantized weight.

A packed layer holds the quantized weight Q(W) as a plain float buffer, decoded
once at load time from the file's k-bit codes and level table::

    Q[i] = levels[g(i), codes[i]]        levels: [G, 2^k], G = 1 or C_out,
                                         g(i) = 0 or the output channel of i

and runs exactly the ops of the training layer's forward (bnnopt.nn.QLayer)::

    x_q = act_quantizer(x)   (if the layer quantized its input, else x_q = x)
    y   = F.convNd(x_q, Q, bias, stride, padding, dilation, groups)   # PackedConv1d/2d/3d
    y   = F.linear(x_q, Q, bias)                                      # PackedLinear
    y   = F.embedding(x, Q, padding_idx)                              # PackedEmbedding

Because Q holds bit for bit the values the training layer computed, and the
same torch ops run on the same inputs, outputs are identical (atol = 0) on the
same device and dtype. The decode itself is a gather (no arithmetic), so it
cannot round differently from the training code.

Shapes: PackedConvNd weight [C_out, C_in/groups, *kernel], input [N, C_in, *spatial];
PackedLinear weight [out, in], input [..., in]; PackedEmbedding weight [num, dim],
input integer indices [...].
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.export.bits import unpack_codes


def decode_weight(packed: torch.Tensor | np.ndarray, bits: int, shape: list[int],
                  levels: torch.Tensor, group_dim: int | None) -> torch.Tensor:
    """Q = levels[g, codes] (gather, no arithmetic); returns a tensor of ``shape``.

    ``packed``: uint8 bit stream (see :mod:`bnnopt.export.bits`); ``levels``:
    [G, 2^bits] table in the weight's dtype; ``group_dim``: None (G = 1) or 0
    (G = shape[0], one row per output channel).
    """
    count = int(np.prod(shape)) if shape else 1
    buf = packed.numpy() if isinstance(packed, torch.Tensor) else packed
    codes = torch.from_numpy(unpack_codes(buf, bits, count).astype(np.int64)).reshape(shape)
    if levels.dim() != 2 or levels.shape[1] != 2**bits:
        raise ValueError(f"level table has shape {list(levels.shape)}; expected [G, {2**bits}]")
    if group_dim is None:
        if levels.shape[0] != 1:
            raise ValueError(f"per-tensor level table must have 1 row, has {levels.shape[0]}")
        return levels[0][codes]
    if group_dim != 0 or not shape or levels.shape[0] != shape[0]:
        raise ValueError(f"level table rows {levels.shape[0]} do not match groups along dim {group_dim} of {shape}")
    rows = torch.arange(shape[0]).reshape([-1] + [1] * (len(shape) - 1))
    return levels[rows, codes]


class _PackedBase(nn.Module):
    """Common part: the decoded weight buffer, bias and optional activation quantizer."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None,
                 act_quantizer: nn.Module | None, info: dict[str, Any]) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        if bias is None:
            self.bias = None
        else:
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.act_quantizer = act_quantizer
        self.bits = int(info["bits"])
        self.packed_info = dict(info)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.act_quantizer is None else self.act_quantizer(x)


class PackedConv(_PackedBase):
    """N-d convolution with a fixed quantized weight (see module docstring)."""

    dims = 2

    def __init__(self, weight, bias, act_quantizer, info: dict[str, Any]) -> None:
        super().__init__(weight, bias, act_quantizer, info)
        self.stride = tuple(info["stride"])
        pad = info["padding"]
        self.padding = pad if isinstance(pad, str) else tuple(pad)
        self.dilation = tuple(info["dilation"])
        self.groups = int(info["groups"])
        self.padding_mode = info.get("padding_mode", "zeros")
        # nn.ConvNd's own rule for non-zero padding modes: pad explicitly, then conv with 0.
        if self.padding_mode != "zeros":
            if isinstance(self.padding, str):
                raise ValueError(f"padding {self.padding!r} with padding_mode {self.padding_mode!r} is unsupported")
            self._rev_pad = tuple(p for p in reversed(self.padding) for _ in range(2))

    def _conv(self, x, w, padding):
        fn = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return fn(x, w, self.bias, self.stride, padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._input(x)
        if self.padding_mode != "zeros":
            return self._conv(F.pad(x, self._rev_pad, mode=self.padding_mode), self.weight, 0)
        return self._conv(x, self.weight, self.padding)

    def extra_repr(self) -> str:
        c_out, c_in_g, *kernel = self.weight.shape
        return (f"{c_in_g * self.groups}, {c_out}, kernel_size={tuple(kernel)}, stride={self.stride}, "
                f"padding={self.padding}, bits={self.bits}")


class PackedConv1d(PackedConv):
    """1-D convolution with a fixed quantized weight."""

    dims = 1


class PackedConv2d(PackedConv):
    """2-D convolution with a fixed quantized weight."""

    dims = 2


class PackedConv3d(PackedConv):
    """3-D convolution with a fixed quantized weight."""

    dims = 3


class PackedEmbedding(_PackedBase):
    """Row lookup in a fixed quantized table: y = Q[x]."""

    def __init__(self, weight, bias, act_quantizer, info: dict[str, Any]) -> None:
        super().__init__(weight, None, None, info)
        pad = info.get("padding_idx")
        self.padding_idx = None if pad is None else int(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        num, dim = self.weight.shape
        return f"{num}, {dim}, bits={self.bits}"


PACKED_LAYERS = {"conv1d": PackedConv1d, "conv2d": PackedConv2d, "conv3d": PackedConv3d,
                 "embedding": PackedEmbedding}


class PackedLinear(_PackedBase):
    """Affine map with a fixed quantized weight (see module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        out_f, in_f = self.weight.shape
        return f"in_features={in_f}, out_features={out_f}, bits={self.bits}"


PACKED_LAYERS["linear"] = PackedLinear
