"""Bop (Helwegen et al. 2019): the flip rule by hand, state round trip, learning a sign
vector, and the ``bop`` method through the Trainer on a tiny GPT and a tiny CNN."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import bnnopt
from bnnopt.methods.bop import Bop, BopConfig, split_params
from bnnopt.nn import QuantConfig, binarize_
from bnnopt.train import RunConfig, Trainer

SIGN = QuantConfig(weight_quantizer="sign", weight_bits=1, estimator="ste", keep_first=False,
                   keep_last=False)


def step_with(opt: Bop, p: torch.Tensor, grad: list[float]) -> None:
    p.grad = torch.tensor(grad)
    opt.step()


def test_flip_rule_by_hand():
    # gamma = 1/2, tau = 1/8 (powers of two: every number below is exact)
    w = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    opt = Bop([w], gamma=0.5, tau=0.125)
    step_with(opt, w, [0.125, 0.5, 0.5, -0.5, -0.5])
    # m = g / 2 = [1/16, 1/4, 1/4, -1/4, -1/4]
    torch.testing.assert_close(opt.state[w]["m"], torch.tensor([0.0625, 0.25, 0.25, -0.25, -0.25]),
                               rtol=0, atol=0)
    # 0: |m| below tau (signs agree)            -> kept
    # 1: |m| > tau, sign(m) = +1 != sign(w) = -1 -> kept
    # 2: |m| > tau, both +1                      -> flipped
    # 3: |m| > tau, both -1                      -> flipped
    # 4: |m| > tau, sign(m) = -1 != sign(w) = +1 -> kept
    assert w.tolist() == [1.0, -1.0, -1.0, 1.0, 1.0]
    assert opt.last_flips == 2
    # second step, g = [1/4, ...]: m = m / 2 + g / 2
    step_with(opt, w, [0.25, -0.25, 0.0, 0.0, 0.0])
    torch.testing.assert_close(opt.state[w]["m"],
                               torch.tensor([0.15625, 0.0, 0.125, -0.125, -0.125]), rtol=0, atol=0)
    # 0: m = 5/32 > tau, agrees with +1 -> flipped; 2-4: signs disagree -> kept
    assert w.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0]


def test_threshold_is_strict():
    w = torch.tensor([1.0, 1.0])
    opt = Bop([w], gamma=0.5, tau=0.125)
    step_with(opt, w, [0.25, 0.25 + 2.0 ** -10])      # m = [tau, tau + 2^-11]
    assert w.tolist() == [1.0, -1.0]


def test_weights_set_to_sign_and_base_stepped_after_flips():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, -0.2, 0.0], [-1.5, 2.0, 0.1]]))
    model = nn.Sequential(lin)
    binarize_(model, SIGN)
    binary, real = split_params(model)
    assert len(binary) == 1 and len(real) == 1 and real[0] is model[0].bias
    base = torch.optim.SGD(real, lr=0.5)
    opt = Bop(model, base=base, gamma=1.0, tau=0.0)
    assert model[0].weight.tolist() == [[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]]
    bias0 = model[0].bias.detach().clone()
    out = model(torch.ones(1, 3)).sum()
    out.backward()
    # dL/dw = x = 1 everywhere, gamma = 1: m = 1 > 0, flips exactly the +1 weights
    opt.step()
    assert model[0].weight.tolist() == [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]
    torch.testing.assert_close(model[0].bias, bias0 - 0.5)   # SGD: b - lr * 1
    opt.zero_grad()
    assert model[0].weight.grad is None and model[0].bias.grad is None


def test_bad_input_is_one_line_value_error():
    w = torch.ones(3)
    for kwargs, match in [({"gamma": 0.0}, "gamma"), ({"gamma": 1.5}, "gamma"),
                          ({"gamma": True}, "gamma"), ({"tau": -1e-3}, "tau")]:
        with pytest.raises(ValueError, match=match) as err:
            Bop([w], **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no quantized layer"):
        Bop(nn.Linear(2, 2))
    model = nn.Sequential(nn.Linear(2, 2))
    binarize_(model, QuantConfig(weight_quantizer="bwn", estimator="ste", keep_first=False,
                                 keep_last=False))
    with pytest.raises(ValueError, match="'sign'.*'0'.*'bwn'"):
        Bop(model)
    model = nn.Sequential(nn.Linear(2, 2))
    binarize_(model, SIGN)
    with pytest.raises(ValueError, match="binary parameter"):
        Bop(model, base=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="gamma"):
        BopConfig(gamma=2.0)
    with pytest.raises(ValueError, match="unknown option 'lr'"):
        BopConfig.from_options({"lr": 1.0})


def make_task(seed: int = 0, n: int = 256, d: int = 24):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.where(torch.rand(1, d, generator=g) < 0.5, -1.0, 1.0)
    x = torch.randn(n, d, generator=g)
    y = x @ teacher.T + 0.5
    model = nn.Sequential(nn.Linear(d, 1))
    binarize_(model, SIGN)
    return model, x, y, teacher


def train(model, opt, x, y, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_state_dict_round_trip_is_exact():
    torch.manual_seed(0)
    model, x, y, _ = make_task()
    _, real = split_params(model)
    opt = Bop(model, base=torch.optim.Adam(real, lr=0.05), gamma=0.05, tau=0.5)
    train(model, opt, x, y, 3)
    state = copy.deepcopy(opt.state_dict())
    assert set(state) == {"state", "param_groups", "base"}
    assert state["param_groups"][0]["gamma"] == 0.05 and state["param_groups"][0]["tau"] == 0.5

    twin = copy.deepcopy(model)
    _, twin_real = split_params(twin)
    twin_opt = Bop(twin, base=torch.optim.Adam(twin_real, lr=0.05), gamma=0.9, tau=9.0)
    twin_opt.load_state_dict(state)
    assert twin_opt.param_groups[0]["gamma"] == 0.05
    w, tw = model[0].weight, twin[0].weight
    assert torch.equal(opt.state[w]["m"], twin_opt.state[tw]["m"])
    a, b = train(model, opt, x, y, 4), train(twin, twin_opt, x, y, 4)
    assert a == b
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(opt.state[w]["m"], twin_opt.state[tw]["m"])
    with pytest.raises(ValueError, match="base"):
        Bop([torch.ones(2)]).load_state_dict(state)


def test_bop_learns_a_sign_vector():
    model, x, y, teacher = make_task(seed=1)
    _, real = split_params(model)
    opt = bnnopt.Bop(model, base=torch.optim.Adam(real, lr=0.05), gamma=0.2, tau=0.5)
    wrong_before = int((model[0].weight != teacher).sum())
    losses = train(model, opt, x, y, 30)
    assert wrong_before >= 6
    assert losses[-1] < 0.05 * losses[0]
    assert torch.equal(model[0].weight.detach(), teacher)
    assert set(model[0].weight.detach().unique().tolist()) <= {-1.0, 1.0}


def lm_config(**changes) -> RunConfig:
    cfg = RunConfig(model="gpt_tiny", dataset="shakespeare_embedded", method="bop", epochs=1,
                    batch_size=4, model_options={"block_size": 16, "d_model": 32},
                    policy={"keep_first": False, "keep_last": True}, schedule="constant",
                    optim={"name": "adam", "lr": 2e-3}, method_options={"gamma": 1e-2, "tau": 1e-6},
                    augment=False, device="cpu", train_limit=8, test_limit=4)
    return cfg.update(changes)


def cnn_config(**changes) -> RunConfig:
    cfg = RunConfig(model="resnet20", dataset="digits", method="bop", epochs=1, batch_size=32,
                    optim={"name": "adam", "lr": 1e-3}, method_options={"gamma": 1e-2, "tau": 1e-6},
                    augment=False, device="cpu", train_limit=64, test_limit=32)
    return cfg.update(changes)


@pytest.mark.parametrize("make", [lm_config, cnn_config], ids=["gpt_tiny", "resnet20"])
def test_bop_method_two_steps_through_the_trainer(tmp_path, make):
    trainer = Trainer(make(), tmp_path / "run")
    assert len(trainer.train_loader) == 2
    assert trainer.method.resolved_options() == {"gamma": 1e-2, "tau": 1e-6, "scale": "none"}
    binary, _ = split_params(trainer.model)
    before = [p.detach().clone() for p in binary]
    summary = trainer.run()
    assert math.isfinite(summary["final_train_loss"])
    row = trainer.metrics[-1]
    assert set(row["flip_rate"]) == set(trainer.quantized_layers)
    flipped = sum(int((p != q).sum()) for p, q in zip(binary, before))
    total = sum(p.numel() for p in binary)
    assert 0 < flipped
    # the recorded rates are the fractions of changed signs, layer by layer
    assert sum(rate * p.numel() for rate, p in zip(row["flip_rate"].values(), binary)) \
        == pytest.approx(flipped)
    assert flipped < total
    for p in binary:
        assert set(p.detach().unique().tolist()) <= {-1.0, 1.0}
    # the run resumes from its checkpoint with the same Bop state
    resumed = Trainer.resume(tmp_path / "run", epochs=2)
    m_saved = resumed.method.bop.state_dict()["state"]
    m_live = trainer.method.bop.state_dict()["state"]
    assert all(torch.equal(m_saved[k]["m"], m_live[k]["m"]) for k in m_live)


def test_learned_scale_starts_at_mean_abs_and_is_trained_with_the_real_parameters(tmp_path):
    from bnnopt.registry import METHODS

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    floats = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    method = METHODS.get("bop")(scale="learned")
    assert method.resolved_options()["scale"] == "learned"
    method.prepare(model, {"keep_first": False, "keep_last": False})
    binary, real = split_params(model)
    for layer, w in zip((model[0], model[2]), floats):
        alpha = layer.weight_quantizer.alpha
        assert torch.equal(alpha.detach(), w.abs().mean(dim=1, keepdim=True))  # from the floats
        assert set(layer.weight.detach().unique().tolist()) <= {-1.0, 1.0}
        assert torch.equal(layer.quantized_weight().detach(), alpha.detach() * layer.weight)
        assert any(p is alpha for p in real) and all(p is not alpha for p in binary)
    # through the Trainer on the tiny GPT: the scales move, the weights stay +-1 and flip
    trainer = Trainer(lm_config(method_options={"gamma": 1e-2, "tau": 1e-6, "scale": "learned"}),
                      tmp_path / "run")
    layers = [layer for _, layer in bnnopt.nn.quantized_layers(trainer.model)]
    start = [layer.weight_quantizer.alpha.detach().clone() for layer in layers]
    signs = [layer.weight.detach().clone() for layer in layers]
    trainer.run()
    assert all(not torch.equal(a, layer.weight_quantizer.alpha) for a, layer in zip(start, layers))
    assert sum(int((s != layer.weight).sum()) for s, layer in zip(signs, layers)) > 0
    for layer in layers:
        assert set(layer.weight.detach().unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="invalid Bop scale 'fixed'; valid: none, learned"):
        BopConfig(scale="fixed")
