"""FSG paper forms: product fast-net M_f = φ_f(Ŵ)·g, Ŵ in [0, 1] (Eq. 1), d_model > 1 (Eq. 10-11)."""
import pytest
import torch

from bnnopt.methods.learned.slow_nets import MambaSlowNet
from bnnopt.registry import METHODS

from .conftest import batches, dorefa_c, make, step, weights

SMALL = {"expand": 2, "d_state": 2, "d_conv": 2, "history": 3}


def test_product_form_is_phi_of_what_times_g_by_hand():
    lr = 0.05
    model, method = make("fsg", lr=lr, fast_form="product", beta=0.0, meta_init="paper",
                         normalize="none", **SMALL)
    data = batches(4)
    for b in data[:3]:
        step(model, method, b)
    g, w_hat = method._g, method._w_hat
    layers = [layer.weight.detach().clone() for layer in method.meta_modules["fast"].layers]
    before = weights(method)
    step(model, method, data[3])
    for i, w in enumerate(before):
        x = 0.5 * w_hat[i].reshape(-1, 1) + 0.5  # Eq. 1: Ŵ in [0, 1]
        phi = x.t()
        for m in layers:  # φ_f: 3 bias-free linear layers, applied one by one
            phi = m @ phi
        F = phi.reshape(-1) * g[i].reshape(-1)
        expected = w - lr * dorefa_c(w) * F.reshape(w.shape)  # β = 0: W - η·c⊙F
        assert torch.allclose(weights(method)[i], expected, atol=1e-12)


def test_what_range_symmetric_feeds_the_old_input_and_options_are_checked():
    _, method = make("fsg", fast_form="concat", what_range="symmetric", **SMALL)
    g, w = torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) * 2 - 1
    fast = method.meta_modules["fast"]
    assert torch.allclose(method.fast_gradients(g, w, None), fast(torch.stack((g, w), 1)))
    opts = METHODS.get("fsg")().options
    # round 3: the product form became the paper variant's default (docs/results.md)
    assert (opts["fast_form"], opts["what_range"], opts["d_model"]) == ("product", "unit", 1)
    assert METHODS.get("fsg")(variant="official").options["fast_form"] == "product"
    for bad, msg in [({"fast_form": "sum"}, "fast_form 'sum'; valid: concat, product"),
                     ({"variant": "official", "fast_form": "concat"}, "variant 'official' has"),
                     ({"d_model": 0}, "invalid d_model 0"),
                     ({"d_model": 2, "slow_net": "lstm"}, "needs slow_net 'mamba'"),
                     ({"fast_form": "product", "what_range": "symmetric", "meta_init": "ste"},
                      "needs what_range 'unit'")]:
        with pytest.raises(ValueError, match=msg):
            METHODS.get("fsg")(**bad)


def test_meta_init_ste_product_form_starts_at_g_times_what_sym_plus_one():
    _, method = make("fsg", fast_form="product", meta_init="ste", **SMALL)
    g, w = torch.randn(7, dtype=torch.float64), torch.rand(7, dtype=torch.float64) * 2 - 1
    assert torch.allclose(method.fast_gradients(g, w, None), g * (w + 1), atol=1e-12)


def test_mamba_slow_net_d_model_shapes_prefix_and_gradcheck():
    torch.manual_seed(0)
    net = MambaSlowNet(d_model=3, d_state=2, d_conv=2, expand=2).double()
    assert net.w_a.weight.shape == (3, 1) and net.w_b.weight.shape == (1, 3)  # W_a 1xd, W_b dx1
    tokens = torch.randn(2, 4, 1, dtype=torch.float64, requires_grad=True)
    prefix = torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True)
    assert net(tokens, prefix).shape == (2, 5, 1) and net(tokens).shape == (2, 4, 1)
    assert torch.autograd.gradcheck(lambda t, p: net(t, p), (tokens, prefix), eps=1e-6, atol=1e-6)
    one = MambaSlowNet(d_model=1, d_state=2, d_conv=2, expand=2).double()
    assert not hasattr(one, "w_a")  # d = 1: today's net, no projections
    p1 = torch.randn(2, 1, 1, dtype=torch.float64)
    assert torch.equal(one(tokens, p1), one(torch.cat((p1, tokens), 1)))
    with pytest.raises(ValueError, match="prefix must be"):
        net(tokens, p1)


@pytest.mark.parametrize("layout", ["flat", "per-weight"])
def test_fsg_with_d_model_2_trains_and_slow_gradients_have_layer_shapes(layout):
    model, method = make("fsg", d_model=2, layout=layout, **SMALL)
    assert method.meta_modules["lre"].weight.shape == (len(method.layers), 2)
    data = batches(4)
    for b in data:
        step(model, method, b)
    hist = [buf.sequence() for buf in method.hgs]
    S = method.slow_gradients(hist, None)
    assert S.shape == (sum(w.numel() for w in weights(method)),)
    before = method.meta_modules["slow"].w_a.weight.detach().clone()
    step(model, method, batches(1, seed=9)[0])
    assert not torch.equal(before, method.meta_modules["slow"].w_a.weight.detach())
