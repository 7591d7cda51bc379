"""QuantConfig.validate: bad names and values raise ValueErrors naming them and the valid ones."""
from __future__ import annotations

import pytest

from bnnopt.nn import QuantConfig, binarize_
from torch import nn


def _msg(**kwargs):
    with pytest.raises(ValueError) as err:
        QuantConfig(**kwargs).validate()
    return str(err.value)


def test_defaults_are_valid_and_round_trip():
    cfg = QuantConfig().validate()
    assert (cfg.weight_quantizer, cfg.weight_bits, cfg.estimator) == ("dorefa", 1, "ste")
    assert cfg.act_quantizer is None and cfg.effective_act_bits is None
    assert cfg.keep_first and cfg.keep_last
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    assert QuantConfig(act_quantizer="sign").validate().effective_act_bits == 1


def test_unknown_names():
    m = _msg(weight_quantizer="xnorr")
    assert "'xnorr'" in m and all(n in m for n in ("bwn", "dorefa", "sign", "uniform"))
    m = _msg(estimator="sttte")
    assert "'sttte'" in m and all(n in m for n in ("ste", "clipped_ste", "ede", "reste"))
    m = _msg(act_quantizer="relu")
    assert "'relu'" in m and "dorefa, sign" in m
    m = _msg(act_quantizer="sign", act_estimator="nope")
    assert "'nope'" in m and "approx_sign" in m


@pytest.mark.parametrize("bits", [0, 3, -1, 16, 1.5])
def test_bits_not_supported(bits):
    m = _msg(weight_bits=bits)
    assert f"invalid bits {bits!r}" in m and "1, 2, 4, 8" in m


def test_other_bad_values():
    assert "valid: 1" in _msg(weight_quantizer="bwn", weight_bits=2)
    m = _msg(weight_bits=2, estimator="approx_sign")
    assert "'approx_sign'" in m and "ste, clipped_ste" in m
    assert "invalid bits 3 for activation quantizer 'dorefa'; valid: 2, 4, 8" in _msg(
        act_quantizer="dorefa", act_bits=3)
    assert "act_bits 4" in _msg(act_bits=4)
    assert "include regex '(('" in _msg(include="((")
    assert "keep_first 'yes'" in _msg(keep_first="yes")
    assert "'bogus'" in _msg(estimator="ede", estimator_options={"bogus": 1})
    assert "t_min" in _msg(estimator="ede", estimator_options={"t_min": -1.0})
    with pytest.raises(ValueError, match="'weight_bitz'.*weight_bits"):
        QuantConfig.from_dict({"weight_bitz": 1})


def test_binarize_validates_before_touching_the_model():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="'foo'"):
        binarize_(model, QuantConfig(weight_quantizer="foo"))
    assert all(type(m) is nn.Linear for m in model)


def test_act_quantizer_none_string_means_float_activations():
    cfg = QuantConfig(act_quantizer="none").validate()
    assert cfg.act_quantizer is None and cfg.effective_act_bits is None


# -- objects wherever names are ---------------------------------------------------------
import torch  # noqa: E402

from bnnopt.nn import quantized_layers, set_progress  # noqa: E402
from bnnopt.quant import (BWNQuantizer, DoReFaQuantizer, EDEEstimator, SignActivation,  # noqa: E402
                          SignQuantizer, UniformQuantizer, make_act_quantizer, make_estimator,
                          make_weight_quantizer)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))


def _swapped(cfg):
    model = _mlp()
    binarize_(model, cfg)
    return model, [layer for _, layer in quantized_layers(model)]


def test_objects_and_classes_build_the_same_layers_as_names():
    x = torch.randn(3, 4)
    by_name, _ = _swapped(QuantConfig(weight_quantizer="bwn", estimator="ede", keep_first=False,
                                      estimator_options={"t_max": 5.0}, act_quantizer="sign",
                                      act_estimator="approx_sign",
                                      quantizer_options={"per_channel": True}))
    by_class, layers = _swapped(QuantConfig(
        weight_quantizer=BWNQuantizer, estimator=EDEEstimator, keep_first=False,
        estimator_options={"t_max": 5.0}, act_quantizer=SignActivation,
        act_estimator=make_estimator("approx_sign"), quantizer_options={"per_channel": True}))
    template = BWNQuantizer(estimator=EDEEstimator(t_max=5.0), per_channel=True)
    by_object, _ = _swapped(QuantConfig(weight_quantizer=template, keep_first=False,
                                        act_quantizer=SignActivation(estimator="approx_sign")))
    for model in (by_class, by_object):
        for p in (0.0, 0.7):
            for m in (by_name, model):
                set_progress(m, p)
            assert torch.equal(model(x), by_name(x))
            ga = torch.autograd.grad(model(x).sum(), list(model.parameters()))
            gb = torch.autograd.grad(by_name(x).sum(), list(by_name.parameters()))
            assert all(torch.equal(a, b) for a, b in zip(ga, gb))
    assert layers[0].weight_quantizer.estimator.t_max == 5.0 and layers[0].weight_quantizer.per_channel


def test_every_layer_gets_its_own_copy_of_an_object():
    template = SignQuantizer(estimator=EDEEstimator())
    act = SignActivation(estimator=EDEEstimator())
    est = EDEEstimator()
    for cfg in (QuantConfig(weight_quantizer=template, keep_first=False, keep_last=False,
                            act_quantizer=act),
                QuantConfig(weight_quantizer="sign", estimator=est, keep_first=False,
                            keep_last=False, act_quantizer="sign", act_estimator=est)):
        _, layers = _swapped(cfg)
        objects = [m for layer in layers for m in (layer.weight_quantizer, layer.act_quantizer,
                                                   layer.weight_quantizer.estimator,
                                                   layer.act_quantizer.estimator)]
        assert len({id(o) for o in objects}) == len(objects) == 12
        assert not any(o is t for o in objects for t in (template, act, est, template.estimator))
        layers[0].set_progress(1.0)
        assert layers[1].weight_quantizer.estimator.progress == 0.0
        assert template.estimator.progress == est.progress == act.estimator.progress == 0.0


def test_instance_fixes_bits_and_estimator():
    q = make_weight_quantizer(DoReFaQuantizer(bits=2, estimator="clipped_ste"))
    assert (q.bits, q.estimator.name) == (2, "clipped_ste")
    _, layers = _swapped(QuantConfig(weight_quantizer=UniformQuantizer(bits=4), keep_first=False))
    assert [layer.bits for layer in layers] == [4, 4]
    assert QuantConfig(weight_quantizer=UniformQuantizer(bits=4), weight_bits=4).validate()
    m = _msg(weight_quantizer=UniformQuantizer(bits=4), weight_bits=2)
    assert "invalid bits 2" in m and "bits=4" in m and "\n" not in m
    m = _msg(weight_quantizer=SignQuantizer(), estimator="ede")
    assert "invalid estimator 'ede'" in m and "'ste'" in m
    assert "'per_channel'" in _msg(weight_quantizer=BWNQuantizer(), quantizer_options={"per_channel": True})
    assert make_act_quantizer(SignActivation(estimator="ede")).estimator.name == "ede"
    cfg = QuantConfig(act_quantizer=make_act_quantizer("dorefa", 4)).validate()
    assert cfg.effective_act_bits == 4 and cfg.make_act_quantizer().bits == 4
    assert "invalid bits 2" in _msg(act_quantizer=make_act_quantizer("dorefa", 4), act_bits=2)


@pytest.mark.parametrize("key, value, kind", [
    ("weight_quantizer", 42, "quantizer"),
    ("weight_quantizer", EDEEstimator, "quantizer"),
    ("estimator", nn.ReLU(), "estimator"),
    ("estimator", SignQuantizer, "estimator"),
    ("act_quantizer", SignQuantizer(), "activation quantizer"),
])
def test_bad_objects_name_the_value_and_the_valid_names(key, value, kind):
    m = _msg(**{key: value})
    assert m.startswith(f"invalid {kind} ") and "\n" not in m
    assert ("ReLU()" in m or "42" in m or "SignQuantizer" in m or "EDEEstimator" in m)
    assert "subclass or instance" in m
    valid = {"quantizer": "bwn, dorefa", "estimator": "approx_sign, clipped_ste",
             "activation quantizer": "dorefa"}[kind]
    assert valid in m
    with pytest.raises(ValueError, match="invalid options"):
        make_estimator(EDEEstimator(), t_max=3.0)
