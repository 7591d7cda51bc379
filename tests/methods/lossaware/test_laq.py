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


def test_scale_rules_against_hand_computed_alphas():
    """4-bit linear levels k/7: the official alpha sum|b d w| / sum|b| d vs the minimiser."""
    from bnnopt.methods.lossaware import level_values, scale_official, weighted_error

    w = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    d = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
    b = torch.tensor([1.0, -2 / 7, 1 / 7], dtype=torch.float64)
    official = (0.5 * 1 + 3 * (2 / 7) * 0.2 + 2 * (1 / 7) * 0.1) / (1 + 3 * (2 / 7) + 2 * (1 / 7))
    exact = (0.5 * 1 + 3 * (2 / 7) * 0.2 + 2 * (1 / 7) * 0.1) / (1 + 3 * 4 / 49 + 2 / 49)
    assert math.isclose(float(scale_official(w, d, b)), official, rel_tol=1e-12)
    assert math.isclose(float(scale_for(w, d, b)), exact, rel_tol=1e-12)
    # |b| in {0, 1} (ternary): the two rules coincide
    t = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(scale_official(w, d, t), scale_for(w, d, t))
    # each solver's fixed point satisfies its own alpha-step; the exact one errs less
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(300, generator=gen, dtype=torch.float64) * 0.3
    d = torch.rand(300, generator=gen, dtype=torch.float64) + 0.05
    table = level_values(4).double()
    errors = {}
    for rule, step in (("exact", scale_for), ("official", scale_official)):
        alpha, codes, _ = solve(w, d, 4, max_iter=100, scale_rule=rule)
        levels = code_table(4).double()[codes.long()]
        assert torch.allclose(alpha, step(w, d, levels))
        errors[rule] = float(weighted_error(w, d, alpha * levels))
    assert errors["exact"] < errors["official"]
    assert table.numel() == 15
    with pytest.raises(ValueError, match="invalid scale_rule 'l2'; valid: exact, official"):
        solve(w, d, 4, scale_rule="l2")


def test_laq_official_scale_rule_in_the_optimizer(batch):
    from bnnopt.methods.lossaware import scale_official

    x, y = batch
    model = tiny_mlp()
    opt = LAQ(model, lr=0.05, bits=4, scale_rule="official", max_iter=50)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    q = model[0].weight_quantizer
    d = opt._denom(opt.state[model[0].weight]["exp_avg_sq"], 1, 0.999, 1e-8)
    b = code_table(4)[q.codes.long()]
    assert torch.allclose(q.alpha, scale_official(model[0].weight.detach(), d, b))
    assert not torch.allclose(q.alpha, scale_for(model[0].weight.detach(), d, b))
    with pytest.raises(ValueError, match="scale_rule"):
        METHODS.get("laq")(scale_rule="paper")
