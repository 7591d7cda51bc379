"""The "lossaware" weight quantizer: stored alpha*b, identity gradient, exact encode/decode."""
from __future__ import annotations

import pytest
import torch

from bnnopt.nn import QLinear, QuantConfig, binarize_
from bnnopt.methods.lossaware import LossAwareQuantizer, code_table, level_values
from bnnopt.registry import QUANTIZERS


@pytest.mark.parametrize("bits,levels", [(1, "linear"), (2, "linear"), (4, "linear"), (4, "log"),
                                         (2, "pow2"), (4, "pow2"), (8, "linear")])
def test_forward_is_stored_levels_and_decode_is_bit_exact(bits, levels):
    torch.manual_seed(0)
    q = QUANTIZERS.get("lossaware")(bits=bits, levels=levels)
    w = torch.randn(5, 7, requires_grad=True)
    d = torch.rand(5, 7) + 0.1
    q.requantize(w, d, max_iter=50)
    out = q(w)
    allowed = q.alpha * level_values(bits, levels)
    assert torch.isin(out.detach(), allowed).all()
    assert torch.equal(out.detach().view(torch.int32), q.decode(q.encode(w)).view(torch.int32))
    g = torch.randn_like(out)
    out.backward(g)
    assert torch.equal(w.grad, g)                       # straight to the latent weight
    w2 = w.detach() + 0.3                               # value ignored until requantized
    assert torch.equal(q(w2), out.detach())


def test_lazy_init_and_state_dict_round_trip():
    torch.manual_seed(0)
    w = torch.randn(4, 3)
    q = LossAwareQuantizer(bits=2)
    assert not q.initialized
    first = q(w)                                        # first use: exact D = I optimum
    assert q.initialized and torch.isin(first, q.alpha * torch.tensor([-1.0, 0.0, 1.0])).all()
    q.requantize(w, torch.rand(4, 3) + 0.1)
    fresh = LossAwareQuantizer(bits=2)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh(w + 1), q(w))


def test_binarize_with_lossaware_and_bad_options():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    names = binarize_(model, QuantConfig(weight_quantizer="lossaware", weight_bits=4,
                                         keep_first=False, keep_last=False,
                                         quantizer_options={"levels": "log"}))
    assert names == ["0", "1"] and isinstance(model[0], QLinear)
    assert model[0].weight_quantizer.levels == "log"
    out = model(torch.randn(3, 4))
    assert out.shape == (3, 2)
    with pytest.raises(ValueError, match="estimator"):
        LossAwareQuantizer(bits=1, estimator="clipped_ste")
    with pytest.raises(ValueError, match="levels"):
        LossAwareQuantizer(bits=4, levels="cubic")
    with pytest.raises(ValueError, match="bits"):
        LossAwareQuantizer(bits=3)
    with pytest.raises(ValueError, match="levels 'pow2' for 8 bits; valid: linear"):
        LossAwareQuantizer(bits=8, levels="pow2")
    assert code_table(1).tolist() == [-1.0, 1.0]
