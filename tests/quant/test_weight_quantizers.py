"""Weight quantizers: allowed values, paper formulas, gradients, encode/decode exactness."""
from __future__ import annotations

import pytest
import torch

from bnnopt.quant import (
    QUANTIZERS,
    BWNQuantizer,
    KBitRound,
    make_weight_quantizer,
)

SUPPORTED = {"sign": (1,), "dorefa": (1, 2, 4, 8), "bwn": (1,), "uniform": (1, 2, 4, 8)}


def _w(seed=0, shape=(6, 4, 3, 3), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g, dtype=dtype) * 0.7
    w.view(-1)[:3] = 0.0  # exact zeros
    return w


def _grid(bits):
    n = 2 ** bits - 1
    return torch.tensor([2 * c / n - 1 for c in range(n + 1)], dtype=torch.float64)


def _on_grid(values, grid, scale=1.0):
    v = values.detach().double().reshape(-1, 1) / scale
    return bool(((v - grid.reshape(1, -1)).abs().min(dim=1).values < 1e-6).all())


def test_registry_and_supported_bits():
    assert set(SUPPORTED) <= set(QUANTIZERS.names())
    for name, bits in SUPPORTED.items():
        assert QUANTIZERS.get(name).supported_bits == bits


@pytest.mark.parametrize("name,bits", [(n, b) for n, bs in SUPPORTED.items() for b in bs
                                       if b in (1, 2, 4)])
def test_outputs_take_only_allowed_values(name, bits):
    w = _w(bits)
    q = make_weight_quantizer(name, bits)(w)
    if name == "bwn":
        scale = w.abs().mean().item()
    elif name == "uniform":
        scale = w.abs().max().item()
    else:
        scale = 1.0
    assert _on_grid(q, _grid(bits), scale)
    assert q.unique().numel() <= 2 ** bits
    if bits == 1:
        assert not (q == 0).any()
        # sign(0) := +1
        assert (q.reshape(-1)[:3] > 0).all()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_dorefa_matches_fsg_eq_1_2(bits):
    w = _w(bits, dtype=torch.float64)
    a = torch.tanh(w) / torch.tanh(w).abs().max()           # Eq. 1
    if bits == 1:
        ref = torch.where(a >= 0, 1.0, -1.0).double()        # sign, sign(0)=+1
    else:
        n = 2 ** bits - 1                                    # Eq. 2 (DoReFa k-bit)
        ref = 2 * (torch.round(n * (a + 1) / 2) / n) - 1
    q = make_weight_quantizer("dorefa", bits)(w)
    torch.testing.assert_close(q, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_dorefa_ste_gradient_is_c_times_g(bits):
    # identity STE through sign / rounding; the max is held constant (FSG Eq. 1):
    # dL/dW = g * (1 - tanh^2 W) / max|tanh W|
    w = _w(3, dtype=torch.float64).requires_grad_(True)
    g = torch.randn(w.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    quant = make_weight_quantizer("dorefa", bits, "ste")
    quant(w).backward(g)
    t = torch.tanh(w.detach())
    c = (1 - t ** 2) / t.abs().max()
    torch.testing.assert_close(w.grad, g * c, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(quant.pre_derivative(w.detach()), c, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(quant.pre(w.detach()), t / t.abs().max())


def test_dorefa_one_bit_with_clipped_estimator_sees_A():
    # The estimator acts on A(W) in [-1, 1]: clipped STE never clips, so grad = g * c.
    w = _w(4, dtype=torch.float64).requires_grad_(True)
    make_weight_quantizer("dorefa", 1, "clipped_ste")(w).sum().backward()
    t = torch.tanh(w.detach())
    torch.testing.assert_close(w.grad, (1 - t ** 2) / t.abs().max())


def test_bwn_scale_and_gradients():
    w = _w(5, shape=(4, 3, 2, 2), dtype=torch.float64) * 2  # some |w| > 1
    g = torch.randn(w.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sgn = torch.where(w >= 0, 1.0, -1.0).double()
    clip = (w.abs() <= 1).double()
    # per tensor, alpha detached: dQ/dW = alpha * 1{|w|<=1}
    alpha = w.abs().mean()
    wd = w.clone().requires_grad_(True)
    q = BWNQuantizer(detach_scale=True)
    out = q(wd)
    torch.testing.assert_close(out, alpha * sgn)
    out.backward(g)
    torch.testing.assert_close(wd.grad, g * alpha * clip)
    # per tensor, alpha differentiable (XNOR-Net Sec. 3.1)
    wd = w.clone().requires_grad_(True)
    BWNQuantizer()(wd).backward(g)
    n = w.numel()
    # d alpha / dW_j = d|W_j|/dW_j / n, and d|W|/dW = 0 at W = 0 (subgradient torch uses)
    dabs = torch.sign(w)
    torch.testing.assert_close(wd.grad, g * alpha * clip + dabs * (g * sgn).sum() / n)
    # per output channel
    q = BWNQuantizer(per_channel=True, detach_scale=True)
    alpha_c = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(q(w), alpha_c * sgn)
    assert q.encode(w)["scale"].shape == (4, 1, 1, 1)
    assert q.scale_numel(w.shape) == 4 and BWNQuantizer().scale_numel(w.shape) == 1


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_uniform_values_and_identity_gradient(bits):
    w = _w(6, dtype=torch.float64).requires_grad_(True)
    s = w.detach().abs().max()
    n = 2 ** bits - 1
    q = make_weight_quantizer("uniform", bits)(w)
    if bits == 1:
        ref = s * torch.where(w.detach() >= 0, 1.0, -1.0).double()
    else:
        ref = s * (2 * torch.round(n * (w.detach() / s + 1) / 2) / n - 1)
    torch.testing.assert_close(q, ref, rtol=0, atol=1e-12)
    q.sum().backward()
    torch.testing.assert_close(w.grad, torch.ones_like(w))


def test_kbit_round_clipped_gradient_boundaries():
    u = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.3, 1.0, 1.5], dtype=torch.float64,
                     requires_grad=True)
    KBitRound.apply(u, 2, True).sum().backward()
    assert u.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    u.grad = None
    y = KBitRound.apply(u, 2, False)
    y.sum().backward()
    assert u.grad.tolist() == [1.0] * 7
    assert y.tolist() == pytest.approx([-1.0, -1.0, -1 / 3, 1 / 3, 1 / 3, 1.0, 1.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name,bits,opts", [
    ("sign", 1, {}), ("dorefa", 1, {}), ("dorefa", 2, {}), ("dorefa", 4, {}), ("dorefa", 8, {}),
    ("bwn", 1, {}), ("bwn", 1, {"per_channel": True}), ("uniform", 1, {}), ("uniform", 2, {}),
    ("uniform", 4, {}), ("uniform", 8, {}),
])
def test_encode_decode_is_bit_exact(name, bits, opts, seed):
    for shape in [(6, 4, 3, 3), (5, 7)]:
        w = _w(seed, shape=shape)
        quant = make_weight_quantizer(name, bits, **opts)
        enc = quant.encode(w)
        assert enc["codes"].dtype == torch.uint8 and enc["codes"].shape == w.shape
        assert int(enc["codes"].max()) < 2 ** bits and enc["bits"] == bits
        assert enc["scale"].dtype == w.dtype
        out = quant(w.clone().requires_grad_(True))
        assert torch.equal(out.detach(), quant.decode(enc))
        assert torch.equal(out.detach(), type(quant).decode(enc))  # no instance state needed


def test_all_zero_weight_is_finite():
    for name, bits in [("dorefa", 1), ("dorefa", 2), ("uniform", 2), ("bwn", 1)]:
        q = make_weight_quantizer(name, bits)(torch.zeros(3, 3))
        assert torch.isfinite(q).all()


def test_bad_bits_and_names():
    with pytest.raises(ValueError) as err:
        make_weight_quantizer("dorefa", 3)
    assert "3" in str(err.value) and "1, 2, 4, 8" in str(err.value)
    with pytest.raises(ValueError, match="-1"):
        make_weight_quantizer("uniform", -1)
    with pytest.raises(ValueError, match=r"invalid bits 2 for quantizer 'sign'; valid: 1"):
        make_weight_quantizer("sign", 2)
    with pytest.raises(ValueError) as err:
        make_weight_quantizer("ternary", 1)
    assert "'ternary'" in str(err.value) and "dorefa" in str(err.value)
    with pytest.raises(ValueError) as err:
        make_weight_quantizer("dorefa", 2, "ede")
    assert "'ede'" in str(err.value) and "ste, clipped_ste" in str(err.value)
    with pytest.raises(ValueError, match="'per_chan'"):
        make_weight_quantizer("bwn", 1, per_chan=True)


def test_set_progress_reaches_estimator():
    quant = make_weight_quantizer("sign", 1, "ede")
    quant.set_progress(1.0)
    assert quant.estimator.t == pytest.approx(10.0)


def test_scaled_sign_starts_at_mean_abs_and_learns_its_scale():
    from torch import nn

    from bnnopt.nn import QConv2d, QLinear, QuantConfig

    w = _w(0, shape=(6, 4, 3, 3))
    conv = nn.Conv2d(4, 6, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(w)
    layer = QConv2d.from_float(conv, QuantConfig(weight_quantizer="scaled_sign", estimator="ste"))
    quant = layer.weight_quantizer
    assert quant.alpha.shape == (6, 1, 1, 1)  # bound to the copied float weights
    assert torch.equal(quant.alpha.detach(), w.abs().mean(dim=(1, 2, 3), keepdim=True))
    assert "weight_quantizer.alpha" in dict(layer.named_parameters())
    sign = torch.where(w >= 0, 1.0, -1.0)  # sign(0) := +1
    latent = w.clone().requires_grad_(True)
    out = quant(latent)
    assert torch.equal(out.detach(), quant.alpha.detach() * sign)
    g = torch.randn(w.shape, generator=torch.Generator().manual_seed(3))
    (out * g).sum().backward()
    # dL/dalpha_c = sum_i g_ci sign(W_ci); dL/dW = alpha * g (identity estimator)
    assert torch.allclose(quant.alpha.grad, (g * sign).sum(dim=(1, 2, 3), keepdim=True))
    assert torch.allclose(latent.grad, quant.alpha.detach() * g)
    enc = quant.encode(w)
    assert enc["scale"].shape == (6, 1, 1, 1) and torch.equal(quant.decode(enc), out.detach())
    assert quant.scale_numel(w.shape) == 6
    tensor_wise = QLinear(5, 7, weight_quantizer=make_weight_quantizer("scaled_sign", 1,
                                                                       per_channel=False))
    assert tensor_wise.weight_quantizer.alpha.shape == ()
    assert torch.equal(tensor_wise.weight_quantizer.alpha.detach(),
                       tensor_wise.weight.detach().abs().mean())
    with pytest.raises(ValueError, match="no scale yet") as err:
        make_weight_quantizer("scaled_sign", 1)(w)
    assert "\n" not in str(err.value)
