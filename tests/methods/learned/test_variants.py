"""grad_norm="ste" and FSG slow_scale="lr-schedule" do what their names say."""
from __future__ import annotations

import copy

import pytest
import torch

from bnnopt.methods.learned.variants import ste_normalized
from bnnopt.registry import METHODS

from .conftest import batches, dorefa_c, dorefa_pre, make, step, weights

SMALL = {"expand": 2, "d_state": 4, "d_conv": 2, "hidden": 8, "history": 3}


def _twins(name, options_a, options_b, n_warm=3, **make_kw):
    """Two copies of one warmed-up (model, method), then the options of each set."""
    model, method = make(name, **make_kw, **(SMALL if name == "fsg" else {}),
                         **({"meta_init": "paper"} if name == "fsg" else {}))
    for b in batches(n_warm):
        step(model, method, b)
    a = copy.deepcopy((model, method))
    b = copy.deepcopy((model, method))
    a[1].options.update(options_a)
    b[1].options.update(options_b)
    return a, b


@pytest.mark.parametrize("name", ["fcgrad", "fsg"])
def test_grad_norm_ste_keeps_direction_and_takes_ste_norm(name):
    lr = 0.05
    (ma, raw), (mb, normed) = _twins(name, {"grad_norm": "learned"}, {"grad_norm": "ste"}, lr=lr)
    g_prev = [g.clone() for g in normed._g]
    before = weights(normed)
    batch = batches(5, seed=9)[0]
    step(ma, raw, batch)
    step(mb, normed, batch)
    for i, ((_, la), (_, lb)) in enumerate(zip(raw.layers, normed.layers)):
        ste = dorefa_c(before[i]) * g_prev[i]
        ga, gb = la.weight.grad.reshape(-1), lb.weight.grad.reshape(-1)
        assert torch.allclose(gb.norm(), ste.norm(), rtol=1e-10)  # STE's size ...
        assert torch.nn.functional.cosine_similarity(ga, gb, dim=0) > 1 - 1e-10  # ... raw direction
        # SGD: the step is -lr*G, and the look-ahead the same STE-sized step (paper: G = -Δ/η)
        assert torch.allclose(lb.weight.detach(), before[i] - lr * lb.weight.grad, atol=1e-12)
        assert torch.allclose(normed._w_hat[i], dorefa_pre(before[i] - lr * lb.weight.grad),
                              atol=1e-12)
    assert not all(torch.allclose(la.weight.grad, lb.weight.grad)
                   for (_, la), (_, lb) in zip(raw.layers, normed.layers))


def test_grad_norm_ste_meta_nets_still_learn():
    model, method = make("fcgrad", grad_norm="ste")
    before = copy.deepcopy(method.meta_modules.state_dict())
    for b in batches(4):
        step(model, method, b)
    after = method.meta_modules.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", ["fcgrad", "fsg"])
def test_grad_norm_ste_detached_takes_the_same_step_as_ste(name):
    (ma, ste), (mb, detached) = _twins(name, {"grad_norm": "ste"},
                                       {"grad_norm": "ste-detached"}, lr=0.05)
    batch = batches(5, seed=9)[0]
    step(ma, ste, batch)
    step(mb, detached, batch)
    for (_, la), (_, lb) in zip(ste.layers, detached.layers):
        assert torch.allclose(la.weight.grad, lb.weight.grad, atol=1e-12)
        assert torch.allclose(la.weight, lb.weight, atol=1e-12)
    # ... but the meta-nets get other gradients (the scale's derivative is kept)
    assert not all(torch.allclose(pa.grad, pb.grad)
                   for pa, pb in zip(ste.meta_modules.parameters(),
                                     detached.meta_modules.parameters())
                   if pa.grad is not None)


def test_ste_norm_hides_the_sign_of_a_common_scale_and_detached_keeps_it():
    """Δ = k·v: with the differentiable rescaling the look-ahead loss is flat in k (its
    sign included: no meta-gradient can undo a flip), with the detached factor it is
    dL/dΔ · v · η‖e‖/‖Δ‖."""
    torch.manual_seed(0)
    v, e, target = torch.randn(3, 5, dtype=torch.float64)
    lr = 0.1
    for detach, flat in ((False, True), (True, False)):
        k = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        (delta,), (grad,) = ste_normalized([k * v], [(k * v).detach()], [e], lr,
                                           detach_scale=detach)
        assert torch.allclose(delta.norm(), lr * e.norm())
        assert torch.allclose(grad.norm(), e.norm())
        loss = ((delta - target) ** 2).sum()
        (dk,) = torch.autograd.grad(loss, k)
        if flat:
            assert abs(float(dk)) < 1e-12
        else:
            scale = lr * e.norm() / (2.0 * v.norm())
            expected = (2 * (delta.detach() - target) * v * scale).sum()
            assert torch.allclose(dk, expected) and abs(float(dk)) > 1e-3


def test_slow_scale_lr_schedule_is_beta_times_lr_ratio():
    """G = c*F - (β/η_0)·S under "lr-schedule" vs c*F - (β/η_t)·S (Eq. 9); β = 0 gives c*F."""
    lr0, lr_t = 0.05, 0.0125
    (m1, const), (m2, sched) = _twins("fsg", {"slow_scale": "constant"},
                                      {"slow_scale": "lr-schedule"}, lr=lr0)
    m0, zero = copy.deepcopy((m1, const))
    zero.options["beta"] = 0.0
    batch = batches(5, seed=4)[0]
    grads = []
    for model, method in ((m0, zero), (m1, const), (m2, sched)):
        method.set_lr(lr_t)
        step(model, method, batch)
        grads.append(torch.cat([l.weight.grad.reshape(-1) for _, l in method.layers]))
    cf, g_const, g_sched = grads
    slow_const, slow_sched = g_const - cf, g_sched - cf  # -(β/η_t)·S and -(β/η_0)·S
    assert slow_const.abs().max() > 0
    assert torch.allclose(slow_sched, slow_const * (lr_t / lr0), atol=1e-12)


def test_slow_scale_equals_eq9_at_the_base_lr():
    (m1, const), (m2, sched) = _twins("fsg", {"slow_scale": "constant"},
                                      {"slow_scale": "lr-schedule"}, lr=0.05)
    batch = batches(1, seed=5)[0]
    step(m1, const, batch)
    step(m2, sched, batch)
    for (_, a), (_, b) in zip(const.layers, sched.layers):
        assert torch.equal(a.weight, b.weight)


def test_bad_variant_options():
    with pytest.raises(ValueError, match="grad_norm 'unit'; valid: learned, ste, ste-detached"):
        METHODS.get("lstmfc")(grad_norm="unit")
    with pytest.raises(ValueError, match="slow_scale 'linear'; valid: constant, lr-schedule"):
        METHODS.get("fsg")(slow_scale="linear")
    with pytest.raises(ValueError, match="applies to variant 'paper'"):
        METHODS.get("fsg")(variant="official", slow_scale="lr-schedule")
