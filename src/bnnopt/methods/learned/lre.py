"""Layer Recognition Embeddings (LRE) and the two slow-net sequence layouts (FSG Eq. 10-11).

LRE: one learnable d_model-vector e_i per quantized layer i (``nn.Embedding``),
prepended as the first token of the slow-net's input, so that one shared
slow-net can produce layer-specific outputs. d_model = 1 (the official code) or
d (Eq. 10: the gradient tokens are projected by W_a to d dimensions, the LRE
token t_i is d-dimensional as it is; the slow-net does the projections).

Given HGS sequences H_i of shape (k, ξ_i) (oldest first; ξ_i weights of layer i)
the slow gradient S_i (ξ_i,) is read off the slow-net output:

* ``flat`` (paper Eq. 10-11, official code): ONE sequence per layer,
  x_i = [e_i, H_i[0, :], H_i[1, :], ..., H_i[k-1, :]]  of length k·ξ_i + 1;
  S_i = the outputs at the last ξ_i positions (those of the newest gradient).
  One slow-net call per layer; the scan runs across weights and steps.
* ``per-weight``: one short sequence per weight element w of layer i,
  x_{i,w} = [e_i, H_i[0, w], ..., H_i[k-1, w]]  of length k + 1;
  S_{i,w} = the output at the last position. All weights of all layers form
  ONE batch (Σ ξ_i sequences) -> a single slow-net call.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

LAYOUTS = ("flat", "per-weight")


class LayerEmbedding(nn.Module):
    """LRE: ``num_layers`` learnable ``d_model``-vectors (N(0, 1) initialisation)."""

    def __init__(self, num_layers: int, d_model: int = 1):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"invalid num_layers {num_layers!r}; must be >= 1")
        self.embedding = nn.Embedding(num_layers, d_model)

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight  # (num_layers, d_model)


def flat_slow_gradients(slow_net: nn.Module, lre: LayerEmbedding,
                        histories: list[Tensor]) -> list[Tensor]:
    """``flat`` layout: per layer i, S_i (ξ_i,) from one sequence of length k·ξ_i + 1."""
    out = []
    for i, hist in enumerate(histories):  # hist: (k, ξ_i)
        numel = hist.shape[1]
        steps = hist.reshape(1, -1, 1).to(lre.weight.dtype)
        first = lre.weight[i].reshape(1, 1, -1)
        if getattr(slow_net, "d_model", 1) > 1:
            seq = slow_net(steps, prefix=first)
        else:
            seq = slow_net(torch.cat((first, steps), dim=1))
        out.append(seq[0, -numel:, 0])
    return out


def per_weight_slow_gradients(slow_net: nn.Module, lre: LayerEmbedding,
                              histories: list[Tensor],
                              layer_ids: list[int] | None = None) -> list[Tensor]:
    """``per-weight`` layout: S (Σξ_i,) from Σξ_i sequences of length k + 1, one batched call.

    ``layer_ids``: the layer (LRE row) of each entry of ``histories`` when they are not
    layers 0, 1, ... in order (a rank's share of the weights: column slices of some
    layers' histories); each sequence depends on its own column only.

    The (N, k+1, 1) token batch is handed over as a view of a time-major (k+1, N)
    tensor -- HGS rows are already time-major, so nothing is transposed, and a
    scan that runs over time in the outer loop reads contiguous rows.
    """
    sizes = [h.shape[1] for h in histories]
    counts = torch.tensor(sizes, device=histories[0].device)
    steps = torch.cat(histories, dim=1).to(lre.weight.dtype)  # (k, N), oldest first
    table = lre.weight if layer_ids is None else lre.weight[layer_ids]
    if getattr(slow_net, "d_model", 1) > 1:  # Eq. 10 with d > 1: a d-dim LRE prefix per weight
        first = torch.repeat_interleave(table, counts, dim=0).unsqueeze(1)  # (N, 1, d)
        out = _last(slow_net, steps.t().unsqueeze(-1), prefix=first)  # (N,)
        return list(torch.split(out, sizes))
    first = torch.repeat_interleave(table[:, 0], counts)  # (N,): e_i of each weight
    tokens = torch.cat((first.unsqueeze(0), steps), dim=0)  # (k+1, N) time-major
    out = _last(slow_net, tokens.t().unsqueeze(-1))  # (N,)
    return list(torch.split(out, sizes))


def _last(slow_net: nn.Module, tokens: Tensor, prefix: Tensor | None = None) -> Tensor:
    """The slow-net's output at the last token, (N,): its ``forward_last`` when it has
    one (computes that position only), else the last position of its full output."""
    kw = {} if prefix is None else {"prefix": prefix}
    if hasattr(slow_net, "forward_last"):
        return slow_net.forward_last(tokens, **kw)[:, 0]
    return slow_net(tokens, **kw)[:, -1, 0]
