import pytest

from bnnopt.experiments.compare import build_arms, parse_method_spec


def test_method_spec_parsing():
    assert parse_method_spec("ste") == ("ste", {})
    assert parse_method_spec("fsg:layout=per-weight:beta=0.5") == (
        "fsg", {"layout": "per-weight", "beta": 0.5})
    with pytest.raises(ValueError, match="malformed method option 'beta'"):
        parse_method_spec("fsg:beta")


def test_none_is_a_string_choice_and_null_is_none():
    """normalize=none must reach FSG as "none", not as None (= "let the preset choose")."""
    from bnnopt.registry import METHODS
    from bnnopt.train.config import RunConfig

    name, options = parse_method_spec("fsg:normalize=none:meta_init=paper:meta_seed=null")
    assert options == {"normalize": "none", "meta_init": "paper", "meta_seed": None}
    assert METHODS.get(name)(**options).options["normalize"] == "none"
    assert METHODS.get("fsg")().options["normalize"] == "rms"  # the preset's choice
    cfg = RunConfig(model="mlp", dataset="digits").set("method_options.normalize=none")
    assert cfg.method_options == {"normalize": "none"}
    assert cfg.set("init=none").init is None and cfg.set("init=null").init is None


def test_arms_cross_optimizers_and_sweep():
    arms = build_arms(["ste", "fsg"], ["sgd", "adam"], "method_options.beta=0.1,0.3")
    assert len(arms) == 8
    assert arms[0].label == "ste[sgd][beta=0.1]"
    assert arms[0].overrides == ["optim.name=sgd", "method_options.beta=0.1"]
    with pytest.raises(ValueError, match="malformed sweep"):
        build_arms(["ste"], None, "beta")


def test_optimizer_specs_set_optim_keys():
    from bnnopt.experiments.compare import arm_config
    from bnnopt.train.config import RunConfig

    arms = build_arms(["ste"], ["sgd:lr=0.05", "adam"])
    assert [a.label for a in arms] == ["ste[sgd:lr=0.05]", "ste[adam]"]
    base = RunConfig(model="mlp", dataset="digits", optim={"name": "adam", "lr": 1e-3})
    cfg = arm_config(base, arms[0], seed=1)
    assert cfg.optim == {"name": "sgd", "lr": 0.05} and cfg.seed == 1
    assert arm_config(base, arms[1], seed=0).optim == {"name": "adam", "lr": 1e-3}
