"""Every estimator: forward is sign (sign(0) = +1), backward equals its closed-form derivative.

Inputs include exact zeros and every clip boundary (+-1, ReSTE's +-t and +-interval).
The references below are written element by element with ``math``, independently
of the implementation.
"""
from __future__ import annotations

import math

import pytest
import torch

from bnnopt.quant import (
    ESTIMATORS,
    EDEEstimator,
    ReSTEEstimator,
    approx_sign,
    ede,
    ede_schedule,
    make_estimator,
    reste,
    reste_schedule,
    sign_clipped_ste,
    sign_ste,
)

T, INTERVAL = 1.5, 0.1
POINTS = [-3.0, -2.0, -1.5, -1.2, -1.0, -0.7, -0.5, -0.1, -0.05, 0.0, 0.0, 0.03, 0.1, 0.1000001,
          0.5, 0.999, 1.0, 1.001, 1.4999, 1.5, 1.5001, 2.0, 3.0]


def _x():
    return torch.tensor(POINTS, dtype=torch.float64)


def _upstream():
    g = torch.Generator().manual_seed(0)
    return torch.randn(len(POINTS), dtype=torch.float64, generator=g)


def ref_ste(x):
    return 1.0


def ref_clipped(x):
    return 1.0 if abs(x) <= 1 else 0.0


def ref_approx(x):
    return 2 - 2 * abs(x) if abs(x) <= 1 else 0.0


def ref_ede(x, t):
    k = max(1 / t, 1.0)
    return k * t * (1 - math.tanh(t * x) ** 2)


def ref_reste(x, o, t=T, interval=INTERVAL):
    a = abs(x)
    if a <= interval:
        return (interval ** (1 / o)) / interval
    if a <= t:
        return (1 / o) * a ** (1 / o - 1)
    return 0.0


def _check(fn, ref):
    x = _x().requires_grad_(True)
    g = _upstream()
    y = fn(x)
    expected_y = torch.tensor([1.0 if v >= 0 else -1.0 for v in POINTS], dtype=torch.float64)
    assert torch.equal(y.detach(), expected_y)
    assert y.dtype == x.dtype and y.shape == x.shape
    y.backward(g)
    expected = torch.tensor([ref(v) for v in POINTS], dtype=torch.float64) * g
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)


def test_sign_of_zero_is_plus_one():
    for name in ESTIMATORS.names():
        est = make_estimator(name)
        assert est(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("fn,ref", [(sign_ste, ref_ste), (sign_clipped_ste, ref_clipped),
                                    (approx_sign, ref_approx)])
def test_fixed_estimators_functional(fn, ref):
    _check(fn, ref)


@pytest.mark.parametrize("name,ref", [("ste", ref_ste), ("clipped_ste", ref_clipped),
                                      ("approx_sign", ref_approx)])
def test_fixed_estimators_registered(name, ref):
    est = make_estimator(name)
    _check(est, ref)
    # grad() returns the surrogate derivative itself
    torch.testing.assert_close(est.grad(_x()), torch.tensor([ref(v) for v in POINTS],
                                                            dtype=torch.float64))


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
def test_ede_backward_at_progress(p):
    est = make_estimator("ede")
    est.set_progress(p)
    t = 1e-3 * (10.0 / 1e-3) ** p
    assert est.t == pytest.approx(t, rel=1e-12)
    assert est.k == pytest.approx(max(1 / t, 1.0), rel=1e-12)
    _check(est, lambda v: ref_ede(v, t))
    _check(lambda x: ede(x, t), lambda v: ref_ede(v, t))


def test_ede_schedule_is_log_spaced():
    ts = [ede_schedule(p)[0] for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert ts == pytest.approx([1e-3, 1e-2, 1e-1, 1.0, 10.0], rel=1e-12)
    # early: k t = 1, so EDE ~ identity STE near 0; late: k = 1
    assert ede_schedule(0.0)[1] * ede_schedule(0.0)[0] == pytest.approx(1.0)
    assert ede_schedule(1.0)[1] == 1.0
    est = EDEEstimator(t_min=0.1, t_max=10.0)
    est.set_progress(0.5)
    assert est.t == pytest.approx(1.0)


@pytest.mark.parametrize("p", [0.0, 0.5, 0.8, 1.0])
def test_reste_backward_at_progress(p):
    est = make_estimator("reste")
    est.set_progress(p)
    o = 1 + 2 * p
    assert est.o == pytest.approx(o)
    _check(est, lambda v: ref_reste(v, o))
    _check(lambda x: reste(x, o), lambda v: ref_reste(v, o))


def test_reste_boundaries_and_o1_equals_clipped_at_t():
    # |x| = interval uses the secant slope, |x| = t still passes gradient, beyond t is 0.
    o = 3.0
    s = ReSTEEstimator(o_min=o, o_max=o).grad(
        torch.tensor([-INTERVAL, INTERVAL, -T, T, 1.5001], dtype=torch.float64))
    sec = INTERVAL ** (1 / o) / INTERVAL
    der = (1 / o) * T ** (1 / o - 1)
    torch.testing.assert_close(s, torch.tensor([sec, sec, der, der, 0.0], dtype=torch.float64))
    # o = 1: gradient 1 on |x| <= t, 0 beyond
    s1 = ReSTEEstimator().grad(_x())
    torch.testing.assert_close(s1, torch.tensor([1.0 if abs(v) <= T else 0.0 for v in POINTS],
                                                dtype=torch.float64))
    assert reste_schedule(0.5) == 2.0


def test_progress_validation_and_options():
    est = make_estimator("ede")
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="progress"):
            est.set_progress(bad)
    with pytest.raises(ValueError, match="t_min"):
        make_estimator("ede", t_min=-1.0)
    with pytest.raises(ValueError, match="interval"):
        make_estimator("reste", interval=2.0)
    with pytest.raises(ValueError, match="'nope'"):
        make_estimator("ste", nope=1)


def test_unknown_estimator_lists_valid():
    with pytest.raises(ValueError) as err:
        make_estimator("sgn")
    msg = str(err.value)
    assert "'sgn'" in msg
    for name in ("ste", "clipped_ste", "approx_sign", "ede", "reste"):
        assert name in msg


def test_estimators_have_no_state_dict_entries():
    for name in ESTIMATORS.names():
        assert make_estimator(name).state_dict() == {}
