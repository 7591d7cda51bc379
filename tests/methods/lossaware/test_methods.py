"""lab / laq / blaq as METHODS: registration, family, exact resume from state dicts."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from bnnopt.registry import METHODS
from bnnopt.methods.base import Method, OptimConfig

from .conftest import tiny_mlp


def test_registered_as_loss_aware_methods():
    for name in ("lab", "laq", "blaq"):
        cls = METHODS.get(name)
        assert issubclass(cls, Method) and cls.family == "loss-aware"


def _fresh(name, options):
    model = tiny_mlp()
    method = METHODS.get(name)(**options)
    method.prepare(model, {})
    method.build(model, OptimConfig(lr=0.02))
    return model, method


@pytest.mark.parametrize("name,options", [("lab", {}), ("laq", {"bits": 4, "levels": "log"}),
                                          ("blaq", {"bits": 2, "a": 0.6}),
                                          ("blaq", {"reading": "recursive"}),
                                          ("laq", {"first_bits": 8, "last_bits": 2})])
def test_state_dict_round_trip_resumes_exactly(name, options, batch):
    x, y = batch
    straight, method = _fresh(name, options)
    for _ in range(5):
        method.train_step(straight, x, y, F.cross_entropy)

    first, method = _fresh(name, options)
    for _ in range(3):
        method.train_step(first, x, y, F.cross_entropy)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "method": method.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    resumed, method2 = _fresh(name, options)
    resumed.load_state_dict(ckpt["model"])
    method2.load_state_dict(ckpt["method"])
    method2.set_lr(0.02)
    for _ in range(2):
        method2.train_step(resumed, x, y, F.cross_entropy)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_eval_mode_reproduces_the_quantized_network(batch):
    x, y = batch
    model, method = _fresh("laq", {"bits": 2})
    for _ in range(2):
        method.train_step(model, x, y, F.cross_entropy)
    model.eval()
    rebuilt = tiny_mlp(seed=5)
    METHODS.get("laq")(bits=2).prepare(rebuilt, {})
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))


def test_non_adam_optimizer_warns():
    model = tiny_mlp()
    method = METHODS.get("laq")()
    method.prepare(model, {})
    with pytest.warns(UserWarning, match="Adam-style"):
        method.build(model, OptimConfig(name="sgd", lr=0.1))


def test_lab_is_laq_at_one_bit(batch):
    x, y = batch
    lab, m1 = _fresh("lab", {})
    laq, m2 = _fresh("laq", {"bits": 1})
    for _ in range(3):
        m1.train_step(lab, x, y, F.cross_entropy)
        m2.train_step(laq, x, y, F.cross_entropy)
    for (k, a), (_, b) in zip(lab.state_dict().items(), laq.state_dict().items()):
        assert torch.equal(a, b), k
