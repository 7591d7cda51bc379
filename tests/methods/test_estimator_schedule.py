"""EstimatorSchedule: the scheduler object reproduces the Trainer's per-epoch progress."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import bnnopt
from bnnopt.methods.base import OptimConfig
from bnnopt.nn import binarize_, QuantConfig, quantized_layers, set_progress
from bnnopt.quant import Estimator, EstimatorSchedule, estimator_progress, set_estimator_progress
from bnnopt.registry import METHODS


def _net():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def _progresses(model):
    return [m.progress for m in model.modules() if isinstance(m, Estimator)]


@pytest.mark.parametrize("name, epochs", [("irnet", 5), ("rbnn", 5), ("irnet", 1), ("reste", 3)])
def test_schedule_reproduces_the_trainer_progress(name, epochs):
    policy = {"keep_first": False, "keep_last": False, "act_quantizer": "sign"}
    torch.manual_seed(0)
    by_trainer, by_schedule = _net(), _net()
    method = METHODS.get(name)()
    method.prepare(by_trainer, policy)
    METHODS.get(name)().prepare(by_schedule, policy)
    endpoint = name != "rbnn"
    sched = EstimatorSchedule(by_schedule, total_epochs=epochs, endpoint=endpoint)
    assert len(_progresses(by_schedule)) == 6  # 3 layers x (weight + activation) estimators
    seen = []
    for epoch in range(epochs):
        method.on_epoch_start(epoch, epochs)  # what Trainer.train_epoch calls
        want = epoch / max(epochs - 1, 1) if endpoint else epoch / epochs
        assert set(_progresses(by_trainer)) == {want}
        assert _progresses(by_schedule) == _progresses(by_trainer)
        assert sched.progress == want
        seen.append(sched.progress)
        sched.step()  # end of the epoch
    assert seen == sorted(seen) and method.estimator_schedule.progress == seen[-1]
    assert sched.progress == 1.0  # one step past the last epoch: held at 1


def test_per_step_schedule_state_dict_round_trip_and_top_level_export():
    assert bnnopt.EstimatorSchedule is EstimatorSchedule
    model = _net()
    binarize_(model, QuantConfig(weight_quantizer="sign", estimator="ede", keep_first=False))
    sched = EstimatorSchedule(model, total_steps=11)
    for _ in range(4):
        sched.step()
    assert sched.progress == 0.4 and set(_progresses(model)) == {0.4}
    state = sched.state_dict()
    assert state == {"last_step": 4, "total": 11, "endpoint": True, "unit": "step"}

    other = _net()
    binarize_(other, QuantConfig(weight_quantizer="sign", estimator="ede", keep_first=False))
    resumed = EstimatorSchedule(other, total_steps=2)
    assert set(_progresses(other)) == {0.0}
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state and set(_progresses(other)) == {0.4}
    for _ in range(3):
        assert resumed.step() == sched.step()
    assert _progresses(other) == _progresses(model) == [0.7, 0.7]
    t = [m.t for m in other.modules() if isinstance(m, Estimator)]
    assert t[0] == pytest.approx(1e-3 * 1e4 ** 0.7)  # EDE reads the progress set
    assert "last_step=7" in repr(resumed)


def test_set_progress_delegates_and_reaches_bare_estimators():
    model = nn.Sequential(_net(), bnnopt.quant.make_estimator("ede"))  # an estimator as a layer
    binarize_(model, QuantConfig(weight_quantizer="sign", estimator="reste"))
    assert set_estimator_progress(model, 0.25) == 2  # 1 swapped layer + the bare estimator
    assert set(_progresses(model)) == {0.25}
    set_progress(model, 0.5)  # bnnopt.nn.set_progress: same walk
    assert set(_progresses(model)) == {0.5}
    assert len(quantized_layers(model)) == 1


def test_schedule_trains_inside_a_plain_loop():
    torch.manual_seed(0)
    model = _net()
    binarize_(model, QuantConfig(weight_quantizer="sign", estimator="ede", keep_first=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = EstimatorSchedule(model, total_epochs=3)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    grads = []
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads.append(model[2].weight.grad.abs().max().item())
        opt.step()
        sched.step()
    assert len(set(grads)) == 3  # the surrogate changed between epochs


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one of total_steps, total_epochs"),
    ({"total_steps": 3, "total_epochs": 3}, "exactly one"),
    ({"total_epochs": 0}, "invalid total_epochs 0"),
    ({"total_steps": 2.5}, "invalid total_steps 2.5"),
    ({"total_steps": 2, "endpoint": "yes"}, "invalid endpoint 'yes'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EstimatorSchedule(_net(), **kwargs)


def test_bad_model_step_and_state():
    with pytest.raises(ValueError, match="invalid model list"):
        EstimatorSchedule([], total_steps=2)
    with pytest.raises(ValueError, match="invalid step -1"):
        estimator_progress(-1, 3)
    with pytest.raises(ValueError, match="missing 'endpoint'"):
        EstimatorSchedule(_net(), total_steps=2).load_state_dict({"last_step": 1})


def test_method_on_epoch_start_follows_a_changed_epoch_count():
    model = _net()
    method = METHODS.get("irnet")()
    method.prepare(model, {"keep_first": False})
    method.build(model, OptimConfig(name="sgd", lr=0.1))
    method.on_epoch_start(2, 5)
    assert set(_progresses(model)) == {0.5}
    method.on_epoch_start(2, 3)
    assert set(_progresses(model)) == {1.0} and method.estimator_schedule.total == 3
