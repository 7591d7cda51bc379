"""Element-wise meta-nets: shapes, linearity without activation, orthogonal init, LSTM state."""
from __future__ import annotations

import pytest
import torch

from bnnopt.methods.learned.meta_nets import LinearStack, LSTMFCNet


def test_linear_stack_is_bias_free_linear_and_orthogonal():
    torch.manual_seed(0)
    net = LinearStack(2, hidden=100, depth=3, init="orthogonal").double()
    assert [tuple(l.weight.shape) for l in net.layers] == [(100, 2), (100, 100), (1, 100)]
    assert all(l.bias is None for l in net.layers)
    eye = torch.eye(100, dtype=torch.float64)
    w1, w2, w3 = (l.weight for l in net.layers)
    assert torch.allclose(w1.t() @ w1, torch.eye(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(w2 @ w2.t(), eye, atol=1e-6)
    assert torch.allclose(w3 @ w3.t(), torch.ones(1, 1, dtype=torch.float64), atol=1e-6)
    x, y = torch.randn(7, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    out = net(x)
    assert out.shape == (7,)
    v = (w3 @ w2 @ w1).reshape(2)  # closed form: the net is x -> x . v
    assert torch.allclose(out, x @ v)
    assert torch.allclose(net(2 * x - 3 * y), 2 * net(x) - 3 * net(y))


def test_linear_stack_nonlinear_and_bad_values():
    net = LinearStack(1, hidden=4, depth=2, nonlinear="relu")
    x = torch.randn(5, 1)
    w1, w2 = net.layers[0].weight, net.layers[1].weight
    assert torch.allclose(net(x), (torch.relu(x @ w1.t()) @ w2.t()).squeeze(-1))
    with pytest.raises(ValueError, match="'sigmoid'"):
        LinearStack(1, nonlinear="sigmoid")
    with pytest.raises(ValueError, match="depth 0"):
        LinearStack(1, depth=0)
    with pytest.raises(ValueError, match="'xavier'"):
        LinearStack(1, init="xavier")


def test_lstmfc_one_step_per_call_with_carried_state():
    torch.manual_seed(0)
    net = LSTMFCNet(hidden=6)
    x1, x2 = torch.randn(9), torch.randn(9)
    out1, state1 = net(x1)
    assert out1.shape == (9,) and state1[0].shape == (1, 9, 6) and state1[1].shape == (1, 9, 6)
    out2, _ = net(x2, state1)
    # one LSTM step with carried state == the second step of a 2-step sequence
    seq_out, _ = net.lstm(torch.stack((x1, x2)).unsqueeze(-1))
    assert torch.allclose(out2, net.fc(seq_out[1]).squeeze(-1), atol=1e-6)
    # elements are independent batch items
    part, _ = net(x1[:4])
    assert torch.allclose(part, out1[:4], atol=1e-6)
