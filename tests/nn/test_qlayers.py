"""QConv2d / QLinear: forward with the quantized weight, delta hook, track_quantized hook."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.nn import QConv2d, QLayer, QLinear, QuantConfig
from bnnopt.quant import make_weight_quantizer


def _conv():
    torch.manual_seed(0)
    return nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=True)


def test_from_float_copies_and_quantizes():
    conv = _conv()
    q = QConv2d.from_float(conv, QuantConfig())
    assert isinstance(q, QLayer) and isinstance(q, nn.Conv2d)
    assert torch.equal(q.weight, conv.weight) and torch.equal(q.bias, conv.bias)
    assert q.weight is not conv.weight
    assert set(q.state_dict()) == set(conv.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 3, 8, 8)
    wq = make_weight_quantizer("dorefa", 1)(conv.weight)
    assert torch.equal(q.quantized_weight(), wq)
    torch.testing.assert_close(q(x), F.conv2d(x, wq, conv.bias, stride=2, padding=1))
    assert q.bits == 1 and q.delta is None and q.track_quantized is False


def test_qlinear_forward_and_bias_none():
    torch.manual_seed(1)
    lin = nn.Linear(6, 4, bias=False)
    q = QLinear.from_float(lin, QuantConfig(weight_quantizer="bwn", estimator="clipped_ste"))
    x = torch.randn(3, 2, 6)
    wq = lin.weight.abs().mean() * torch.where(lin.weight >= 0, 1.0, -1.0)
    torch.testing.assert_close(q(x), x @ wq.T)
    assert q.bias is None


def test_activation_quantizer_applies_to_input():
    torch.manual_seed(2)
    lin = nn.Linear(5, 3)
    q = QLinear.from_float(lin, QuantConfig(weight_quantizer="sign", act_quantizer="sign",
                                            act_estimator="clipped_ste"))
    x = torch.randn(4, 5)
    xs = torch.where(x >= 0, 1.0, -1.0)
    ws = torch.where(lin.weight >= 0, 1.0, -1.0)
    torch.testing.assert_close(q(x), xs @ ws.T + lin.bias)
    q2 = QLinear.from_float(lin, QuantConfig(act_quantizer="dorefa", act_bits=2))
    assert q2.act_quantizer.bits == 2


def test_delta_hook_uses_weight_plus_delta_and_gets_gradient():
    conv = _conv()
    q = QConv2d.from_float(conv, QuantConfig(weight_quantizer="uniform", weight_bits=2))
    x = torch.randn(2, 3, 8, 8)
    delta = (0.3 * torch.randn_like(q.weight)).requires_grad_(True)
    q.delta = delta
    ref_w = make_weight_quantizer("uniform", 2)(conv.weight.detach() + delta.detach())
    y = q(x)
    torch.testing.assert_close(y, F.conv2d(x, ref_w, conv.bias, stride=2, padding=1))
    y.square().sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    # W~ = W + delta, so dL/d delta = dL/dW
    torch.testing.assert_close(delta.grad, q.weight.grad)
    q.delta = None
    assert torch.equal(q.quantized_weight(), make_weight_quantizer("uniform", 2)(conv.weight))


def test_track_quantized_gives_dL_dQ():
    torch.manual_seed(3)
    lin = QLinear.from_float(nn.Linear(6, 4), QuantConfig())
    lin.track_quantized = True
    x = torch.randn(5, 6)
    r = torch.randn(5, 4)
    (lin(x) * r).sum().backward()
    # y = x Q^T + b, L = sum(y * r)  =>  dL/dQ = r^T x
    torch.testing.assert_close(lin.last_quantized.grad, r.T @ x)
    assert torch.equal(lin.last_quantized.detach(), lin.quantized_weight().detach())
    # the tracked tensor does not block deepcopy
    clone = copy.deepcopy(lin)
    assert clone.last_quantized is None and torch.equal(clone.weight, lin.weight)


def test_untracked_layer_keeps_nothing():
    lin = QLinear(4, 2)
    lin(torch.randn(1, 4)).sum().backward()
    assert lin.last_quantized is None


def test_set_progress_reaches_all_quantizers():
    q = QLinear(4, 2, config=QuantConfig(weight_quantizer="sign", estimator="reste",
                                         act_quantizer="sign", act_estimator="ede"))
    q.set_progress(1.0)
    assert q.weight_quantizer.estimator.o == pytest.approx(3.0)
    assert q.act_quantizer.estimator.t == pytest.approx(10.0)


def test_layer_encode_matches_forward():
    q = QConv2d.from_float(_conv(), QuantConfig(weight_bits=4))
    enc = q.encode()
    assert torch.equal(q.weight_quantizer.decode(enc), q.quantized_weight().detach())
