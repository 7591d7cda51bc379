"""configs/blaq_*.toml parse and validate as RunConfigs of the blaq method."""
from __future__ import annotations

from pathlib import Path

import pytest

from bnnopt.registry import METHODS
from bnnopt.train.config import RunConfig, load_toml

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs").glob("blaq_*.toml"))


def test_the_five_table_families_exist():
    names = {p.stem for p in CONFIGS}
    assert names == {"blaq_vgg_cifar10", "blaq_mlp_mnist", "blaq_lenet5_mnist", "blaq_svhn",
                     "blaq_resnet18_imagenet"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_and_builds_the_method(path):
    cfg = RunConfig.from_dict(load_toml(path)).validate()
    assert cfg.method == "blaq"
    method = METHODS.get(cfg.method)(**cfg.method_options)
    assert method.options["a"] in (0.6, 0.9)
    assert set(cfg.policy) == {"keep_first", "keep_last"}
