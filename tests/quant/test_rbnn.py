"""RBNN: the bi-rotation keeps the norm, the alternating update, the sign approximation's closed form."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.quant.rbnn import (RBNNQuantizer, TrainingAwareSign, matrix_shape, rbnn_schedule,
                               training_aware_sign_value)
from bnnopt.registry import METHODS
from bnnopt.methods.base import OptimConfig


def _quantizer(shape=(6, 4, 3, 3), seed=0):
    torch.manual_seed(seed)
    w = torch.randn(shape, dtype=torch.float64)
    q = RBNNQuantizer()
    q.attach(w)
    return q, w


def _objective(q, w):
    a, b = q.shape
    x = q.standardize(w).reshape(w.shape[0], a, b)
    return (q.R1.t() @ x @ q.R2).abs().sum()  # Σ_i tr(B_iᵀ R1ᵀ X_i R2), B = sign(.)


def test_bi_rotation_keeps_every_channel_norm_before_and_after_the_update():
    q, w = _quantizer()
    assert q.shape == matrix_shape(36) == (6, 6)
    w2 = q.standardize(w)
    for _ in range(2):
        r = q.rotate(w2)
        assert torch.allclose(r.flatten(1).norm(dim=1), w2.flatten(1).norm(dim=1), atol=1e-12)
        assert not torch.allclose(r, w2)
        before = _objective(q, w)
        q.update_rotation(w)
        eye_a, eye_b = torch.eye(q.shape[0], dtype=w.dtype), torch.eye(q.shape[1], dtype=w.dtype)
        assert torch.allclose(q.R1 @ q.R1.t(), eye_a, atol=1e-10)
        assert torch.allclose(q.R2 @ q.R2.t(), eye_b, atol=1e-10)
        assert _objective(q, w) >= before - 1e-9  # alternating maximisation never loses


def test_adjustable_rotation_interpolates_between_weight_and_rotated_weight():
    q, w = _quantizer((5, 12))
    w2 = q.standardize(w)
    assert torch.allclose(q.pre(w), q.rotate(w2), atol=1e-12)  # θ = π/2: the full rotation
    with torch.no_grad():
        q.theta.zero_()
    assert torch.allclose(q.pre(w), w2, atol=1e-12)
    with torch.no_grad():
        q.theta.fill_(math.pi / 6)  # |sin| = 1/2
    assert torch.allclose(q.pre(w), 0.5 * (w2 + q.rotate(w2)), atol=1e-12)
    out = q(w)
    assert torch.equal(out.abs(), q.alpha.expand_as(out).abs())  # α_i · sign(.)
    assert torch.allclose(q.alpha.flatten(), w.abs().mean(1))


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_sign_approximation_matches_its_closed_form_and_boundaries(p):
    t, k = rbnn_schedule(p)
    edge = math.sqrt(2) / t
    x = torch.cat([torch.linspace(-1.5 * edge, 1.5 * edge, 41, dtype=torch.float64),
                   torch.tensor([-edge, edge, 0.0], dtype=torch.float64)]).requires_grad_(True)
    y = TrainingAwareSign.apply(x, t, k)
    assert torch.equal(y, torch.where(x >= 0, 1.0, -1.0).to(x.dtype))  # forward: sign
    (grad,) = torch.autograd.grad(y.sum(), x)
    # backward = F'(x) of the closed form (central differences away from the kinks)
    h = 1e-6 * edge
    xs = x.detach()
    fd = (training_aware_sign_value(xs + h, t, k) - training_aware_sign_value(xs - h, t, k)) / (2 * h)
    smooth = (xs.abs() - edge).abs() > 10 * h
    smooth &= xs.abs() > 10 * h
    assert torch.allclose(grad[smooth], fd[smooth], rtol=1e-5, atol=1e-6 * k * t)
    # boundaries: F(±√2/t) = ±k (continuous with k·sign), F' = 0 there, F'(0) = √2·k·t
    ends = torch.tensor([-edge, edge], dtype=torch.float64)
    inside = ends * (1 - 1e-12)
    assert torch.allclose(training_aware_sign_value(inside, t, k), torch.tensor([-k, k], dtype=torch.float64))
    assert torch.allclose(grad[-3:-1], torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert math.isclose(float(grad[-1]), math.sqrt(2) * k * t, rel_tol=1e-12)
    assert (t, k) == (1e-2 * 1000 ** p, max(1 / (1e-2 * 1000 ** p), 1.0))


def test_rbnn_method_trains_updates_rotations_and_reloads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    method = METHODS.get("rbnn")()
    names = method.prepare(model, {"keep_first": False, "keep_last": False})
    assert len(names) == 3
    method.build(model, OptimConfig(name="sgd", lr=0.1))
    q = model[2].weight_quantizer
    assert any(p is q.alpha for p in method.optimizer.param_groups[0]["params"])  # α, θ trained
    r1 = q.R1.clone()
    method.on_epoch_start(0, 4)
    assert not torch.equal(r1, q.R1)
    assert q.estimator.progress == 0.0
    x, y = torch.randn(5, 2, 4, 4), torch.randint(0, 3, (5,))
    alpha = q.alpha.detach().clone()
    for _ in range(3):
        method.train_step(model, x, y, F.cross_entropy)
    assert not torch.equal(alpha, q.alpha.detach())
    assert q.theta.grad is not None  # θ is trained (d|sin θ|/dθ = cos θ: ~0 at the init π/2)
    method.on_epoch_start(2, 4)
    assert q.estimator.progress == 0.5
    state = model.state_dict()
    fresh = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    METHODS.get("rbnn")().prepare(fresh, {"keep_first": False, "keep_last": False})
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh(x), model(x))
    with pytest.raises(ValueError, match="invalid rotation_update 0"):
        METHODS.get("rbnn")(rotation_update=0)
