"""Quantized layers: a latent float weight, quantized on the fly in every forward pass.

    QConv1d / QConv2d / QConv3d / QLinear / QEmbedding forward(x):
        x   <- act_quantizer(x)                 if an activation quantizer is set
        W~  =  weight + delta                   (delta: None by default -> W~ = weight)
        Q   =  weight_quantizer(W~)             shape of weight, surrogate gradient
        y   =  convNd(x, Q, bias) / linear(x, Q, bias) / embedding(x, Q)

Hooks for the learned-gradient methods (FCGrad, LSTMFC, FSG):

- ``delta``: a Tensor (any autograd history, e.g. a meta-net output) added to the
  latent weight in the forward pass; None costs nothing. Do not assign an
  ``nn.Parameter`` (nn.Module would register it as a parameter): wrap it, e.g.
  ``layer.delta = p * 1``.
- ``bias_delta``: the same for the bias (None by default): the forward uses
  bias + bias_delta (the official FSG/MetaQuant code's bias look-ahead).
- ``track_quantized``: when True, forward keeps Q as ``last_quantized`` with
  ``retain_grad()``, so after backward ``last_quantized.grad`` is dL/dQ(W~).

Every layer subclasses its float layer (``isinstance(QConv2d(...), nn.Conv2d)`` is
True), so state-dict keys (``weight``, ``bias``) and hyper-parameters are the same.
Shapes: QConv1d x [N, C_in, L] -> [N, C_out, L'], weight [C_out, C_in/groups, k];
QConv2d x [N, C_in, H, W] -> [N, C_out, H', W'], weight [C_out, C_in/groups, kH, kW];
QConv3d x [N, C_in, D, H, W] -> [N, C_out, D', H', W'], weight [C_out, C_in/groups, kD, kH, kW];
QLinear x [..., in_features] -> [..., out_features], weight [out_features, in_features];
QEmbedding x [...] (integer indices) -> [..., embedding_dim], weight
[num_embeddings, embedding_dim] (no bias, no activation quantizer: the input is indices;
a per-channel quantizer scales each token's row).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.nn.config import QuantConfig
from bnnopt.quant import ActQuantizer, WeightQuantizer

__all__ = ["QLayer", "QConv1d", "QConv2d", "QConv3d", "QLinear", "QEmbedding"]


class QLayer(nn.Module):
    """Common base of the quantized layers (mixin placed before the float layer class)."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_quant(self, config: QuantConfig | None, weight_quantizer: WeightQuantizer | None,
                    act_quantizer: ActQuantizer | None, quantize_input: bool = True) -> None:
        if weight_quantizer is None:
            weight_quantizer = (config or QuantConfig()).make_weight_quantizer()
        if act_quantizer is None and config is not None and quantize_input:
            act_quantizer = config.make_act_quantizer()
        self.weight_quantizer = weight_quantizer
        self.act_quantizer = act_quantizer
        weight_quantizer.bind(self.weight)
        self.delta: torch.Tensor | None = None
        self.bias_delta: torch.Tensor | None = None
        self.track_quantized = False
        self.last_quantized: torch.Tensor | None = None

    # -- weights -----------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Bits per weight of the weight quantizer."""
        return self.weight_quantizer.bits

    def effective_weight(self) -> torch.Tensor:
        """W~ = weight + delta (or weight when delta is None)."""
        return self.weight if self.delta is None else self.weight + self.delta

    def effective_bias(self) -> torch.Tensor | None:
        """bias + bias_delta (bias when bias_delta is None; None without a bias)."""
        bias_delta = getattr(self, "bias_delta", None)  # absent in layers pickled before it
        if self.bias is None or bias_delta is None:
            return self.bias
        return self.bias + bias_delta

    def quantized_weight(self) -> torch.Tensor:
        """Q(W~): the tensor the forward pass uses (shape of ``weight``)."""
        return self.weight_quantizer(self.effective_weight())

    @torch.no_grad()
    def encode(self) -> dict[str, Any]:
        """``weight_quantizer.encode(W~)``: integer codes + scale (see bnnopt.quant.weight)."""
        return self.weight_quantizer.encode(self.effective_weight())

    def set_progress(self, p: float) -> None:
        """Forward training progress p in [0, 1] to the weight and activation quantizers."""
        self.weight_quantizer.set_progress(p)
        if self.act_quantizer is not None:
            self.act_quantizer.set_progress(p)

    # -- forward -------------------------------------------------------------------
    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """act_quantizer(x), or x when the layer has no activation quantizer."""
        return x if self.act_quantizer is None else self.act_quantizer(x)

    def forward_weight(self) -> torch.Tensor:
        """Q(W~) for one forward pass, kept as ``last_quantized`` when ``track_quantized``.

        Modules that compute with this layer's weight without calling the layer
        (e.g. QMultiheadAttention's packed in-projection on distinct query/key/value)
        use this so the learned-gradient hooks still see dL/dQ.
        """
        q = self.quantized_weight()
        if self.track_quantized:
            if q.requires_grad:
                q.retain_grad()
            self.last_quantized = q
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply_weight(self.quantize_input(x), self.forward_weight())

    def _apply_weight(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # copy.deepcopy / pickle: drop the tracked tensor and detach a non-leaf delta
        # (tensors with autograd history cannot be deep-copied).
        state = self.__dict__.copy()
        state["last_quantized"] = None
        for key in ("delta", "bias_delta"):
            delta = state.get(key)
            if delta is not None and delta.grad_fn is not None:
                state[key] = delta.detach()
        return state

    # -- conversion ----------------------------------------------------------------
    @classmethod
    def _float_kwargs(cls, module: nn.Module) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_float(cls, module: nn.Module, config: QuantConfig | None = None) -> "QLayer":
        """A quantized copy of float ``module`` (device, dtype, weight, bias, requires_grad)."""
        kwargs = cls._float_kwargs(module)
        new = cls(**kwargs, device=module.weight.device, dtype=module.weight.dtype, config=config)
        bias = getattr(module, "bias", None)
        with torch.no_grad():
            new.weight.copy_(module.weight)
            new.weight.requires_grad_(module.weight.requires_grad)
            new.weight_quantizer.bind(new.weight)  # from the float weights
            if bias is not None:
                new.bias.copy_(bias)
                new.bias.requires_grad_(bias.requires_grad)
        new.train(module.training)
        return new


def _conv_kwargs(m: nn.modules.conv._ConvNd) -> dict[str, Any]:
    return dict(in_channels=m.in_channels, out_channels=m.out_channels,
                kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                dilation=m.dilation, groups=m.groups, padding_mode=m.padding_mode,
                bias=m.bias is not None)


class QConv1d(QLayer, nn.Conv1d):
    """nn.Conv1d whose weight is quantized in forward; same constructor plus quantizers."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, config: QuantConfig | None = None,
                 weight_quantizer: WeightQuantizer | None = None,
                 act_quantizer: ActQuantizer | None = None) -> None:
        nn.Conv1d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias, padding_mode, device, dtype)
        self._init_quant(config, weight_quantizer, act_quantizer)

    def _apply_weight(self, x, w):
        return self._conv_forward(x, w, self.effective_bias())

    @classmethod
    def _float_kwargs(cls, m: nn.Conv1d) -> dict[str, Any]:
        return _conv_kwargs(m)


class QConv2d(QLayer, nn.Conv2d):
    """nn.Conv2d whose weight is quantized in forward; same constructor plus quantizers."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, config: QuantConfig | None = None,
                 weight_quantizer: WeightQuantizer | None = None,
                 act_quantizer: ActQuantizer | None = None) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias, padding_mode, device, dtype)
        self._init_quant(config, weight_quantizer, act_quantizer)

    def _apply_weight(self, x, w):
        return self._conv_forward(x, w, self.effective_bias())

    @classmethod
    def _float_kwargs(cls, m: nn.Conv2d) -> dict[str, Any]:
        return _conv_kwargs(m)


class QConv3d(QLayer, nn.Conv3d):
    """nn.Conv3d whose weight is quantized in forward; same constructor plus quantizers."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, config: QuantConfig | None = None,
                 weight_quantizer: WeightQuantizer | None = None,
                 act_quantizer: ActQuantizer | None = None) -> None:
        nn.Conv3d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias, padding_mode, device, dtype)
        self._init_quant(config, weight_quantizer, act_quantizer)

    def _apply_weight(self, x, w):
        return self._conv_forward(x, w, self.effective_bias())

    @classmethod
    def _float_kwargs(cls, m: nn.Conv3d) -> dict[str, Any]:
        return _conv_kwargs(m)


class QLinear(QLayer, nn.Linear):
    """nn.Linear whose weight is quantized in forward; same constructor plus quantizers."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, *, config: QuantConfig | None = None,
                 weight_quantizer: WeightQuantizer | None = None,
                 act_quantizer: ActQuantizer | None = None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device, dtype)
        self._init_quant(config, weight_quantizer, act_quantizer)

    def _apply_weight(self, x, w):
        return F.linear(x, w, self.effective_bias())

    @classmethod
    def _float_kwargs(cls, m: nn.Linear) -> dict[str, Any]:
        return dict(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)


class QEmbedding(QLayer, nn.Embedding):
    """nn.Embedding whose table is quantized in forward: y = Q(W~)[x] (a row lookup).

    No bias and no activation quantizer (the input is integer indices). ``max_norm``
    (in-place renormalisation of the table) and ``sparse`` gradients are refused:
    the lookup reads Q(W~), a tensor recomputed every pass, not the latent table.
    """

    bias = None

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 scale_grad_by_freq: bool = False, device=None, dtype=None, *,
                 config: QuantConfig | None = None,
                 weight_quantizer: WeightQuantizer | None = None) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, padding_idx,
                              scale_grad_by_freq=scale_grad_by_freq, device=device, dtype=dtype)
        self._init_quant(config, weight_quantizer, None, quantize_input=False)

    def _apply_weight(self, x, w):
        return F.embedding(x, w, self.padding_idx, None, 2.0, self.scale_grad_by_freq, False)

    @staticmethod
    def unsupported_reason(m: nn.Embedding) -> str | None:
        """Why float embedding ``m`` cannot become a QEmbedding (None when it can)."""
        if m.max_norm is not None:
            return f"max_norm={m.max_norm} renormalises the float table in place"
        if m.sparse:
            return "sparse=True gradients cannot pass through the weight quantizer"
        return None

    @classmethod
    def _float_kwargs(cls, m: nn.Embedding) -> dict[str, Any]:
        reason = cls.unsupported_reason(m)
        if reason is not None:
            raise ValueError(f"cannot quantize nn.Embedding: {reason}; valid: max_norm=None, sparse=False")
        return dict(num_embeddings=m.num_embeddings, embedding_dim=m.embedding_dim,
                    padding_idx=m.padding_idx, scale_grad_by_freq=m.scale_grad_by_freq)
