"""Typed method configs: they resolve options exactly as the methods did before them."""
import json
import warnings
from pathlib import Path

import pytest

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
           "blaq": BLAQConfig}


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
    assert as_json(config.to_options()) == case["resolved"]
    assert config.to_options() == method.resolved_options()


def test_every_registered_method_is_covered():
    assert {case["method"] for case in RECORDED["cases"]} == set(METHODS.names())
