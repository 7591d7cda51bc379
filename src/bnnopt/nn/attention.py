"""QMultiheadAttention: nn.MultiheadAttention whose projections are (quantized) child layers.

torch's ``nn.MultiheadAttention`` keeps its input projection as bare parameters
(``in_proj_weight`` [3E, E], or ``q/k/v_proj_weight`` when kdim/vdim differ from
E) and reads ``out_proj.weight`` directly, so swapping a Linear inside it changes
nothing. This module holds every projection as a child layer and calls it:

    same embed dims:   [q | k | v] = in_proj(x)        in_proj: E -> 3E  (one weight [3E, E])
    kdim/vdim != E:    q = q_proj(query), k = k_proj(key), v = v_proj(value)
    heads:             q, k, v -> [B, H, L, E/H]
    attention:         A = softmax(q k^T / sqrt(E/H) + M)       M: attn_mask + key_padding_mask
    output:            y = out_proj(concat_h(dropout(A) v))

(Vaswani et al. 2017, "Attention Is All You Need", Eq. 1 and the multi-head
definition in Sec. 3.2.2.) Each projection is a ``QLinear`` (its weight quantized
in every forward pass, with the delta / track_quantized hooks of bnnopt.nn.QLayer)
or, where binarize_ left it in full precision, a plain ``nn.Linear``; a loaded
packed model puts its packed layers in the same places. With a packed in-projection
and distinct query / key / value tensors (cross-attention) the weight
``in_proj.forward_weight()`` is sliced into its q, k, v rows, so one quantization
(and one ``last_quantized``) serves the three products.

Semantics follow ``nn.MultiheadAttention.forward``: ``batch_first``, unbatched
inputs, ``key_padding_mask`` [B, S] and ``attn_mask`` [L, S] or [B*H, L, S] (bool:
True = masked; float: added), ``bias_k``/``bias_v``, ``add_zero_attn``, dropout on
the attention weights in training, ``need_weights`` (weights averaged over heads
when ``average_attn_weights``) and ``is_causal`` (a hint that ``attn_mask`` is the
causal mask; attn_mask is required with it, as in torch). There is no fused fast
path and no ``in_proj_weight`` attribute, so nothing can read the float latent
weights in place of the quantized ones.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.nn.config import QuantConfig
from bnnopt.nn.layers import QLayer, QLinear

__all__ = ["QMultiheadAttention"]


def _float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Bool mask (True = masked) -> additive float mask (-inf where masked); float as is."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    if not torch.is_floating_point(mask):
        raise ValueError(f"invalid attention mask dtype {mask.dtype}; valid: torch.bool or a float dtype")
    return mask.to(dtype)


def _linear_parts(layer: nn.Module):
    """(input transform, weight used in forward, bias) of a Linear-like child layer."""
    if isinstance(layer, QLayer):
        return layer.quantize_input, layer.forward_weight(), layer.effective_bias()
    act = getattr(layer, "act_quantizer", None)
    return (act if act is not None else (lambda x: x)), layer.weight, layer.bias


class QMultiheadAttention(nn.Module):
    """Multi-head attention computed from child projection layers (see module docstring).

    Same constructor as nn.MultiheadAttention plus ``config`` (quantizers of the
    QLinear projections) and ``float_projections`` (names among in_proj / q_proj /
    k_proj / v_proj / out_proj kept as plain nn.Linear). Inputs: query [L, N, E]
    ([N, L, E] with batch_first, [L, E] unbatched), key / value [S, N, kdim / vdim].
    Returns (output [L, N, E], weights [N, L, S] or [N, H, L, S], or None).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device=None, dtype=None, *,
                 config: QuantConfig | None = None, float_projections=()) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"invalid embed_dim {embed_dim!r} / num_heads {num_heads!r}; "
                             "valid: positive, embed_dim divisible by num_heads")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first, self.add_zero_attn = dropout, batch_first, add_zero_attn
        kw = {"device": device, "dtype": dtype}
        names = ("in_proj",) if self._qkv_same_embed_dim else ("q_proj", "k_proj", "v_proj")
        unknown = set(float_projections) - {*names, "out_proj"}
        if unknown:
            raise ValueError(f"invalid float_projections {sorted(unknown)}; valid: {', '.join((*names, 'out_proj'))}")

        def make(name, fan_in, fan_out):
            if name in float_projections:
                return nn.Linear(fan_in, fan_out, bias=bias, **kw)
            return QLinear(fan_in, fan_out, bias=bias, config=config, **kw)

        if self._qkv_same_embed_dim:
            self.in_proj = make("in_proj", embed_dim, 3 * embed_dim)
        else:
            self.q_proj = make("q_proj", embed_dim, embed_dim)
            self.k_proj = make("k_proj", self.kdim, embed_dim)
            self.v_proj = make("v_proj", self.vdim, embed_dim)
        self.out_proj = make("out_proj", embed_dim, embed_dim)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, embed_dim, **kw))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, embed_dim, **kw))
        else:
            self.bias_k = self.bias_v = None

    # -- attributes torch's Transformer layers read -------------------------------------
    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        """The in-projection bias [3E] (None without bias), as in nn.MultiheadAttention."""
        if self._qkv_same_embed_dim:
            return self.in_proj.bias
        if self.q_proj.bias is None:
            return None
        return torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])

    def projection_names(self) -> tuple[str, ...]:
        return (("in_proj",) if self._qkv_same_embed_dim else ("q_proj", "k_proj", "v_proj")) + ("out_proj",)

    # -- conversion ----------------------------------------------------------------------
    @classmethod
    def from_float(cls, mha: nn.MultiheadAttention, config: QuantConfig | None = None,
                   quantize=None) -> "QMultiheadAttention":
        """Copy of ``mha`` (weights, biases, requires_grad, device, dtype, mode) whose
        projections named in ``quantize`` (default: all) are QLinear layers."""
        w = mha.out_proj.weight
        new = cls(mha.embed_dim, mha.num_heads, mha.dropout, mha.in_proj_bias is not None,
                  mha.bias_k is not None, mha.add_zero_attn, mha.kdim, mha.vdim, mha.batch_first,
                  device=w.device, dtype=w.dtype, config=config)
        names = new.projection_names()
        quantize = set(names if quantize is None else quantize)
        if quantize - set(names):
            raise ValueError(f"invalid projection(s) {sorted(quantize - set(names))}; valid: {', '.join(names)}")
        E = mha.embed_dim
        if mha._qkv_same_embed_dim:
            weights = {"in_proj": mha.in_proj_weight}
            biases = {"in_proj": mha.in_proj_bias}
        else:
            weights = {"q_proj": mha.q_proj_weight, "k_proj": mha.k_proj_weight, "v_proj": mha.v_proj_weight}
            b = mha.in_proj_bias
            biases = {n: (None if b is None else b[i * E:(i + 1) * E]) for i, n in enumerate(weights)}
        weights["out_proj"], biases["out_proj"] = mha.out_proj.weight, mha.out_proj.bias
        with torch.no_grad():
            for name in names:
                layer = getattr(new, name)
                if name not in quantize:
                    layer = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                      device=w.device, dtype=w.dtype)
                    setattr(new, name, layer)
                layer.weight.copy_(weights[name])
                layer.weight.requires_grad_(weights[name].requires_grad)
                if name in quantize:
                    layer.weight_quantizer.bind(layer.weight)  # from the float weights
                if layer.bias is not None:
                    layer.bias.copy_(biases[name])
                    layer.bias.requires_grad_(biases[name].requires_grad)
            for key in ("bias_k", "bias_v"):
                if getattr(mha, key) is not None:
                    getattr(new, key).copy_(getattr(mha, key))
                    getattr(new, key).requires_grad_(getattr(mha, key).requires_grad)
        new.train(mha.training)
        return new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A float nn.MultiheadAttention's keys (in_proj_weight, in_proj_bias,
        # q/k/v_proj_weight) are read into the projection layers, so a float checkpoint
        # loads into a binarized model.
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            renames = {"in_proj_weight": "in_proj.weight", "in_proj_bias": "in_proj.bias"}
        else:
            renames = {f"{n}_proj_weight": f"{n}_proj.weight" for n in "qkv"}
            bias = state_dict.pop(prefix + "in_proj_bias", None)
            if bias is not None:
                for i, n in enumerate("qkv"):
                    state_dict[f"{prefix}{n}_proj.bias"] = bias[i * E:(i + 1) * E]
        for old, new in renames.items():
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # -- forward -------------------------------------------------------------------------
    def _project(self, query, key, value):
        if not self._qkv_same_embed_dim:
            return self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if query is key and key is value:  # self-attention: one call of the layer
            return self.in_proj(query).chunk(3, dim=-1)
        prep, w, b = _linear_parts(self.in_proj)
        ws = w.chunk(3)
        bs = b.chunk(3) if b is not None else (None, None, None)
        return tuple(F.linear(prep(x), ws[i], bs[i]) for i, x in enumerate((query, key, value)))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(f"invalid query/key/value dims {query.dim()}/{key.dim()}/{value.dim()}; "
                             "valid: all 3 (batched) or all 2 (unbatched)")
        if not batched:  # one sequence: a batch of 1 in the [B, L, E] layout used below
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # [L, B, E] -> [B, L, E], keeping query is key is value
            tq = query.transpose(0, 1)
            tk = tq if key is query else key.transpose(0, 1)
            tv = tk if value is key else value.transpose(0, 1)
            query, key, value = tq, tk, tv
        bsz, tgt_len, _ = query.shape
        H, hd = self.num_heads, self.head_dim
        if is_causal and attn_mask is None:
            raise ValueError("is_causal=True needs attn_mask (the causal mask), as in nn.MultiheadAttention; "
                             "valid: pass nn.Transformer.generate_square_subsequent_mask(L)")
        kpm = _float_mask(key_padding_mask, query.dtype)
        mask = _float_mask(attn_mask, query.dtype)
        use_causal = is_causal and kpm is None and not need_weights
        if use_causal:
            mask = None

        q, k, v = self._project(query, key, value)  # [B, L, E], [B, S, E], [B, S, E]
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(bsz, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(bsz, 1, -1)], dim=1)
            mask = None if mask is None else F.pad(mask, (0, 1))
            kpm = None if kpm is None else F.pad(kpm, (0, 1))
        q = q.reshape(bsz, tgt_len, H, hd).transpose(1, 2)           # [B, H, L, hd]
        k = k.reshape(bsz, k.shape[1], H, hd).transpose(1, 2)        # [B, H, S, hd]
        v = v.reshape(bsz, v.shape[1], H, hd).transpose(1, 2)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(bsz, H, 1, hd)], dim=2)
            v = torch.cat([v, v.new_zeros(bsz, H, 1, hd)], dim=2)
            mask = None if mask is None else F.pad(mask, (0, 1))
            kpm = None if kpm is None else F.pad(kpm, (0, 1))
        src_len = k.shape[2]
        if mask is not None:
            if mask.dim() == 2:
                mask = mask.reshape(1, 1, tgt_len, src_len)
            elif mask.dim() == 3:
                mask = mask.reshape(-1, H, tgt_len, src_len)
            else:
                raise ValueError(f"invalid attn_mask dim {mask.dim()}; valid: 2 ([L, S]) or 3 ([B*H, L, S])")
        if kpm is not None:
            kpm = kpm.reshape(bsz, 1, 1, src_len)
            mask = kpm if mask is None else mask + kpm
        p = self.dropout if self.training else 0.0

        if need_weights:
            scores = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            if p > 0.0:
                weights = F.dropout(weights, p=p)
            out = weights @ v
            weights = weights.mean(dim=1) if average_attn_weights else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=use_causal)
            weights = None
        out = self.out_proj(out.transpose(1, 2).reshape(bsz, tgt_len, self.embed_dim))
        if not batched:
            return out.squeeze(0), (None if weights is None else weights.squeeze(0))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")
