"""BLAQ: two closure calls per step, a = 1 is LAQ, one step against Eq. 4-10 by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnnopt.methods.lossaware import BLAQ, LossAwareQuantizer, solve
from bnnopt.registry import METHODS
from bnnopt.methods.base import OptimConfig

from .conftest import tiny_mlp


def _run(name, steps, batch, **options):
    model = tiny_mlp()
    method = METHODS.get(name)(**options)
    method.prepare(model, {})
    method.build(model, OptimConfig(lr=0.02))
    x, y = batch
    outs = [method.train_step(model, x, y, F.cross_entropy) for _ in range(steps)]
    return model, method, outs


def counting_closure(batch, **options):
    """(method, closure, calls): a built blaq on tiny_mlp and a closure that counts its calls."""
    model = tiny_mlp()
    method = METHODS.get("blaq")(**options)
    method.prepare(model, {})
    method.build(model, OptimConfig(lr=0.01))
    x, y = batch
    calls = []

    def closure():
        calls.append(1)
        method.optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return method, closure, calls


def test_closure_is_called_exactly_twice_per_step(batch):
    method, closure, calls = counting_closure(batch)
    for step in range(1, 4):
        method.optimizer.step(closure)
        assert len(calls) == 2 * step
    with pytest.raises(ValueError, match="closure"):
        method.optimizer.step()


@pytest.mark.parametrize("bits,levels", [(1, "linear"), (2, "linear"), (4, "log")])
def test_a_equal_one_reduces_to_laq(bits, levels, batch):
    laq, _, laq_out = _run("laq", 4, batch, bits=bits, levels=levels, max_iter=7)
    blaq, _, blaq_out = _run("blaq", 4, batch, bits=bits, levels=levels, a=1.0, m=7)
    for (k, a), (_, b) in zip(laq.state_dict().items(), blaq.state_dict().items()):
        assert torch.equal(a, b), k
    assert [float(o.loss) for o in laq_out] == [float(o.loss) for o in blaq_out]


def test_a_below_one_differs_and_trial_keeps_batchnorm_stats(batch):
    laq, _, _ = _run("laq", 1, batch)
    blaq, _, out = _run("blaq", 1, batch, a=0.6)
    assert not torch.equal(laq[0].weight, blaq[0].weight)
    # only the real forward updated the running statistics (same as LAQ's one forward)
    assert torch.equal(laq[1].running_mean, blaq[1].running_mean)
    assert int(blaq[1].num_batches_tracked) == 1
    assert "trial_loss" in out[0].extra


def test_one_step_matches_eq_4_to_10_by_hand():
    """f(W) = 0.5 ||A W_hat - y||^2 with one 1-bit weight vector, no other parameter."""
    gen = torch.Generator().manual_seed(3)
    A, y = torch.randn(5, 4, generator=gen), torch.randn(5, generator=gen)
    w = torch.nn.Parameter(torch.randn(4, generator=gen) * 0.3)
    q = LossAwareQuantizer(bits=1)
    q.requantize(w, None)
    w0 = w.detach().clone()
    lr, a, b2, eps = 0.1, 0.6, 0.999, 1e-8
    opt = BLAQ([(w, q)], lr=lr, a=a)

    def grad_at(what):
        return A.T @ (A @ what - y)

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((A @ q(w) - y) ** 2).sum()
        loss.backward()
        return loss

    g = grad_at(q(w0).detach())
    opt.step(closure)
    v = (1 - b2) * g * g
    d = (v / (1 - b2)).sqrt() + eps
    w_trial = (w0 - lr * g / d).clamp(-1, 1)                 # m_hat = g at step 1
    alpha, codes, _ = solve(w_trial, d, 1)
    g_trial = grad_at(alpha * (2 * codes.float() - 1))
    v_trial = b2 * v + (1 - b2) * g_trial ** 2
    d_trial = (v_trial / (1 - b2 ** 2)).sqrt() + eps
    g_mix = a * g + (1 - a) * g_trial
    d_mix = a * d + (1 - a) * d_trial
    w1 = (w0 - lr * g_mix / d_mix).clamp(-1, 1)
    assert torch.allclose(w.detach(), w1, atol=1e-6)
    assert torch.allclose(q.alpha, (d_mix * w1).abs().sum() / d_mix.sum(), atol=1e-7)
    assert torch.allclose(opt.state[w]["exp_avg_sq"], v)


def test_blaq_options_are_validated():
    with pytest.raises(ValueError, match="invalid a"):
        METHODS.get("blaq")(a=1.5)
    with pytest.raises(ValueError, match="invalid m"):
        METHODS.get("blaq")(m=0)
    with pytest.raises(ValueError, match="bits"):
        METHODS.get("blaq")(bits=3)


def test_recursive_reading_calls_the_closure_once_and_a_zero_is_laq(batch):
    """reading="recursive" (Eq. 9-10 over steps): one pass; a = 0 keeps no history = LAQ."""
    method, closure, calls = counting_closure(batch, reading="recursive")
    for step in range(1, 4):
        method.optimizer.step(closure)
        assert len(calls) == step
    for bits, levels in ((1, "linear"), (2, "pow2"), (4, "log")):
        laq, _, laq_out = _run("laq", 4, batch, bits=bits, levels=levels, max_iter=7)
        rec, _, rec_out = _run("blaq", 4, batch, bits=bits, levels=levels, a=0.0, m=7,
                               reading="recursive")
        for (k, a), (_, b) in zip(laq.state_dict().items(), rec.state_dict().items()):
            assert torch.equal(a, b), (bits, k)
        assert [float(o.loss) for o in laq_out] == [float(o.loss) for o in rec_out]
        assert "trial_loss" not in rec_out[0].extra


def test_recursive_reading_mixes_the_previous_mixed_gradient():
    """Two steps on f = <c, W_hat> (constant gradient c_t per step) against Eq. 9-10."""
    w = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.5]))
    q = LossAwareQuantizer(bits=1)
    q.requantize(w, None)
    a, b2, eps = 0.6, 0.999, 1e-8
    opt = BLAQ([(w, q)], lr=0.01, a=a, reading="recursive", clip=None)
    grads = [torch.tensor([1.0, -2.0, 0.5]), torch.tensor([-3.0, 1.0, 2.0])]
    for g in grads:
        w.grad = g.clone()
        opt.step()
    state = opt.state[w]
    assert torch.allclose(state["mix_grad"], a * grads[0] + (1 - a) * grads[1])
    v1 = (1 - b2) * grads[0] ** 2
    v2 = b2 * v1 + (1 - b2) * grads[1] ** 2
    d1 = (v1 / (1 - b2)).sqrt() + eps
    d2 = (v2 / (1 - b2 ** 2)).sqrt() + eps
    assert torch.allclose(state["mix_denom"], a * d1 + (1 - a) * d2)
    with pytest.raises(ValueError, match="reading 'twice'; valid: trial, recursive"):
        BLAQ([(w, q)], reading="twice")


def test_recursive_at_a_zero_is_laq_only_when_m_covers_laqs_solver_rounds(batch):
    """reading="recursive", a = 0: the same step as LAQ, except that the solver runs m
    rounds where LAQ runs max_iter; equal when m >= the rounds LAQ used, else apart."""
    laq_model, laq, _ = _run("laq", 1, batch, bits=4, levels="linear", max_iter=10)
    x, y = batch
    rounds = [laq_model[i].weight_quantizer.last_iterations for i in (0, 3)]
    for _ in range(5):
        laq.train_step(laq_model, x, y, F.cross_entropy)
        rounds += [laq_model[i].weight_quantizer.last_iterations for i in (0, 3)]
    assert max(rounds) > 1
    for m, equal in ((max(rounds), True), (1, False)):
        rec_model, rec, _ = _run("blaq", 6, batch, bits=4, levels="linear", a=0.0, m=m,
                                 reading="recursive")
        same = all(torch.equal(a, b) for a, b in zip(laq_model.state_dict().values(),
                                                      rec_model.state_dict().values()))
        assert same == equal, m
