"""Slow-nets: one interface (batch, L, 1) -> (batch, L, 1), factory, causality."""
from __future__ import annotations

import pytest
import torch

from bnnopt.methods.learned.slow_nets import (SLOW_NET_KINDS, LSTMSlowNet, MambaSlowNet,
                                    make_slow_net)

DT = torch.float64


def nets():
    torch.manual_seed(0)
    return [MambaSlowNet(expand=4).double(), LSTMSlowNet(hidden=5).double()]


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("L", [1, 7, 30])
def test_shapes_and_gradients(index, L):
    net = nets()[index]
    tokens = torch.randn(11, L, 1, dtype=DT)
    out = net(tokens)
    assert out.shape == (11, L, 1)
    out[:, -1].sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("index", [0, 1])
def test_causal_and_sequences_independent(index):
    net = nets()[index]
    tokens = torch.randn(4, 7, 1, dtype=DT)
    base = net(tokens).detach()
    changed = tokens.clone()
    changed[1, 4] += 1.0                                       # one token of one sequence
    out = net(changed).detach()
    mask = torch.ones_like(out, dtype=torch.bool)
    mask[1, 4:] = False
    assert torch.equal(out[mask], base[mask])
    assert (out[1, 4:] != base[1, 4:]).all()


def test_lstm_readout_is_linear_of_lstm_states():
    net = nets()[1]
    tokens = torch.randn(3, 6, 1, dtype=DT)
    states, _ = net.lstm(tokens)
    torch.testing.assert_close(net(tokens), states @ net.readout.weight.T + net.readout.bias)


def test_factory_and_defaults():
    assert SLOW_NET_KINDS == ("mamba", "lstm")
    m = make_slow_net("mamba")
    assert isinstance(m, MambaSlowNet)
    assert (m.mamba.d_model, m.mamba.d_state, m.mamba.d_conv, m.mamba.d_inner) == (1, 16, 8, 100)
    assert make_slow_net("mamba", expand=8, scan_method="loop").mamba.d_inner == 8
    lstm = make_slow_net("lstm", hidden=7)
    assert isinstance(lstm, LSTMSlowNet) and lstm.lstm.hidden_size == 7
    with pytest.raises(ValueError, match="'gru'.*mamba, lstm"):
        make_slow_net("gru")
    with pytest.raises(ValueError, match="d_model"):
        MambaSlowNet(d_model=0)
    with pytest.raises(ValueError, match="hidden"):
        LSTMSlowNet(hidden=0)
    with pytest.raises(ValueError, match="batch, length, 1"):
        lstm(torch.randn(2, 3))
