"""A small decoder-only Transformer (GPT-style, pre-norm) for character/byte-level LMs.

Architecture (Radford et al. 2018/2019; pre-norm as in GPT-2)::

    x [B, T] int64 tokens in [0, vocab)
    h = tok_emb(x) + pos_emb(0..T-1)                       [B, T, d]
    n_layer x Block:
        h = h + attn.proj(CausalSelfAttention(attn.qkv(ln1(h))))
        h = h + mlp.proj(GELU(mlp.fc(ln2(h))))             fc: d -> 4d, proj: 4d -> d
    logits = head(ln_f(h))                                 [B, T, vocab]

Causal self-attention with ``n_head`` heads of size d / n_head:
softmax(q k^T / sqrt(d_head) + M) v with M_ts = -inf for s > t, so the output at
position t depends on tokens 0..t only.

Every projection is a plain ``nn.Linear`` (the fused ``attn.qkv`` d -> 3d,
``attn.proj``, ``mlp.fc``, ``mlp.proj``), so ``bnnopt.nn.binarize_`` turns them
into QLinear layers. The token and position embeddings are ``nn.Embedding``
(never quantized by binarize_), and the output ``head`` is the model's last
``nn.Linear``: the policy :data:`GPT_POLICY` (``keep_first=False`` so the first
attention projection is quantized, ``keep_last=True`` so the head stays float)
quantizes exactly the attention and MLP projections, as BitNet does (its
BitLinear replaces the projections; embeddings and the output head stay in high
precision). ``exclude="head"`` is the same choice by name; ``keep_last=False``
quantizes the head too.

Registered: ``gpt_tiny`` (2 layers, d 64, 2 heads: a CPU model for tests and the
``lm-tiny`` protocol), ``gpt_small`` (6 layers, d 384, 6 heads) and ``gpt_base``
(12 layers, d 768, 12 heads, GPT-2 small's shape). ``num_classes`` is the
vocabulary size (256 for bytes); ``block_size`` the longest sequence; the zoo's
common ``in_channels`` / ``input_size`` arguments are accepted and unused.

Initialisation (GPT-2): every Linear and Embedding weight N(0, 0.02), biases 0,
the residual output projections (``attn.proj``, ``mlp.proj``) N(0, 0.02 / sqrt(2 n_layer)).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.models._checks import positive_int
from bnnopt.registry import MODELS

__all__ = ["GPT", "GPT_POLICY", "gpt_tiny", "gpt_small", "gpt_base", "DEFAULT_BLOCK_SIZE"]

#: binarize_ policy quantizing the attention and MLP projections only (head kept float).
GPT_POLICY: dict[str, Any] = {"keep_first": False, "keep_last": True}
#: Default context length of the registered GPTs (and of bnnopt.data.text's sequences).
DEFAULT_BLOCK_SIZE = 128


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused qkv projection. [B, T, d] -> [B, T, d]."""

    def __init__(self, d_model: int, n_head: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = float(dropout)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        # [B, T, d] -> [B, heads, T, d_head]
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class MLP(nn.Module):
    """fc (d -> 4d), GELU, proj (4d -> d), dropout. [B, T, d] -> [B, T, d]."""

    def __init__(self, d_model: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model, bias=bias)
        self.proj = nn.Linear(4 * d_model, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, d_model: int, n_head: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, bias, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, bias, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only Transformer: tokens [B, T] (T <= block_size) -> logits [B, T, vocab].

    Args:
        num_classes: vocabulary size V (the output classes of every position).
        block_size: longest sequence (number of learned positions).
        n_layer, n_head, d_model: depth, heads, width (d_model divisible by n_head).
        dropout: dropout on embeddings, attention weights and residual branches.
        bias: biases in the Linear layers and LayerNorms.
        tie_weights: share the head's weight with the token embedding.
        in_channels, input_size: accepted for the zoo's common signature; unused.
    """

    def __init__(self, num_classes: int = 256, block_size: int = DEFAULT_BLOCK_SIZE,
                 n_layer: int = 2, n_head: int = 2, d_model: int = 64, dropout: float = 0.0,
                 bias: bool = True, tie_weights: bool = False, in_channels: int | None = None,
                 input_size: int | None = None) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("block_size", block_size),
                            ("n_layer", n_layer), ("n_head", n_head), ("d_model", d_model)):
            positive_int(name, value)
        if d_model % n_head:
            raise ValueError(f"d_model {d_model!r} must be divisible by n_head {n_head!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"invalid dropout {dropout!r}; valid: 0 <= dropout < 1")
        self.vocab_size, self.block_size = num_classes, block_size
        self.tok_emb = nn.Embedding(num_classes, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_head, bias, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
        self.head = nn.Linear(d_model, num_classes, bias=False)
        self.apply(self._init)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, 0.0, 0.02 / math.sqrt(2 * n_layer))
        if tie_weights:
            self.head.weight = self.tok_emb.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"GPT expects integer tokens [B, T], got {x.dtype} {tuple(x.shape)}")
        t = x.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}; "
                             f"valid: T <= {self.block_size}")
        pos = torch.arange(t, device=x.device)
        h = self.drop(self.tok_emb(x) + self.pos_emb(pos))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after the context ``idx``, one at a time.

        At every step the model sees the last ``block_size`` tokens x_{t-T+1..t} and the
        next token is drawn from softmax(z / temperature), z the logits at the last
        position (``torch.multinomial`` with ``generator``, so a seeded generator gives
        the same text from the same logits); ``temperature`` 0 takes argmax z (greedy).
        Runs in the module's current mode: call ``.eval()`` first (dropout).

        Args:
            idx: int64 tokens [B, T0], T0 >= 1, each in [0, vocab).
            max_new_tokens: N >= 1.
            temperature: >= 0.
            generator: torch.Generator on the model's device, or None (global RNG).

        Returns:
            int64 tokens [B, T0 + N]: ``idx`` followed by the sampled tokens.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 1:
            raise ValueError(f"invalid max_new_tokens {max_new_tokens!r}; must be an integer >= 1")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not temperature >= 0:
            raise ValueError(f"invalid temperature {temperature!r}; must be a number >= 0")
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[1] < 1 \
                or idx.dtype not in (torch.int64, torch.int32):
            got = f"{idx.dtype} {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx)
            raise ValueError(f"generate expects integer tokens [B, T] with T >= 1, got {got}")
        bad = idx[(idx < 0) | (idx >= self.vocab_size)]
        if bad.numel():
            raise ValueError(f"token {int(bad[0])} is outside the vocabulary; "
                             f"valid: 0..{self.vocab_size - 1}")
        out = idx.long()
        for _ in range(max_new_tokens):
            logits = self(out[:, -self.block_size:])[:, -1, :].float()
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                probs = torch.softmax(logits / float(temperature), dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            out = torch.cat([out, nxt], dim=1)
        return out


def _preset(name: str, description: str, n_layer: int, n_head: int, d_model: int):
    def build(num_classes: int = 256, block_size: int = DEFAULT_BLOCK_SIZE, dropout: float = 0.0,
              **options: Any) -> GPT:
        options.setdefault("n_layer", n_layer)
        options.setdefault("n_head", n_head)
        options.setdefault("d_model", d_model)
        return GPT(num_classes=num_classes, block_size=block_size, dropout=dropout, **options)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{description}. Options as :class:`GPT`."
    return MODELS.register(name, description)(build)


gpt_tiny = _preset("gpt_tiny", "GPT, 2 layers, d 64, 2 heads (0.14M parameters with 256 tokens)",
                   2, 2, 64)
gpt_small = _preset("gpt_small", "GPT, 6 layers, d 384, 6 heads (10.9M parameters with 256 tokens)",
                    6, 6, 384)
gpt_base = _preset("gpt_base", "GPT, 12 layers, d 768, 12 heads (GPT-2 small's shape; 85.5M "
                   "parameters with 256 tokens)", 12, 12, 768)
