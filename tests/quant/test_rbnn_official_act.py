"""RBNN's official activation path (act_path="official") against a transcription of the
public code's binarized conv layer (lmbxmu/RBNN, cifar/modules/binarized_modules.py),
written here from its behaviour: float64, forward and backward."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

from bnnopt.nn import quantized_layers, set_progress
from bnnopt.quant import RBNNActivation, make_act_quantizer
from bnnopt.quant.rbnn import rbnn_schedule
from bnnopt.registry import METHODS


class _SignK(Function):
    """Public code, weights: sign forward; grad = clamp(k (2 sqrt(t^2/2) - |t^2 x|), 0) * g."""

    @staticmethod
    def forward(ctx, x, k, t):
        ctx.save_for_backward(x, k, t)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, g):
        x, k, t = ctx.saved_tensors
        return (k * (2 * torch.sqrt(t ** 2 / 2) - torch.abs(t ** 2 * x))).clamp(min=0) * g, None, None


class _SignAct(Function):
    """Public code, activations: the same with k replaced by 1 and t by max(t, 1)."""

    @staticmethod
    def forward(ctx, x, k, t):
        ctx.save_for_backward(x, k, t)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, g):
        x, _, t = ctx.saved_tensors
        one = torch.ones((), dtype=x.dtype)
        k, t = one, torch.maximum(t, one)
        return (k * (2 * torch.sqrt(t ** 2 / 2) - torch.abs(t ** 2 * x))).clamp(min=0) * g, None, None


def _standardize(v):  # per output channel / per sample, over dims 1..3, unbiased std
    v1 = v - v.mean([1, 2, 3], keepdim=True)
    return v1 / v1.std([1, 2, 3], keepdim=True)


def official_layer(x, w, r1, r2, theta, alpha, k, t, a32=False, padding=1):
    """The public layer's forward with fixed R1, R2 (no rotation update in this call)."""
    w2 = _standardize(w)
    a2 = _standardize(x)
    a, b = r1.shape[0], r2.shape[0]
    mat = w2.view(w.shape[0], a, b)
    rotated = (r1.t() @ mat @ r2).view_as(w)
    w3 = w2 + torch.abs(torch.sin(theta)) * (rotated.detach() - w2)
    bw = _SignK.apply(w3, k, t)
    ba = a2 if a32 else _SignAct.apply(a2, k, t)
    return F.conv2d(ba, bw, None, 1, padding) * alpha, ba


def _pair(act_quantizer, p, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False)).double()
    method = METHODS.get("rbnn")(act_path="official")
    policy = {"keep_first": False, "keep_last": False}
    if act_quantizer:
        policy["act_quantizer"] = act_quantizer
    method.prepare(model, policy)
    layer = quantized_layers(model)[0][1]
    q = layer.weight_quantizer
    with torch.no_grad():
        q.theta.uniform_(0.2, 1.4)  # away from π/2, so that θ's gradient is not ~0
        q.alpha.mul_(torch.linspace(0.5, 1.5, 6, dtype=torch.float64).view(6, 1, 1, 1))
    set_progress(model, p)
    return layer


@pytest.mark.parametrize("p", [0.0, 0.4, 0.9])
def test_official_activation_path_matches_the_public_layer(p):
    layer = _pair("sign", p)
    assert isinstance(layer.act_quantizer, RBNNActivation) and layer.act_quantizer.bits == 1
    q = layer.weight_quantizer
    t, k = rbnn_schedule(p)
    kt = (torch.tensor(k, dtype=torch.float64), torch.tensor(t, dtype=torch.float64))
    torch.manual_seed(1)
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 0.7).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = layer.weight.detach().clone().requires_grad_(True)
    theta = q.theta.detach().view(6, 1, 1, 1).clone().requires_grad_(True)
    alpha = q.alpha.detach().view(6, 1, 1).clone().requires_grad_(True)
    out_ref, ba_ref = official_layer(x_ref, w_ref, q.R1, q.R2, theta, alpha, *kt)

    # the activation path alone: forward and backward agree bit for bit
    ba = layer.act_quantizer(x)
    assert torch.equal(ba, ba_ref)
    g = torch.randn_like(ba)
    (gx,) = torch.autograd.grad((ba * g).sum(), x)
    (gx_ref,) = torch.autograd.grad((ba_ref * g).sum(), x_ref, retain_graph=True)
    assert torch.equal(gx, gx_ref) and gx.abs().sum() > 0
    # t_a = max(t, 1), k = 1: the surrogate at 0 is 2 sqrt(t_a^2/2) = √2 t_a
    t_a = max(t, 1.0)
    assert layer.act_quantizer.estimator.grad(torch.zeros(1, dtype=torch.float64)).item() == \
        pytest.approx(math.sqrt(2) * t_a, rel=1e-15)

    # the whole layer: α scales the weight here and the output there (equal up to rounding)
    out = layer(x)
    gy = torch.randn_like(out)
    grads = torch.autograd.grad((out * gy).sum(), [x, layer.weight, q.theta, q.alpha])
    grads_ref = torch.autograd.grad((out_ref * gy).sum(), [x_ref, w_ref, theta, alpha])
    assert torch.allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b.view_as(a), rtol=1e-10, atol=1e-12)


def test_default_path_disagrees_and_w1a32_standardises_only():
    layer = _pair("sign", 0.5)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 0.7
    official = layer.act_quantizer(x)
    plain = make_act_quantizer("sign")(x)  # the policy path: sign of the raw input
    agree = (plain == official).double().mean().item()
    assert agree < 0.9  # per-sample centring flips the signs of many inputs
    float_layer = _pair(None, 0.5)
    assert float_layer.act_quantizer.bits == 32
    a2 = float_layer.act_quantizer(x)
    assert torch.allclose(a2.mean((1, 2, 3)), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(a2.std((1, 2, 3)), torch.ones(4, dtype=torch.float64))
    x_ref = x.clone()
    _, a2_ref = official_layer(x_ref, float_layer.weight.detach(), float_layer.weight_quantizer.R1,
                               float_layer.weight_quantizer.R2,
                               float_layer.weight_quantizer.theta.detach(),
                               float_layer.weight_quantizer.alpha.detach().view(6, 1, 1),
                               torch.tensor(1.0), torch.tensor(1.0), a32=True)
    assert torch.equal(a2, a2_ref)


@pytest.mark.parametrize("options, policy, match", [
    ({"act_path": "paper"}, {}, "invalid act_path 'paper'; valid: policy, official"),
    ({"act_path": "official"}, {"act_quantizer": "dorefa", "act_bits": 2},
     "invalid act_quantizer 'dorefa' for rbnn act_path 'official'"),
    ({"act_path": "official"}, {"act_quantizer": "sign", "act_estimator": "ede"},
     "invalid act_estimator 'ede'"),
])
def test_bad_act_path_options(options, policy, match):
    with pytest.raises(ValueError, match=match):
        METHODS.get("rbnn")(**options).prepare(nn.Sequential(nn.Conv2d(2, 2, 3)), policy)
    with pytest.raises(ValueError, match="invalid activation shape"):
        RBNNActivation()(torch.ones(3))
