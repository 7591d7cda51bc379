"""scalar_mamba: the one-channel Mamba read at its last token equals the general block."""
import pytest
import torch

from bnnopt.ssm import scalar_mamba
from bnnopt.ssm.mamba import Mamba

F64 = torch.float64


def _block(seed=0, **kw):
    torch.manual_seed(seed)
    m = Mamba(1, **{"d_state": 4, "d_conv": 8, "expand": 1, **kw}).to(F64)
    with torch.no_grad():  # move every parameter off its special initial value
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("L", [1, 3, 7, 12])
@pytest.mark.parametrize("kw", [{}, {"d_state": 16, "d_conv": 4}, {"conv_bias": False},
                                {"d_state": 1, "d_conv": 1}])
@pytest.mark.parametrize("chunk", [5, 1 << 16])
def test_equals_full_block_at_last_token(L, kw, chunk):
    m = _block(**kw)
    h = torch.randn(29, L, 1, dtype=F64, requires_grad=True)
    assert scalar_mamba.applies(m, h)
    got = scalar_mamba.scalar_mamba_last(m, h, chunk_elems=chunk)
    want = m(h)[:, -1]
    assert got.shape == (29, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    w = torch.randn_like(want)
    params = [h] + list(m.parameters())
    for p, a, e in zip(["h"] + [n for n, _ in m.named_parameters()],
                       torch.autograd.grad((got * w).sum(), params),
                       torch.autograd.grad((want * w).sum(), params)):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-10, msg=p)


def test_gradcheck():
    """Input gradients by finite differences (parameter gradients: against the block above)."""
    m = _block(seed=3, d_state=2, d_conv=3)
    h = torch.randn(6, 4, 1, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: scalar_mamba.scalar_mamba_last(m, h, 9), (h,))


def test_float32_matches_float64_and_dispatch():
    m64 = _block(seed=1)
    m32 = _block(seed=1).float()
    h = torch.randn(300, 7, 1, dtype=F64) * 1e-2
    torch.testing.assert_close(m32.forward_last(h.float()).double(), m64.forward_last(h),
                               rtol=1e-4, atol=1e-7)
    assert scalar_mamba.applies(m64, h)
    assert not scalar_mamba.applies(Mamba(1, expand=2), h)        # two channels: general path
    assert not scalar_mamba.applies(Mamba(2, expand=0.5), torch.zeros(3, 4, 2))
    assert not scalar_mamba.applies(Mamba(1, expand=1, bias=True), h)
