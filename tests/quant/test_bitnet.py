"""BitNet / BitNet b1.58 weight quantizers and per-token absmax activations against
their closed forms: values, scale, zeros, encode/decode, gradients through the estimators."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnnopt.quant import ACT_QUANTIZERS, ESTIMATORS, QUANTIZERS, make_act_quantizer, make_weight_quantizer
from bnnopt.quant.bitnet import absmax_quantize


def _w(seed=0, shape=(8, 12)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 0.05 + 0.01


def test_registered():
    assert {"bitnet", "bitnet_b158"} <= set(QUANTIZERS.names())
    assert {"absmax", "absmax_ln", "absmax_rms"} <= set(ACT_QUANTIZERS.names())


def test_bitnet_closed_form_and_encode():
    w = _w()
    q = make_weight_quantizer("bitnet", bits=1, estimator="ste")
    alpha, beta = w.mean(), w.abs().mean()
    expected = beta * torch.where(w - alpha >= 0, 1.0, -1.0)
    out = q(w)
    assert torch.equal(out, expected)
    assert set(out.unique().tolist()) == {-beta.item(), beta.item()}
    # centring: the +/- split follows W - mean(W), not W (mean is 0.01 here)
    assert (out > 0).sum() == (w >= alpha).sum()
    enc = q.encode(w)
    assert enc["bits"] == 1 and torch.equal(enc["scale"], beta)
    assert torch.equal(q.decode(enc), out)


@pytest.mark.parametrize("estimator", sorted(set(ESTIMATORS.names()) - {"rbnn_sign"}))
def test_bitnet_gradient_is_scaled_estimator(estimator):
    w = _w(1).requires_grad_(True)
    q = make_weight_quantizer("bitnet", bits=1, estimator=estimator)
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    u = (w - w.mean()).detach()
    s = q.estimator.grad(u)
    torch.testing.assert_close(w.grad, w.abs().mean().detach() * s * g)


def test_bitnet_gradient_through_mean_and_scale():
    w = _w(2).requires_grad_(True)
    q = make_weight_quantizer("bitnet", estimator="ste", detach_mean=False, detach_scale=False)
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    n = w.numel()
    wd = w.detach()
    sign = torch.where(wd - wd.mean() >= 0, 1.0, -1.0)
    beta = wd.abs().mean()
    # d/dW_j of beta * sign(u_i) g_i with u = W - mean(W) (STE) and beta = mean|W|
    expected = beta * (g - g.mean()) + torch.sign(wd) * (sign * g).sum() / n
    torch.testing.assert_close(w.grad, expected)


def test_b158_closed_form_zeros_and_scale():
    w = _w(3)
    q = make_weight_quantizer("bitnet_b158", bits=2, estimator="ste")
    gamma = w.abs().mean()
    ternary = torch.clamp(torch.round(w / (gamma + 1e-5)), -1, 1)
    out = q(w)
    torch.testing.assert_close(out, gamma * ternary, rtol=0, atol=0)
    assert set(out.unique().tolist()) <= {-gamma.item(), 0.0, gamma.item()}
    # zero exactly where |W| < gamma / 2 (round to nearest), and no negative zeros
    small = w.abs() < (gamma + 1e-5) / 2
    assert small.any() and (out[small] == 0).all() and (out[~small] != 0).all()
    assert not torch.signbit(out[small]).any()
    enc = q.encode(w)
    assert enc["bits"] == 2 and set(enc["codes"].unique().tolist()) <= {0, 1, 2}
    assert torch.equal(q.decode(enc), out)


def test_b158_bits_and_estimators_validated():
    with pytest.raises(ValueError, match="invalid bits 1"):
        make_weight_quantizer("bitnet_b158", bits=1)
    with pytest.raises(ValueError, match="approx_sign"):
        make_weight_quantizer("bitnet_b158", bits=2, estimator="approx_sign")
    with pytest.raises(ValueError, match="eps"):
        make_weight_quantizer("bitnet_b158", bits=2, eps=0)


@pytest.mark.parametrize("estimator", ["ste", "clipped_ste"])
def test_b158_gradient(estimator):
    w = _w(4)
    w[0, :3] = torch.tensor([1.0, -2.0, 0.0])  # |u| > 1 for the first two
    w.requires_grad_(True)
    q = make_weight_quantizer("bitnet_b158", bits=2, estimator=estimator)
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    gamma = w.detach().abs().mean()
    u = w.detach() / (gamma + 1e-5)
    s = torch.ones_like(u) if estimator == "ste" else (u.abs() <= 1).float()
    torch.testing.assert_close(w.grad, gamma / (gamma + 1e-5) * s * g)
    if estimator == "clipped_ste":
        assert w.grad[0, 0] == 0 and w.grad[0, 1] == 0 and w.grad[0, 2] != 0


def test_absmax_per_token_closed_form():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 16, generator=g)
    out = absmax_quantize(x, bits=8)
    gamma = x.abs().amax(-1, keepdim=True)
    expected = torch.clamp(torch.round(x * 128 / gamma), -128, 127) * gamma / 128
    torch.testing.assert_close(out, expected)
    # at most 256 levels per token, each a multiple of gamma / 128
    for t in out.reshape(-1, 16):
        assert t.unique().numel() <= 256
    # one token's scale does not depend on another token
    x2 = x.clone()
    x2[0, 0] *= 100
    assert torch.equal(absmax_quantize(x2)[1], out[1])
    # straight-through gradient
    xg = x.clone().requires_grad_(True)
    absmax_quantize(xg, 4).sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x))


@pytest.mark.parametrize("name", ["absmax", "absmax_ln", "absmax_rms"])
def test_absmax_quantizers_normalise_first(name):
    x = torch.randn(4, 10) * 3 + 1
    act = make_act_quantizer(name, bits=8, estimator="ste")
    if name == "absmax_ln":
        base = F.layer_norm(x, (10,), eps=1e-5)
    elif name == "absmax_rms":
        base = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    else:
        base = x
    torch.testing.assert_close(act(x), absmax_quantize(base, 8))
    with pytest.raises(ValueError, match="invalid bits 3"):
        make_act_quantizer(name, bits=3, estimator="ste")
    with pytest.raises(ValueError, match="estimator"):
        make_act_quantizer(name, bits=8, estimator="clipped_ste")


def test_bitlinear_via_binarize():
    from torch import nn

    from bnnopt.nn import QuantConfig, QLinear, binarize_

    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    binarize_(model, QuantConfig(weight_quantizer="bitnet_b158", weight_bits=2,
                                 act_quantizer="absmax_ln", act_bits=8,
                                 keep_first=False, keep_last=False))
    layer = model[0]
    assert isinstance(layer, QLinear)
    x = torch.randn(7, 6)
    w = layer.weight.detach()
    gamma = w.abs().mean()
    wq = gamma * torch.clamp(torch.round(w / (gamma + 1e-5)), -1, 1)
    xq = absmax_quantize(F.layer_norm(x, (6,), eps=1e-5), 8)
    torch.testing.assert_close(layer(x), F.linear(xq, wq, layer.bias))
