"""configs/fsg_*.toml: every FSG table's config validates, and its compare command builds."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from bnnopt.cli.main import build_parser
from bnnopt.registry import METHODS
from bnnopt.experiments.compare import build_arms
from bnnopt.train.config import RunConfig, load_toml

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("fsg_*.toml"))


def test_every_fsg_table_and_figure_has_a_config():
    stems = {p.stem for p in CONFIGS}
    for table in ("table1_resnet20_cifar10", "table1_resnet32_cifar10", "table1_resnet44_cifar10",
                  "table2_resnet56_cifar100", "table2_resnet110_cifar100",
                  "table3_resnet44_cifar10", "table3_resnet56_cifar100",
                  "table4_resnet20_cifar10", "table4_resnet44_cifar10", "table4_resnet56_cifar100",
                  "table5_resnet56_cifar100", "fig2_resnet56_cifar100"):
        assert f"fsg_{table}" in stems


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_and_its_compare_commands_build(path):
    cfg = RunConfig.from_dict(load_toml(path)).validate()
    METHODS.get(cfg.method)(**cfg.method_options)
    commands = [line.lstrip("# ").strip() for line in path.read_text().splitlines()
                if line.lstrip("# ").startswith("bnnopt compare")]
    if "_table" not in path.stem and "_fig" not in path.stem:
        return
    assert commands, path
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.config == f"configs/{path.name}"
        arms = build_arms(args.methods.split(","), (args.optimizers or "").split(",")
                          if args.optimizers else None, args.sweep)
        for arm in arms:
            METHODS.get(arm.method)(**arm.method_options)  # every method spec is valid
