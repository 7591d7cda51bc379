"""Activation quantizers: sign with any estimator, DoReFa k-bit values and clip gradient."""
from __future__ import annotations

import pytest
import torch

from bnnopt.quant import ACT_QUANTIZERS, DoReFaActivation, SignActivation, make_act_quantizer


def test_registry():
    assert {"sign", "dorefa"} <= set(ACT_QUANTIZERS.names())


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_dorefa_activation_values_and_gradient(bits):
    a = torch.tensor([-0.5, 0.0, 0.1, 0.26, 0.5, 0.74, 1.0, 1.3], dtype=torch.float64,
                     requires_grad=True)
    n = 2 ** bits - 1
    y = make_act_quantizer("dorefa", bits)(a)
    ref = [round(n * min(max(v, 0.0), 1.0)) / n for v in a.tolist()]
    assert y.tolist() == pytest.approx(ref, abs=1e-12)
    levels = torch.arange(n + 1, dtype=torch.float64) / n
    assert ((y.detach().reshape(-1, 1) - levels).abs().min(dim=1).values < 1e-12).all()
    y.backward(torch.full_like(a, 2.0))
    # straight through inside [0, 1], boundaries included; zero outside
    assert a.grad.tolist() == [0.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0]


@pytest.mark.parametrize("estimator", ["ste", "clipped_ste", "approx_sign", "ede", "reste"])
def test_sign_activation_uses_estimator(estimator):
    a = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    act = make_act_quantizer("sign", 1, estimator)
    act.set_progress(0.5)
    y = act(a)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    torch.testing.assert_close(a.grad, act.estimator.grad(a.detach()))


def test_bad_activation_settings():
    with pytest.raises(ValueError, match=r"invalid bits 1 for activation quantizer 'dorefa'"):
        DoReFaActivation(bits=1)
    with pytest.raises(ValueError, match=r"invalid bits 2 .*'sign'; valid: 1"):
        SignActivation(bits=2)
    with pytest.raises(ValueError, match="'ede'"):
        DoReFaActivation(bits=2, estimator="ede")
    with pytest.raises(ValueError) as err:
        make_act_quantizer("relu", 1)
    assert "'relu'" in str(err.value) and "dorefa, sign" in str(err.value)
