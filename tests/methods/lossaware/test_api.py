"""LAB / LAQ / BLAQ as torch.optim-shaped optimizers in a plain PyTorch loop."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnnopt
from bnnopt.methods.lossaware import NonFiniteStepError, is_lossaware

from .conftest import tiny_mlp


def _closure(opt, model, x, y):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def test_top_level_constructors_prepare_a_plain_model():
    model = tiny_mlp()
    opt = bnnopt.BLAQ(model, lr=1e-3, bits=2, a=0.6)
    assert [is_lossaware(m) for m in (model[0], model[3])] == [True, True]   # first and last
    assert model[0].weight_quantizer.bits == 2 and model[0].weight_quantizer.levels == "pow2"
    assert [g["quantized"] for g in opt.param_groups] == [True, False]
    model = tiny_mlp()
    bnnopt.LAQ(model, bits=4, levels="log", keep_first=True)
    assert not is_lossaware(model[0]) and model[3].weight_quantizer.levels == "log"
    model = tiny_mlp()
    bnnopt.LAB(model)
    assert model[0].weight_quantizer.bits == 1
    with pytest.raises(ValueError, match="invalid bits 2 for LAB; valid: 1"):
        bnnopt.LAB(tiny_mlp(), bits=2)
    with pytest.raises(ValueError, match="already has lossaware layers"):
        bnnopt.LAQ(model, bits=2)                       # prepared: bits come from the layers
    with pytest.raises(ValueError, match="must be an nn.Module"):
        bnnopt.LAQ([(model[0].weight, model[0].weight_quantizer)], bits=2)
    with pytest.raises(ValueError, match="invalid scale_rule 'paper'; valid: exact, official"):
        bnnopt.LAQ(tiny_mlp(), scale_rule="paper")
    assert bnnopt.BLAQ.from_model(model).model is model


def test_lr_schedulers_drive_the_step(batch):
    x, y = batch
    model = tiny_mlp()
    opt = bnnopt.BLAQ(model, lr=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch == 0 else 0.0)
    opt.step(_closure(opt, model, x, y))
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.0
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt.step(_closure(opt, model, x, y))   # lr 0: no parameter moves (alpha is re-solved with D)
    for key, value in model.named_parameters():
        assert torch.equal(value, before[key]), key
    sched.step()
    assert opt.param_groups[1]["lr"] == 0.0


@pytest.mark.parametrize("cls,kwargs", [(bnnopt.LAB, {}), (bnnopt.LAQ, {"bits": 4}),
                                        (bnnopt.BLAQ, {"bits": 2}),
                                        (bnnopt.BLAQ, {"reading": "recursive"})])
def test_state_dict_resumes_exactly_in_an_own_loop(cls, kwargs, batch):
    x, y = batch

    def run(model, opt, steps):
        for _ in range(steps):
            opt.step(_closure(opt, model, x, y))

    straight = tiny_mlp()
    opt = cls(straight, lr=0.02, **kwargs)
    run(straight, opt, 5)
    first = tiny_mlp()
    opt = cls(first, lr=0.02, **kwargs)
    run(first, opt, 3)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    resumed = tiny_mlp(seed=7)                           # other initial weights: all overwritten
    opt2 = cls(resumed, lr=0.02, **kwargs)
    resumed.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    run(resumed, opt2, 2)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


@pytest.mark.parametrize("keep", [False, True])
def test_blaq_restores_batchnorm_buffers_around_the_trial(keep, batch):
    x, y = batch
    model = tiny_mlp()
    opt = bnnopt.BLAQ(model, lr=0.05, bits=2, trial_bn_stats=keep)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference(x)                                     # one forward at the real point
    opt.step(_closure(opt, model, x, y))
    bn, ref = model[1], reference[1]
    assert int(bn.num_batches_tracked) == (2 if keep else 1)
    assert torch.equal(bn.running_mean, ref.running_mean) != keep
    assert torch.equal(bn.running_var, ref.running_var) != keep


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
            and "num_batches" not in k}


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
@pytest.mark.parametrize("cls", [bnnopt.LAQ, bnnopt.BLAQ])
def test_non_finite_loss_raises_one_line_and_changes_nothing(cls, bad, batch):
    x, y = batch
    model = tiny_mlp()
    opt = cls(model, lr=0.02, bits=2)
    opt.step(_closure(opt, model, x, y))
    before = _snapshot(model)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) * bad
        loss.backward()
        return loss

    with pytest.raises(NonFiniteStepError) as err:
        opt.step(closure)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{cls.__name__} step 2: non-finite loss")
    assert isinstance(err.value, FloatingPointError) and isinstance(err.value, ValueError)
    for key, value in _snapshot(model).items():
        assert torch.equal(value, before[key]), key


def test_non_finite_trial_loss_undoes_the_trial(batch):
    x, y = batch
    model = tiny_mlp()
    opt = bnnopt.BLAQ(model, lr=0.02, bits=2)
    before = _snapshot(model)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) * (float("nan") if len(calls) == 2 else 1.0)
        loss.backward()
        return loss

    with pytest.raises(NonFiniteStepError, match=r"^BLAQ step 1: non-finite trial loss"):
        opt.step(closure)
    for key, value in _snapshot(model).items():
        assert torch.equal(value, before[key]), key


def test_bfloat16_blow_up_is_refused_with_the_step_number(batch):
    x, y = batch
    model = tiny_mlp().to(torch.bfloat16)
    opt = bnnopt.BLAQ(model, lr=1e36, clip=None)
    with pytest.raises(NonFiniteStepError, match=r"^BLAQ step \d+: non-finite") as err:
        for _ in range(20):
            opt.step(_closure(opt, model, x.to(torch.bfloat16), y))
    assert "\n" not in str(err.value)


def test_trial_gradient_on_a_unit_dead_at_the_current_point_gives_a_bounded_step():
    """g = 0 at W_hat_t but g' != 0 at the trial point, then g = g' = 0: the first moment
    holds (1-a) g' from step 1; the second-moment history must hold it too, or the
    step-2 update is lr * m / eps."""
    w = nn.Parameter(torch.tensor([0.3, -0.2]))
    q = bnnopt.methods.lossaware.LossAwareQuantizer(bits=1)
    u = nn.Parameter(torch.tensor([0.5]))
    lr = 1e-3
    opt = bnnopt.BLAQ([(w, q)], [u], lr=lr, a=0.6)
    slopes = iter([0.0, 1.0, 0.0, 0.0])                  # step 1: g, g'; step 2: g, g'

    def closure():
        opt.zero_grad()
        loss = next(slopes) * u.sum() + 0.0 * q(w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    start = u.detach().clone()
    opt.step(closure)
    assert float((u.detach() - start).abs()) <= 3 * lr


def _conv1d_task():
    gen = torch.Generator().manual_seed(0)
    patterns = torch.randn(10, 4, 20, generator=gen)
    y = torch.randint(0, 10, (128,), generator=gen)
    x = patterns[y] + 0.5 * torch.randn(128, 4, 20, generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(320, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    return model, x, y


@pytest.mark.parametrize("cls,kwargs,dtype", [
    (bnnopt.LAQ, {"bits": 2}, torch.float32), (bnnopt.BLAQ, {"bits": 1}, torch.float32),
    (bnnopt.BLAQ, {"bits": 2}, torch.float32), (bnnopt.BLAQ, {"bits": 2}, torch.bfloat16)])
def test_conv1d_model_trains(cls, kwargs, dtype):
    """The Conv1d + MLP classifier (10 noisy patterns, batch 16, lr 1e-3, first and last
    layers float): the full-data loss falls from ~2.3 to below 1.0 within 120 steps."""
    model, x, y = _conv1d_task()
    model = model.to(dtype)
    x = x.to(dtype)
    opt = cls(model, lr=1e-3, keep_first=True, keep_last=True, **kwargs)
    assert any(is_lossaware(m) for m in model.modules())
    with torch.no_grad():
        start = float(F.cross_entropy(model(x).float(), y))
    gen = torch.Generator().manual_seed(1)
    for _ in range(120):
        idx = torch.randint(0, 128, (16,), generator=gen)
        opt.step(_closure(opt, model, x[idx], y[idx]))
    with torch.no_grad():
        end = float(F.cross_entropy(model(x).float(), y))
    assert start > 2.2 and end < 1.0, (start, end)
