import pytest

from bnnopt.train.compare import build_arms, parse_method_spec


def test_method_spec_parsing():
    assert parse_method_spec("ste") == ("ste", {})
    assert parse_method_spec("fsg:layout=per-weight:beta=0.5") == (
        "fsg", {"layout": "per-weight", "beta": 0.5})
    with pytest.raises(ValueError, match="malformed method option 'beta'"):
        parse_method_spec("fsg:beta")


def test_arms_cross_optimizers_and_sweep():
    arms = build_arms(["ste", "fsg"], ["sgd", "adam"], "method_options.beta=0.1,0.3")
    assert len(arms) == 8
    assert arms[0].label == "ste[sgd][beta=0.1]"
    assert arms[0].overrides == ["optim.name=sgd", "method_options.beta=0.1"]
    with pytest.raises(ValueError, match="malformed sweep"):
        build_arms(["ste"], None, "beta")
