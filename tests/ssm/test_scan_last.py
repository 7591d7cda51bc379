"""selective_scan_last and Mamba/slow-net forward_last: the last position of the full scan."""
import pytest
import torch

from bnnopt.methods.learned.lre import LayerEmbedding, per_weight_slow_gradients
from bnnopt.ssm.mamba import Mamba
from bnnopt.ssm.scan import selective_scan_ref
from bnnopt.ssm.scan_last import selective_scan_last
from bnnopt.methods.learned.slow_nets import LSTMSlowNet, MambaSlowNet

F64 = torch.float64


def _inputs(L, E, N, b, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = (lambda *s: torch.randn(*s, generator=g, dtype=F64))
    return {"u": r(L, E, b), "delta": r(L, E, b), "A": -torch.rand(E, N, generator=g, dtype=F64) - 0.2,
            "B": r(L, N, b), "C": r(N, b), "D": r(E), "z": r(E, b), "delta_bias": r(E)}


@pytest.mark.parametrize("L,E,N,b,tile", [(7, 1, 4, 33, 1 << 16), (5, 3, 2, 17, 7), (1, 2, 3, 4, 1),
                                          (9, 2, 16, 10, 40)])
@pytest.mark.parametrize("parts", ["all", "no_gate_skip_bias", "no_softplus"])
def test_equals_reference_last_position(L, E, N, b, tile, parts):
    t = _inputs(L, E, N, b)
    softplus = parts != "no_softplus"
    if parts == "no_gate_skip_bias":
        t["D"] = t["z"] = t["delta_bias"] = None
    if not softplus:
        t["delta"] = t["delta"].abs() * 0.1      # a positive step without softplus
    leaves = {k: v.clone().requires_grad_() for k, v in t.items() if v is not None}
    full = {k: leaves.get(k) for k in t}
    # the reference takes batch-major (b, E, L) / (b, N, L) inputs and a full-length C, z
    C_full = torch.randn(b, N, L, dtype=F64)
    C_full[..., -1] = 0
    z_full = None if full["z"] is None else torch.zeros(b, E, L, dtype=F64)
    ref_C = C_full + torch.nn.functional.pad(full["C"].t()[..., None], (L - 1, 0))
    ref_z = None if z_full is None else z_full + torch.nn.functional.pad(full["z"].t()[..., None],
                                                                          (L - 1, 0))
    ref = selective_scan_ref(full["u"].permute(2, 1, 0), full["delta"].permute(2, 1, 0), full["A"],
                             full["B"].permute(2, 1, 0), ref_C, full["D"], ref_z,
                             full["delta_bias"], delta_softplus=softplus)[..., -1].t()  # (E, b)
    out = selective_scan_last(full["u"], full["delta"], full["A"], full["B"], full["C"], full["D"],
                              full["z"], full["delta_bias"], delta_softplus=softplus,
                              tile_elems=tile)
    assert out.shape == (E, b)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    w = torch.randn(E, b, dtype=F64)
    g_ref = torch.autograd.grad((ref * w).sum(), list(leaves.values()))
    g_out = torch.autograd.grad((out * w).sum(), list(leaves.values()))
    for name, a, e in zip(leaves, g_out, g_ref):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-11, msg=name)


def test_gradcheck():
    t = _inputs(4, 2, 3, 5, seed=1)
    args = [v.clone().requires_grad_() for v in t.values()]
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan_last(*a, delta_softplus=True, tile_elems=8), args)


def test_float32_inputs_give_float32_and_match_float64():
    t = _inputs(6, 1, 4, 50, seed=2)
    out64 = selective_scan_last(*t.values(), delta_softplus=True)
    out32 = selective_scan_last(*(v.float() for v in t.values()), delta_softplus=True)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)


def test_bad_shapes_name_the_tensor():
    t = _inputs(4, 2, 3, 5)
    t["C"] = t["C"][:, :4]
    with pytest.raises(ValueError, match=r"C has shape \(3, 4\), expected \(3, 5\)"):
        selective_scan_last(*t.values())
    with pytest.raises(ValueError, match="tile_elems"):
        selective_scan_last(*_inputs(4, 2, 3, 5).values(), tile_elems=0)


@pytest.mark.parametrize("d_model,d_state,d_conv,expand,L",
                         [(1, 4, 8, 1, 7), (1, 16, 4, 3, 5), (3, 4, 4, 2, 9), (1, 4, 8, 1, 1),
                          (2, 2, 2, 1, 3)])
def test_mamba_forward_last_equals_forward(d_model, d_state, d_conv, expand, L):
    torch.manual_seed(0)
    m = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand).to(F64)
    h = torch.randn(23, L, d_model, dtype=F64, requires_grad=True)
    full, last = m(h)[:, -1], m.forward_last(h)
    assert last.shape == (23, d_model)
    torch.testing.assert_close(last, full, rtol=0, atol=1e-12)
    w = torch.randn_like(full)
    params = [h] + list(m.parameters())
    for a, e in zip(torch.autograd.grad((last * w).sum(), params),
                    torch.autograd.grad((full * w).sum(), params)):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-11)


@pytest.mark.parametrize("net", [MambaSlowNet(1, d_state=4, d_conv=8, expand=1),
                                 MambaSlowNet(3, d_state=4, d_conv=4, expand=2),
                                 LSTMSlowNet(hidden=5)])
def test_slow_net_forward_last_and_per_weight_layout(net):
    torch.manual_seed(1)
    net = net.to(F64)
    tokens = torch.randn(11, 6, 1, dtype=F64)
    prefix = torch.randn(11, 1, net.d_model, dtype=F64)
    torch.testing.assert_close(net.forward_last(tokens, prefix=prefix),
                               net(tokens, prefix=prefix)[:, -1], rtol=0, atol=1e-12)
    lre = LayerEmbedding(2, net.d_model).to(F64)
    hist = [torch.randn(4, 5, dtype=F64), torch.randn(4, 7, dtype=F64)]
    got = torch.cat(per_weight_slow_gradients(net, lre, hist))
    # by hand: the full output of every (N, k+1) sequence, read at its last token
    first = torch.cat([lre.weight[i].expand(h.shape[1], 1, -1) for i, h in enumerate(hist)])
    steps = torch.cat(hist, dim=1).t().unsqueeze(-1)
    if net.d_model > 1:
        want = net(steps, prefix=first)[:, -1, 0]
    else:
        want = net(torch.cat((first, steps), dim=1))[:, -1, 0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
