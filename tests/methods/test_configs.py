"""Typed method configs: they resolve options exactly as the methods did before them."""
import json
import warnings
from pathlib import Path

import pytest

from bnnopt.methods.bop import BopConfig
from bnnopt.methods.estimator_config import EstimatorConfig, FPConfig, RBNNConfig
from bnnopt.methods.learned.config import FCGradConfig, FSGConfig, LSTMFCConfig, MultiFCConfig
from bnnopt.methods.lossaware.config import BLAQConfig, LABConfig, LAQConfig
from bnnopt.registry import METHODS

# Method.resolved_options() of the option-resolution code before typed configs, for
# every method x variant x preset and some explicit options (and the --dry-run of a
# few configs/*.toml), recorded from that code.
RECORDED = json.loads((Path(__file__).parent / "test_configs_resolved.json").read_text())
CLASSES = {"fp": FPConfig, "rbnn": RBNNConfig, "fcgrad": FCGradConfig, "multifc": MultiFCConfig,
           "lstmfc": LSTMFCConfig, "fsg": FSGConfig, "lab": LABConfig, "laq": LAQConfig,
           "blaq": BLAQConfig, "bop": BopConfig}


def config_of(method, options):
    if method in CLASSES:
        return CLASSES[method].from_options(options)
    return EstimatorConfig.from_options(options, method=method)


def as_json(options):
    return json.loads(json.dumps(options))


def case_id(case):
    return case["method"] + ":" + ",".join(f"{k}={v}" for k, v in sorted(case["options"].items()))


@pytest.mark.parametrize("case", RECORDED["cases"], ids=case_id)
def test_config_reproduces_the_recorded_resolution(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        config = config_of(case["method"], case["options"])
        method = METHODS.get(case["method"])(**case["options"])
    assert as_json(config.to_options()) == with_added_options(case["method"], case["resolved"])
    assert config.to_options() == method.resolved_options()


def with_added_options(method: str, recorded: dict) -> dict:
    """The recording plus the options added to ``method`` since, each at the value that
    reproduces the recorded behaviour (``Method.added_options``)."""
    added = METHODS.get(method).added_options
    return {**{k: v for k, v in added.items() if k not in recorded}, **recorded}


def test_every_registered_method_is_covered():
    assert {case["method"] for case in RECORDED["cases"]} == set(METHODS.names())


def test_dry_run_of_configs_prints_the_recorded_values(capsys):
    from bnnopt.cli.main import main

    for path, recorded in RECORDED["dry_run"].items():
        assert main(["train", "--config", str(Path(__file__).parents[2] / path), "--dry-run"]) == 0
        printed = json.loads(capsys.readouterr().out)["config"]
        assert printed["method"] == recorded["method"]
        assert printed["method_options"] == with_added_options(recorded["method"],
                                                               recorded["method_options"]), path
        assert printed["policy"] == recorded["policy"], path


def test_presets_are_complete_and_resolution_is_pure_and_idempotent():
    import dataclasses

    presets = [FSGConfig.cpu(), FSGConfig.paper(), FSGConfig.official(),
               FSGConfig.of("official", "cpu"), FCGradConfig.official(), MultiFCConfig.paper(),
               LSTMFCConfig.official(), LABConfig(), LAQConfig(), BLAQConfig(), RBNNConfig(),
               EstimatorConfig.preset("irnet")]
    for config in presets:
        # every field has a value (no None left to be decided elsewhere), except the
        # options whose None is itself a choice
        meaningful_none = {"meta_seed", "first_bits", "last_bits", "layer_bits", "clip"}
        for f in dataclasses.fields(config):
            assert getattr(config, f.name) is not None or f.name in meaningful_none, f.name
        if type(config) is EstimatorConfig:
            again = EstimatorConfig.from_options(config.to_options(), method="irnet")
        else:
            again = type(config).from_options(config.to_options())
        assert again == config  # resolving the resolved options changes nothing
    assert FSGConfig() == FSGConfig.cpu()
    official = FSGConfig.official()
    assert (official.history, official.beta, official.fast_lr, official.first_step,
            official.adam_eps, official.bias_lookahead) == (5, 0.9, 1e-2, "skip", "official", True)
    assert FSGConfig.official(history=3).history == 3
    options = {"variant": "official", "slow_net_options": {"hidden": 20}, "slow_net": "lstm"}
    before = json.dumps(options)
    config = FSGConfig.from_options(options)
    config.slow_net_options["hidden"] = 7  # the config holds its own copy
    assert json.dumps(options) == before
    assert FSGConfig.from_options(options) == FSGConfig.from_options(options)


def test_bad_values_name_the_value_and_the_valid_ones():
    cases = [(lambda: FSGConfig.from_options({"preset": "gpu"}), "preset 'gpu'; valid: cpu, paper"),
             (lambda: FSGConfig.official(foo=1), "unknown option 'foo' for method 'fsg'"),
             (lambda: FSGConfig.cpu().replace(layout="grid"), "layout 'grid'; valid: flat"),
             (lambda: LAQConfig(bits=3), "bits 3; valid: 1, 2, 4"),
             (lambda: LABConfig.from_options({"max_iter": 3}), "unknown option 'max_iter'"),
             (lambda: BLAQConfig(a=2), "invalid a 2"),
             (lambda: RBNNConfig(rotation_update=0), "rotation_update 0"),
             (lambda: EstimatorConfig.preset("nope"), "estimator method 'nope'; valid: ste"),
             (lambda: FPConfig.from_options({"bits": 1}), "takes no options")]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()


def test_deprecated_values_warn_with_the_replacement_at_the_callers_line():
    for make, match in [(lambda: FSGConfig(fast_form="concat"), "use fast_form 'product'"),
                        (lambda: FSGConfig(what_range="symmetric", meta_init="paper"),
                         "use what_range 'unit'"),
                        (lambda: METHODS.get("lstmfc")(grad_norm="ste"),
                         "use grad_norm 'ste-detached'")]:
        with pytest.warns(DeprecationWarning, match=match) as record:
            make()
        assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FSGConfig.cpu(grad_norm="ste-detached")  # the replacements do not warn
        FSGConfig.paper()


def test_policy_keys_are_defined_once_and_checked_by_every_family_and_the_run_config():
    import dataclasses

    from bnnopt.methods.config import POLICY_KEYS, check_policy
    from bnnopt.nn import QuantConfig
    from bnnopt.train import RunConfig

    assert set(POLICY_KEYS) <= {f.name for f in dataclasses.fields(QuantConfig)}
    root = Path(__file__).parents[2] / "src"
    defined = [p for p in root.rglob("*.py") if "POLICY_KEYS = " in p.read_text(encoding="utf-8")
               or "POLICY_KEYS: " in p.read_text(encoding="utf-8")]
    assert [p.relative_to(root).as_posix() for p in defined] == ["bnnopt/methods/config.py"]
    check_policy({"keep_first": False, "act_bits": 1})
    for name in ("ste", "fcgrad", "laq"):
        with pytest.raises(ValueError, match="unknown policy key 'keep_middle'"):
            METHODS.get(name)().quant_config({"keep_middle": True})
    with pytest.raises(ValueError, match="unknown policy key 'keep_middle'; valid keys: keep_first"):
        RunConfig(policy={"keep_middle": True}).validate()
