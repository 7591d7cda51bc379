"""FSG slow-nets: sequence models over a token sequence of gradients.

FSG (Chen et al., AAAI 2025, Sec. "Slow-net", Eq. 10-11) feeds the slow-net
the historical gradients of a layer, preceded by that layer's LRE token, and
reads its momentum-like estimate S off the output tokens. Both nets here share
one interface::

    net(tokens: (batch, L, 1)) -> (batch, L, 1)      # one output per token

The caller prepends the LRE token and reads the positions it needs (the last
token for the per-weight layout, the last xi tokens for the flat layout).
The output is causal in both nets: position t depends on tokens 0..t only.

* :class:`MambaSlowNet` - one Mamba block with d_model = 1 (the official FSG
  code uses ``mamba_ssm.Mamba(d_model=1, d_state=16, d_conv=8, expand=100)``
  directly, with no norm or residual; so does this class). With d_model = d > 1
  it is the paper's Eq. 10-11: each scalar token is projected by W_a (1 x d,
  bias-free), an optional d-dim prefix token (the LRE t_i, not projected) goes
  first, and the Mamba outputs are read out by W_b (d x 1, bias-free); d = 1 has
  no projections (today's net, unchanged).
* :class:`LSTMSlowNet` - a one-layer LSTM on the scalar tokens followed by a
  linear read-out per token (FSG Table 3's LSTM slow-net; the cell follows
  MetaQuant's MetaLSTMFC, hidden size 20 by default).
"""
from __future__ import annotations

import torch
from torch import nn

from bnnopt.ssm.mamba import Mamba

__all__ = ["MambaSlowNet", "LSTMSlowNet", "make_slow_net", "SLOW_NET_KINDS"]


def _check_tokens(tokens: torch.Tensor) -> None:
    if tokens.dim() != 3 or tokens.shape[-1] != 1:
        raise ValueError(f"slow-net tokens must be (batch, length, 1), got {tuple(tokens.shape)}")


class MambaSlowNet(nn.Module):
    """A Mamba block on scalar tokens: (batch, L, 1) -> (batch, L, 1).

    Defaults are the official FSG code's: d_model 1, d_state 16, d_conv 8,
    expand 100 (d_inner = 100 channels). Extra keywords go to :class:`Mamba`
    (e.g. ``scan_method``, ``tile_elems``, ``use_cuda_kernel``, ``dt_rank``).
    """

    def __init__(self, d_model: int = 1, d_state: int = 16, d_conv: int = 8,
                 expand: float = 100, **mamba_kw):
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"invalid slow-net d_model {d_model!r}; must be an integer >= 1")
        self.d_model = d_model
        self.mamba = Mamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                           **mamba_kw)
        if d_model > 1:  # Eq. 10 W_a (1 x d) and Eq. 11 W_b (d x 1)
            self.w_a = nn.Linear(1, d_model, bias=False)
            self.w_b = nn.Linear(d_model, 1, bias=False)

    def _mamba_input(self, tokens: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
        """[prefix,] W_a tokens: (batch, L (+1), d_model)."""
        _check_tokens(tokens)
        x = self.w_a(tokens) if self.d_model > 1 else tokens
        if prefix is not None:
            if prefix.shape != (tokens.shape[0], 1, self.d_model):
                raise ValueError(f"slow-net prefix must be ({tokens.shape[0]}, 1, {self.d_model}), "
                                 f"got {tuple(prefix.shape)}")
            x = torch.cat((prefix.to(x.dtype), x), dim=1)
        return x

    def forward(self, tokens: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (batch, L, 1) [, prefix (batch, 1, d_model)] -> (batch, L (+1), 1).

        With d_model = 1 a prefix is simply concatenated before the tokens.
        """
        y = self.mamba(self._mamba_input(tokens, prefix))
        return self.w_b(y) if self.d_model > 1 else y

    def forward_last(self, tokens: torch.Tensor,
                     prefix: torch.Tensor | None = None) -> torch.Tensor:
        """The output at the last token only: (batch, 1) = ``forward(...)[:, -1]``
        (:meth:`Mamba.forward_last`: no per-step states, much cheaper)."""
        y = self.mamba.forward_last(self._mamba_input(tokens, prefix))   # (batch, d_model)
        return self.w_b(y) if self.d_model > 1 else y


class LSTMSlowNet(nn.Module):
    """LSTM(1 -> hidden) over the tokens, then Linear(hidden -> 1) at every token.

    (batch, L, 1) -> (batch, L, 1); the state starts at zero for every sequence.
    """

    def __init__(self, hidden: int = 20, num_layers: int = 1):
        super().__init__()
        for name, value in (("hidden", hidden), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LSTMSlowNet {name} must be a positive int, got {value!r}")
        self.hidden, self.num_layers = hidden, num_layers
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden, num_layers=num_layers,
                            batch_first=True)
        self.readout = nn.Linear(hidden, 1)

    d_model = 1

    def forward(self, tokens: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        _check_tokens(tokens)
        if prefix is not None:
            tokens = torch.cat((prefix.to(tokens.dtype), tokens), dim=1)
        out, _ = self.lstm(tokens)
        return self.readout(out)

    def forward_last(self, tokens: torch.Tensor,
                     prefix: torch.Tensor | None = None) -> torch.Tensor:
        """The output at the last token only: (batch, 1) (read-out of the last state)."""
        _check_tokens(tokens)
        if prefix is not None:
            tokens = torch.cat((prefix.to(tokens.dtype), tokens), dim=1)
        _, (h, _) = self.lstm(tokens)
        return self.readout(h[-1])


_KINDS = {"mamba": MambaSlowNet, "lstm": LSTMSlowNet}
SLOW_NET_KINDS = tuple(_KINDS)


def make_slow_net(kind: str, **kw) -> nn.Module:
    """Build a slow-net by kind ("mamba" or "lstm"); ``kw`` go to its constructor."""
    if kind not in _KINDS:
        raise ValueError(f"unknown slow-net kind {kind!r}; valid: {', '.join(SLOW_NET_KINDS)}")
    return _KINDS[kind](**kw)
