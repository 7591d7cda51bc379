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
