"""The shared learned-gradient step: STE first step, generated gradient hand-off, options."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from bnnopt.methods.learned.base import calibration
from bnnopt.nn import QuantConfig, binarize_
from bnnopt.registry import METHODS
from bnnopt.methods.base import OptimConfig

from .conftest import ALL_LAYERS, batches, dorefa_c, dorefa_pre, make, step, tiny_mlp, weights


@pytest.mark.parametrize("name", ["fcgrad", "multifc", "lstmfc"])
def test_first_step_is_plain_ste(name):
    model, method = make(name)
    torch.manual_seed(0)
    ref = tiny_mlp().double()
    binarize_(ref, QuantConfig(**ALL_LAYERS))
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    x, y = batches(1)[0]
    out = step(model, method, (x, y))
    F.cross_entropy(ref(x), y).backward()
    opt.step()
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k
    assert out.extra["meta_step"] == 0.0


def test_calibration_matches_closed_form_and_autograd():
    model, method = make("fcgrad")
    for _, layer in method.layers:
        w = layer.weight
        assert torch.allclose(calibration(layer.weight_quantizer, w), dorefa_c(w.detach()))

    class NoClosedForm(torch.nn.Module):  # autograd path (normaliser detached)
        def pre(self, w):
            t = torch.tanh(w)
            return t / t.detach().abs().max()

    w = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(calibration(NoClosedForm(), w), dorefa_c(w))


def _hand_metaquant(name, net, g, w_hat, state=None):
    """M by hand: fcgrad FC(g); multifc g*MultiFC(u); lstmfc g*fc(LSTM(u)); u = (Ŵ+1)/2."""
    u = 0.5 * w_hat.reshape(-1, 1) + 0.5
    if name == "fcgrad":
        h = g.reshape(-1, 1)
        for layer in net.layers:
            h = h @ layer.weight.t()
        return h.reshape(g.shape), None
    if name == "multifc":
        h = u
        for layer in net.layers:
            h = h @ layer.weight.t()
        return g * h.reshape(g.shape), None
    _, (hn, cn) = net.lstm(u.reshape(1, -1, 1), state)
    return g * net.fc(hn[0]).reshape(g.shape), (hn, cn)


@pytest.mark.parametrize("name", ["fcgrad", "multifc", "lstmfc"])
def test_sgd_step_equals_hand_computed_metaquant_update(name):
    model, method = make(name, lr=0.05)
    data = batches(3)
    step(model, method, data[0])  # STE step stores g_1, Ŵ_1
    states = [None] * len(method.layers)
    for t in (1, 2):
        g, w_hat = method._g, method._w_hat
        net = copy.deepcopy(method.meta_modules["meta"])
        before = weights(method)
        meta_before = [p.detach().clone() for p in net.parameters()]
        out = step(model, method, data[t])
        assert out.extra["meta_step"] == 1.0
        for i, (_, layer) in enumerate(method.layers):
            m, states[i] = _hand_metaquant(name, net, g[i], w_hat[i], states[i])
            grad = dorefa_c(before[i]) * m
            assert torch.allclose(layer.weight.grad, grad, atol=1e-12)  # G handed over
            assert torch.allclose(layer.weight.detach(), before[i] - 0.05 * grad, atol=1e-12)
        # meta-net trained by the task loss: non-zero gradients, parameters changed
        # (at t = 1 LSTMFC's recurrent weights see h_0 = 0, so check from t = 2)
        params = list(method.meta_modules["meta"].parameters())
        if t == 2:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
            assert all(not torch.equal(p.detach(), q) for p, q in zip(params, meta_before))
    if name == "lstmfc":  # hidden state per layer (checkpoint format), detached
        hidden = method.extra_state()["hidden"]
        assert all(not h.requires_grad and h.shape == (1, w.numel(), 100)
                   for (h, _), w in zip(hidden, weights(method)))


def test_lookahead_weight_paper_and_official():
    """Ŵ recorded at step t is A(W̃): paper W̃ = W - η·G; official W̃ = W - (previous step).

    (first_step "ste" so that there is a previous applied step; the official first
    iteration, with no update, is in test_official_transcription.py.)
    """
    for variant in ("paper", "official"):
        model, method = make("multifc", variant=variant, lr=0.05, first_step="ste")
        data = batches(3)
        w0 = weights(method)
        step(model, method, data[0])
        w1 = weights(method)
        prev = [a - b for a, b in zip(w0, w1)]
        step(model, method, data[1])
        w2 = weights(method)
        for i, (_, layer) in enumerate(method.layers):
            grad = layer.weight.grad
            lookahead = w1[i] - 0.05 * grad if variant == "paper" else w1[i] - prev[i]
            t = torch.tanh(lookahead)
            assert torch.allclose(method._w_hat[i], t / t.abs().max(), atol=1e-12), variant
            assert torch.allclose(w2[i], w1[i] - 0.05 * grad, atol=1e-12)


@pytest.mark.parametrize("optim", ["sgdm", "adam"])
def test_generated_gradient_goes_through_the_base_optimizer(optim):
    model, method = make("fcgrad", optim=optim, lr=0.01)
    data = batches(2)
    step(model, method, data[0])
    ref = copy.deepcopy(method.optimizer.state_dict())
    before = weights(method)
    step(model, method, data[1])
    # replay the base optimizer on copies with the handed-over gradient
    params = [torch.nn.Parameter(w.clone()) for w in before]
    opt = type(method.optimizer)(params, **{k: v for k, v in method.optimizer.defaults.items()})
    state = copy.deepcopy(ref)
    state["param_groups"][0]["params"] = list(range(len(params)))
    state["state"] = {j: state["state"][k] for j, k in enumerate(_layer_param_ids(model, method))}
    opt.load_state_dict(state)
    for p, (_, layer) in zip(params, method.layers):
        p.grad = layer.weight.grad.clone()
    opt.step()
    for p, (_, layer) in zip(params, method.layers):
        assert torch.allclose(p.detach(), layer.weight.detach(), atol=1e-12)


def _layer_param_ids(model, method):
    ids = {id(p): k for k, p in enumerate(model.parameters())}
    return [ids[id(layer.weight)] for _, layer in method.layers]


def test_bad_options_and_models():
    with pytest.raises(ValueError, match="unknown option 'foo'.*valid options"):
        METHODS.get("fcgrad")(foo=1)
    with pytest.raises(ValueError, match="variant 'bad'; valid: paper, official"):
        METHODS.get("lstmfc")(variant="bad")
    with pytest.raises(ValueError, match="impl 'fused'; valid: chunked, saved, torch"):
        METHODS.get("lstmfc")(impl="fused")
    with pytest.raises(ValueError, match="hidden 0"):
        METHODS.get("multifc")(hidden=0)
    with pytest.raises(ValueError, match="meta_lr -1"):
        METHODS.get("fcgrad")(meta_lr=-1)
    with pytest.raises(ValueError, match="unknown policy key 'keep_middle'"):
        METHODS.get("fcgrad")().prepare(tiny_mlp(), {"keep_middle": True})
    with pytest.raises(ValueError, match="needs at least one quantized layer"):
        from bnnopt.methods.base import OptimConfig
        METHODS.get("fcgrad")().build(tiny_mlp(), OptimConfig())


@pytest.mark.parametrize("name", ["fcgrad", "lstmfc"])
def test_state_dict_round_trip_gives_identical_next_steps(name):
    data = batches(5)
    model, method = make(name)
    for b in data[:3]:
        step(model, method, b)
    saved_model = copy.deepcopy(model.state_dict())
    saved_method = method.state_dict()
    for b in data[3:]:
        step(model, method, b)
    other_model, other = make(name, seed=7, meta_seed=123)
    other_model.load_state_dict(saved_model)
    other.load_state_dict(saved_method)
    for b in data[3:]:
        step(other_model, other, b)
    for (k, a), b in zip(model.state_dict().items(), other_model.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(method.meta_modules.parameters(), other.meta_modules.parameters()):
        assert torch.equal(a, b)


def test_works_on_tiny_cnn_with_fp_first_and_last():
    model, method = make("lstmfc", cnn=True, policy={"keep_first": False, "keep_last": True})
    assert [n for n, _ in method.layers] == ["0", "3"]
    before = weights(method)
    losses = [step(model, method, b).loss for b in batches(3, cnn=True)]
    assert all(torch.isfinite(l) for l in losses)
    assert all(not torch.equal(a, b) for a, b in zip(before, weights(method)))


@pytest.mark.parametrize("name", ["fcgrad", "fsg"])
@pytest.mark.parametrize("optim, wd", [("adam", 0.0), ("adam", 1e-2), ("sgdm", 0.0),
                                       ("sgdm", 1e-2), ("sgd", 1e-2)])
def test_optimizer_lookahead_is_the_weight_the_optimizer_produces(name, optim, wd):
    """lookahead="optimizer": the forward of step t runs at W_{t+1} (Δ = -η·G variants)."""
    torch.manual_seed(0)
    model = tiny_mlp().double()
    method = METHODS.get(name)(lookahead="optimizer")
    method.prepare(model, dict(ALL_LAYERS))
    method.build(model, OptimConfig(name=optim, lr=0.01, weight_decay=wd))
    plain_model, plain = make(name, optim=optim, lr=0.01)
    for t, batch in enumerate(batches(4)):
        step(model, method, batch)
        if t == 0:
            continue
        for w_hat, w_next in zip(method._w_hat, weights(method)):  # Ŵ_t = A(W̃_t)
            assert torch.allclose(w_hat, dorefa_pre(w_next), atol=1e-10), (t, optim)
    step(plain_model, plain, batches(1)[0])
    step(plain_model, plain, batches(2)[1])
    if optim != "sgd":  # the plain look-ahead is not the applied update
        assert not all(torch.allclose(a, dorefa_pre(b), atol=1e-10)
                       for a, b in zip(plain._w_hat, weights(plain)))


def test_optimizer_lookahead_is_plain_under_sgd_without_decay():
    runs = [make("fsg", lookahead=mode) for mode in ("plain", "optimizer")]
    for batch in batches(3):
        for model, method in runs:
            step(model, method, batch)
    for a, b in zip(weights(runs[0][1]), weights(runs[1][1])):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="lookahead 'adam'; valid: plain, optimizer"):
        METHODS.get("fsg")(lookahead="adam")
