"""LRE and the slow-net sequence layouts (FSG Eq. 10-11): which tokens, in which order."""
from __future__ import annotations

import torch
from torch import nn

from bnnopt.methods.learned.lre import LayerEmbedding, flat_slow_gradients, per_weight_slow_gradients


class Recorder(nn.Module):
    """A causal 'slow-net' (B, L, 1) -> (B, L, 1): running sum along L; records its inputs."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return x.cumsum(dim=1)


def _histories():
    torch.manual_seed(0)
    return [torch.randn(3, 4), torch.randn(3, 2)]  # two layers, k = 3 steps, ξ = 4 and 2


def test_flat_layout_tokens_and_outputs():
    hist = _histories()
    lre = LayerEmbedding(2)
    net = Recorder()
    out = flat_slow_gradients(net, lre, hist)
    assert [x.shape for x in net.inputs] == [(1, 13, 1), (1, 7, 1)]  # l·ξ + 1
    for i, (h, x) in enumerate(zip(hist, net.inputs)):
        assert x[0, 0, 0] == lre.weight[i, 0]  # LRE token first
        assert torch.equal(x[0, 1:, 0], h.reshape(-1))  # then g_oldest, ..., g_newest
        # outputs at the last ξ positions: cumulative sum up to each newest-gradient token
        full = torch.cat((lre.weight[i].detach(), h.reshape(-1))).cumsum(0)
        assert torch.allclose(out[i], full[-h.shape[1]:])


def test_per_weight_layout_one_batched_call():
    hist = _histories()
    lre = LayerEmbedding(2)
    net = Recorder()
    out = per_weight_slow_gradients(net, lre, hist)
    assert len(net.inputs) == 1 and net.inputs[0].shape == (6, 4, 1)  # Σξ sequences, k + 1
    x = net.inputs[0][..., 0]
    assert torch.equal(x[:4, 0], lre.weight[0, 0].expand(4))
    assert torch.equal(x[4:, 0], lre.weight[1, 0].expand(2))
    assert torch.equal(x[:4, 1:], hist[0].t()) and torch.equal(x[4:, 1:], hist[1].t())
    # the output is the last position: e_i + Σ_t g_t of that weight
    assert torch.allclose(out[0], lre.weight[0, 0] + hist[0].sum(0))
    assert torch.allclose(out[1], lre.weight[1, 0] + hist[1].sum(0))


def test_lre_receives_gradient_in_both_layouts():
    for fn in (flat_slow_gradients, per_weight_slow_gradients):
        lre = LayerEmbedding(2)
        sum(o.sum() for o in fn(Recorder(), lre, _histories())).backward()
        # every weight's output contains its layer's token once: d/de_i = ξ_i
        assert torch.equal(lre.weight.grad[:, 0], torch.tensor([4.0, 2.0]))
