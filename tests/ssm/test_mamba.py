"""Mamba block: shapes, reference forward, causality, gradients, initialisation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import bnnopt.ssm.mamba as mamba_module
from bnnopt.ssm.mamba import Mamba, causal_depthwise_conv
from bnnopt.ssm.scan import selective_scan, selective_scan_ref

DT = torch.float64


def block(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"d_model": 1, "d_state": 4, "d_conv": 3, "expand": 3, **kw}
    return Mamba(**kw).double()


def reference_forward(m: Mamba, h: torch.Tensor) -> torch.Tensor:
    """mamba_simple's non-fused path: nn.Conv1d + the step-by-step reference scan."""
    L, E, N, R = h.shape[1], m.d_inner, m.d_state, m.dt_rank
    xz = (h @ m.in_proj.weight.T).transpose(1, 2)                     # (b, 2E, L)
    x, z = xz[:, :E], xz[:, E:]
    x = F.silu(m.conv1d(x)[..., :L])
    x_dbl = x.transpose(1, 2) @ m.x_proj.weight.T                     # (b, L, R + 2N)
    dt = (x_dbl[..., :R] @ m.dt_proj.weight.T).transpose(1, 2)
    Bm, Cm = x_dbl[..., R:R + N].transpose(1, 2), x_dbl[..., R + N:].transpose(1, 2)
    y = selective_scan_ref(x, dt, -torch.exp(m.A_log), Bm, Cm, m.D, z, m.dt_proj.bias,
                           delta_softplus=True)
    return y.transpose(1, 2) @ m.out_proj.weight.T


@pytest.mark.parametrize("d_model,L,d_conv", [(1, 7, 8), (1, 1, 4), (3, 12, 4), (2, 40, 3)])
def test_matches_reference_forward_and_gradients(d_model, L, d_conv):
    m = block(d_model=d_model, d_conv=d_conv, expand=2)
    h = torch.randn(3, L, d_model, dtype=DT, requires_grad=True)
    out, ref = m(h), reference_forward(m, h)
    assert out.shape == (3, L, d_model)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    params = [h] + list(m.parameters())
    for a, b in zip(torch.autograd.grad(out.sum(), params), torch.autograd.grad(ref.sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("L", [2, 3, 9])
def test_causal_depthwise_conv_equals_padded_conv1d(L):
    conv = torch.nn.Conv1d(5, 5, 4, groups=5, padding=3).double()
    x = torch.randn(2, 5, L, dtype=DT)                        # (batch, E, L) for Conv1d
    want = conv(x)[..., :L]
    got = causal_depthwise_conv(x.permute(2, 1, 0), conv.weight, conv.bias)  # time-major
    torch.testing.assert_close(got.permute(2, 1, 0), want)


def test_causality():
    """Changing the token at t0 leaves every output before t0 bit-identical."""
    m = block(d_conv=4)
    h = torch.randn(4, 9, 1, dtype=DT)
    base = m(h).detach()
    for t0 in (0, 3, 8):
        h2 = h.clone()
        h2[:, t0] += 1.0
        out = m(h2).detach()
        assert torch.equal(out[:, :t0], base[:, :t0])
        assert (out[:, t0:] - base[:, t0:]).abs().amax(dim=(0, 2)).min() > 0


def test_gradient_reaches_every_parameter():
    m = block(d_conv=8, expand=4)
    m(torch.randn(6, 7, 1, dtype=DT)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_initialisation_and_parameter_names():
    m = Mamba(d_model=40, d_state=16, d_conv=8, expand=2, dt_min=1e-3, dt_max=1e-1)
    assert m.d_inner == 80 and m.dt_rank == math.ceil(40 / 16) == 3
    torch.testing.assert_close(m.A_log, torch.log(torch.arange(1.0, 17.0)).repeat(80, 1))
    assert torch.equal(m.D, torch.ones(80))
    dt = F.softplus(m.dt_proj.bias)                           # inverse-softplus init
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 1e-1 * (1 + 1e-4)
    bound = 3 ** -0.5
    assert m.dt_proj.weight.abs().max() <= bound
    assert m.conv1d.weight.shape == (80, 1, 8)
    assert set(m.state_dict()) == {"in_proj.weight", "conv1d.weight", "conv1d.bias",
                                   "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
                                   "A_log", "D", "out_proj.weight"}
    assert m.x_proj.weight.shape == (3 + 32, 80)


def test_many_short_sequences_float32():
    m = Mamba(d_model=1, d_state=16, d_conv=8, expand=4)
    h = torch.randn(5000, 7, 1)
    out = m(h)
    assert out.shape == (5000, 7, 1) and out.dtype == torch.float32
    torch.testing.assert_close(out[:50].double(), reference_forward(m.double(), h[:50].double()),
                               rtol=1e-4, atol=1e-5)


def test_scan_options_reach_selective_scan(monkeypatch):
    """The block has no dispatch of its own: scan_method, tile_elems and
    use_cuda_kernel go to selective_scan, which picks the kernel."""
    seen = []

    def spy(*args, **kw):
        seen.append(kw)
        return selective_scan(*args, **{**kw, "use_cuda_kernel": False})   # no CUDA here
    monkeypatch.setattr(mamba_module, "selective_scan", spy)
    m = block(scan_method="chunked", tile_elems=50, use_cuda_kernel=True)
    h = torch.randn(2, 5, 1, dtype=DT)
    out = m(h)
    assert seen == [{"delta_softplus": True, "method": "chunked", "tile_elems": 50,
                     "use_cuda_kernel": True}]
    torch.testing.assert_close(out, reference_forward(m, h), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw,match", [({"d_state": 0}, "d_state"), ({"expand": 0}, "expand"),
                                      ({"dt_rank": 0}, "dt_rank"), ({"dt_init": "x"}, "random"),
                                      ({"scan_method": "x"}, "chunked"), ({"d_conv": 1.5}, "d_conv")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        Mamba(**{"d_model": 1, **kw})
    with pytest.raises(ValueError, match="batch, length"):
        Mamba(d_model=2)(torch.randn(3, 4, 1))
