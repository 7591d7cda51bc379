"""FSG: one step equals Eq. 9 (paper) / the official-code update, HGS, nets trained, resume."""
from __future__ import annotations

import copy

import pytest
import torch

from bnnopt.registry import METHODS

from .conftest import batches, dorefa_c, dorefa_pre, make, step, weights

SMALL = {"expand": 2, "d_state": 4, "d_conv": 2, "hidden": 8}


def _rms(hist):
    return torch.stack([g.reshape(-1) for g in hist]).pow(2).mean().sqrt()


def _hand_slow(slow, lre, hist_per_layer, layout, normalize="none"):
    """S per layer by hand: tokens [e_i, g_oldest/r, ..., g_newest/r], output x r."""
    out = []
    for i, hist in enumerate(hist_per_layer):  # hist: list of k gradients (weight shape)
        e = lre.weight[i, 0]
        r = _rms(hist) if normalize == "rms" else 1.0
        h = torch.stack([g.reshape(-1) for g in hist]) / r  # (k, ξ)
        if layout == "flat":
            seq = torch.cat((e.reshape(1), h.reshape(-1))).reshape(1, -1, 1)
            out.append(r * slow(seq)[0, -h.shape[1]:, 0])
        else:
            seq = torch.cat((e.expand(h.shape[1], 1), h.t()), dim=1).unsqueeze(-1)
            out.append(r * slow(seq)[:, -1, 0])
    return out


@pytest.mark.parametrize("variant,layout,normalize", [
    ("paper", "per-weight", "none"), ("paper", "flat", "none"),
    ("official", "per-weight", "none"), ("official", "flat", "none"),
    ("paper", "per-weight", "rms"), ("official", "flat", "rms"),
])
def test_one_step_equals_hand_computed_update(variant, layout, normalize):
    lr, hist_len = 0.05, 3
    form = "concat" if variant == "paper" else "product"  # the paper's concat form by hand
    model, method = make("fsg", lr=lr, variant=variant, layout=layout, history=hist_len,
                         normalize=normalize, meta_init="paper", fast_form=form, **SMALL)
    beta = 0.3 if variant == "paper" else 0.9
    data = batches(5)
    recorded = []
    for b in data[:4]:
        step(model, method, b)
        recorded.append([g.clone() for g in method._g])
    g, w_hat = method._g, method._w_hat
    fast = copy.deepcopy(method.meta_modules["fast"])
    slow = copy.deepcopy(method.meta_modules["slow"])
    lre = copy.deepcopy(method.meta_modules["lre"])
    before = weights(method)
    step(model, method, data[4])
    hist = [[r[i] for r in recorded[-hist_len:]] for i in range(len(before))]
    with torch.no_grad():
        S = _hand_slow(slow, lre, hist, layout, normalize)
    for i, (_, layer) in enumerate(method.layers):
        w, c = before[i], dorefa_c(before[i])
        r = _rms(hist[i]) if normalize == "rms" else 1.0
        with torch.no_grad():
            if variant == "paper":  # F = r fast(g/r, x), x = (Ŵ+1)/2 in [0, 1] (Eq. 1)
                x = 0.5 * w_hat[i].reshape(-1) + 0.5
                F = r * fast(torch.stack((g[i].reshape(-1) / r, x), 1))
            else:  # F = g * fast(u), u = (Ŵ + 1)/2
                F = g[i].reshape(-1) * fast(0.5 * w_hat[i].reshape(-1, 1) + 0.5)
        cF, s = c * F.reshape(w.shape), S[i].reshape(w.shape)
        if variant == "paper":
            expected = w - lr * cF + beta * s  # Eq. 9
            lookahead = expected
        else:
            expected = w - lr * cF  # official: the real update uses c*F only
            lookahead = w - lr * (beta * s + (1 - beta) * cF)
        assert torch.allclose(layer.weight.detach(), expected, atol=1e-12)
        assert torch.allclose(method._w_hat[i], dorefa_pre(lookahead), atol=1e-12)


@pytest.mark.parametrize("layout", ["per-weight", "flat"])
def test_meta_init_ste_first_generated_gradient_is_ste(layout):
    """meta_init="ste", concat form: fast-net product (1, 0), slow read-out 0, so G = c ⊙ g."""
    model, method = make("fsg", lr=0.05, layout=layout, meta_init="ste", history=2,
                         fast_form="concat", **SMALL)
    data = batches(2)
    step(model, method, data[0])
    g, before = method._g, weights(method)
    step(model, method, data[1])
    for i, (_, layer) in enumerate(method.layers):
        grad = dorefa_c(before[i]) * g[i]
        assert torch.allclose(layer.weight.grad, grad, rtol=1e-6, atol=1e-12)
        assert torch.allclose(layer.weight.detach(), before[i] - 0.05 * grad, atol=1e-12)
    # the zeroed read-out is trained at once (its gradient is not blocked)
    assert method.meta_modules["slow"].mamba.out_proj.weight.abs().sum() > 0


def test_meta_init_ste_official_fast_net_is_g_times_what_plus_one():
    model, method = make("fsg", lr=0.05, variant="official", meta_init="ste", history=2, **SMALL)
    u = torch.rand(7, 1, dtype=torch.float64)
    assert torch.allclose(method.meta_modules["fast"](u), 2 * u[:, 0])  # (Ŵ+1) = 2u


def test_first_step_is_ste_and_meta_nets_trained():
    model, method = make("fsg", history=2, **SMALL)
    ref_model, ref = make("fcgrad")  # same seed, same tiny model: its first step is STE
    data = batches(3)
    step(model, method, data[0])
    step(ref_model, ref, data[0])
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)
    for b in data[1:]:
        snap = {k: p.detach().clone() for k, p in method.meta_modules.named_parameters()}
        step(model, method, b)
    for name, p in method.meta_modules.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert not torch.equal(p.detach(), snap[name]), name


@pytest.mark.parametrize("length", [1, 3])
def test_hgs_order_and_length_after_1_lm1_l_lp3_steps(length):
    model, method = make("fsg", history=length, **SMALL)
    recorded = []
    checks = {1, max(length - 1, 1), length, length + 3}
    for t, b in enumerate(batches(length + 3), start=1):
        step(model, method, b)
        recorded.append([g.clone() for g in method._g])
        if t in checks:
            k = min(t, length)
            for i, buf in enumerate(method.hgs):
                expected = torch.stack([r[i].reshape(-1) for r in recorded[-k:]])
                assert len(buf) == k
                assert torch.equal(buf.sequence(), expected)


@pytest.mark.parametrize("options", [
    {"layout": "per-weight"}, {"layout": "flat", "variant": "official"},
    {"slow_net": "lstm", "slow_net_options": {}},
    {"slow_net": "lstmfc", "variant": "official", "slow_net_options": {"hidden": 6}},
    {"d_model": 2, "fast_form": "product"},
])
def test_state_dict_round_trip_gives_identical_next_steps(options):
    data = batches(6, cnn=True)
    model, method = make("fsg", cnn=True, history=3, **SMALL, **options)
    for b in data[:4]:
        step(model, method, b)
    saved_model = copy.deepcopy(model.state_dict())
    saved = method.state_dict()
    for b in data[4:]:
        step(model, method, b)
    other_model, other = make("fsg", cnn=True, seed=5, meta_seed=99, history=3, **SMALL,
                              **options)
    other_model.load_state_dict(saved_model)
    other.load_state_dict(saved)
    for b in data[4:]:
        step(other_model, other, b)
    for (k, a), b in zip(model.state_dict().items(), other_model.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(method.meta_modules.parameters(), other.meta_modules.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("optim", ["sgdm", "adam"])
def test_tiny_cnn_with_base_optimizers(optim):
    model, method = make("fsg", cnn=True, optim=optim, lr=0.01, history=2, **SMALL)
    assert len(method.hgs) == 3  # both convs and the linear layer binarized
    losses = [step(model, method, b).loss for b in batches(3, cnn=True)]
    assert all(torch.isfinite(l) for l in losses)
    assert [buf.numel for buf in method.hgs] == [w.numel() for w in weights(method)]


def test_defaults_and_bad_options():
    paper, official = METHODS.get("fsg")(), METHODS.get("fsg")(variant="official")
    assert (paper.options["history"], paper.options["beta"], paper.options["fast_lr"]) == \
        (6, 0.3, 1e-3)
    assert (official.options["history"], official.options["beta"],
            official.options["fast_lr"]) == (5, 0.9, 1e-2)
    sizes = ("layout", "expand", "d_state", "d_conv", "normalize", "meta_init")
    assert [paper.options[k] for k in sizes] == ["per-weight", 1, 4, 8, "rms", "ste"]  # cpu
    full = METHODS.get("fsg")(preset="paper")
    assert [full.options[k] for k in sizes] == ["flat", 100, 16, 8, "none", "paper"]
    assert METHODS.get("fsg")(preset="paper", expand=2).options["expand"] == 2
    bad = [({"variant": "x"}, "variant 'x'; valid: paper, official"),
           ({"layout": "grid"}, "layout 'grid'; valid: flat, per-weight"),
           ({"slow_net": "gru"}, "slow_net 'gru'; valid: mamba, lstm"),
           ({"preset": "gpu"}, "preset 'gpu'; valid: cpu, paper"),
           ({"normalize": "l2"}, "normalize 'l2'; valid: none, rms"),
           ({"meta_init": "zero"}, "meta_init 'zero'; valid: paper, ste"),
           ({"history": 0}, "history 0"), ({"beta": 1.5}, "beta 1.5"),
           ({"expand": 0}, "expand 0"), ({"fast_lr": 0}, "fast_lr 0"),
           ({"foo": 1}, "unknown option 'foo'")]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            METHODS.get("fsg")(**options)


def test_docstring_table_of_variant_and_preset_is_what_runs():
    """Every row of the variant x preset table in the fsg docstring equals the resolved options."""
    import bnnopt.methods.learned.fsg as fsg_module

    lines = [ln for ln in fsg_module.__doc__.splitlines() if ln.startswith(("paper  ", "official  "))]
    assert len(lines) == 4
    keys = ("variant", "preset", "layout", "expand", "d_state", "d_conv", "normalize", "meta_init",
            "history", "beta", "fast_lr", "first_step", "adam_eps", "bias_lookahead")
    for line in lines:
        cells = line.replace("(*)", "").split()
        assert len(cells) == len(keys), line
        given = {"variant": cells[0]}
        if "(*)" not in line:
            given["preset"] = cells[1]
        opts = METHODS.get("fsg")(**given).options
        for key, cell in zip(keys, cells):
            value = opts[key]
            expected = {"true": True, "false": False}.get(cell, cell)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                expected = float(cell)
            assert value == expected, (line, key)
