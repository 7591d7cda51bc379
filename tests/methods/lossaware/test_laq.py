"""LAB/LAQ optimizer: one step against the papers' update computed by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bnnopt.methods.lossaware import LAQ, LossAwareQuantizer, code_table, scale_for, solve
from bnnopt.registry import METHODS
from bnnopt.methods.base import OptimConfig

from .conftest import tiny_mlp


def _prepared(bits=1, levels="linear", **policy):
    model = tiny_mlp()
    method = METHODS.get("laq")(bits=bits, levels=levels, max_iter=50)
    names = method.prepare(model, policy)
    return model, method, names


def test_default_policy_quantizes_every_layer_and_policy_can_keep_them():
    _, _, names = _prepared()
    assert names == ["0", "3"]
    _, _, names = _prepared(keep_first=True)
    assert names == ["3"]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_one_step_is_adam_then_d_weighted_quantization(bits, batch):
    model, method, _ = _prepared(bits)
    method.build(model, OptimConfig(lr=0.05))
    layer = model[0]
    w0 = layer.weight.detach().clone()
    codes0 = layer.weight_quantizer.codes.clone()
    x, y = batch
    method.train_step(model, x, y, F.cross_entropy)
    # recompute the gradient at the initial quantized point
    ref_model, ref_method, _ = _prepared(bits)
    loss = F.cross_entropy(ref_model(x), y)
    loss.backward()
    g = ref_model[0].weight.grad
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.05
    m, v = (1 - b1) * g, (1 - b2) * g * g
    d = torch.sqrt(v / (1 - b2)) + eps
    w1 = (w0 - lr * (m / (1 - b1)) / d).clamp(-1, 1)
    assert torch.allclose(layer.weight, w1, atol=1e-6)
    alpha, codes, _ = solve(w1, d, bits, init_codes=codes0, max_iter=50)
    q = layer.weight_quantizer
    assert torch.equal(q.codes, codes)
    assert torch.allclose(q.alpha, alpha)
    if bits == 1:  # LAB Eq. 7: alpha = ||D W||_1 / ||D||_1
        assert torch.allclose(q.alpha, (d * layer.weight).abs().sum() / d.sum())
    b = code_table(bits)[q.codes.long()]
    assert torch.allclose(q.alpha, scale_for(layer.weight.detach(), d, b))


def test_unquantized_parameters_follow_torch_adam(batch):
    model, method, _ = _prepared()
    method.build(model, OptimConfig(lr=0.01))
    ref = tiny_mlp()
    ref_method = METHODS.get("laq")()
    ref_method.prepare(ref, {})
    bn = [model[1].weight, model[1].bias, model[0].bias, model[3].bias]
    ref_bn = [ref[1].weight, ref[1].bias, ref[0].bias, ref[3].bias]
    adam = torch.optim.Adam(ref_bn, lr=0.01, foreach=False)
    x, y = batch
    for _ in range(3):
        method.train_step(model, x, y, F.cross_entropy)
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        adam.step()
        with torch.no_grad():  # keep the quantized layers in step with the LAQ model
            for i in (0, 3):
                ref[i].weight.copy_(model[i].weight)
                ref[i].weight_quantizer.load_state_dict(model[i].weight_quantizer.state_dict())
    for p, r in zip(bn, ref_bn):
        assert torch.allclose(p, r, atol=1e-6)


def test_clipping_and_validation():
    q = LossAwareQuantizer(bits=1)
    w = torch.nn.Parameter(torch.tensor([0.95, -0.95, 0.1]))
    opt = LAQ([(w, q)], lr=0.5, clip=1.0)
    w.grad = torch.tensor([-1.0, 1.0, 0.0])
    opt.step()
    assert w.detach().abs().max() <= 1.0 and math.isclose(w.detach()[0].item(), 1.0)
    with pytest.raises(ValueError, match="lr"):
        LAQ([(w, q)], lr=0.0)
    with pytest.raises(ValueError, match="clip"):
        LAQ([(w, q)], clip=-1)
    with pytest.raises(ValueError, match="lossaware"):
        LAQ.from_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="bits"):
        METHODS.get("lab")(bits=2)
    with pytest.raises(ValueError, match="valid options"):
        METHODS.get("laq")(alpha=3)
