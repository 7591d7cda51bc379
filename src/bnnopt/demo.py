"""``bnnopt demo``: the embedded default job, offline, in well under two minutes.

Trains a small binarized MLP (hidden layers binarized, first and last layer full
precision) on scikit-learn's embedded 8x8 digits with several gradient methods,
one seed each, then prints the comparison table and saves the loss/accuracy plot.
"""
from __future__ import annotations

from pathlib import Path

from bnnopt.train.compare import build_arms, run_compare
from bnnopt.train.config import RunConfig
from bnnopt.train.io import check_output_dir
from bnnopt.train.protocols import protocol_config

DEMO_METHODS = ("fp", "ste", "irnet")


def run_demo(out: str | Path = "runs/demo", epochs: int | None = None,
             methods: tuple[str, ...] = DEMO_METHODS, log=print) -> dict:
    cfg = RunConfig.from_dict(protocol_config("digits"))
    if epochs is not None:
        cfg.epochs = epochs
    cfg.device = "cpu"
    cfg.validate()
    out = check_output_dir(out)
    report = run_compare(cfg, build_arms(list(methods)), seeds=1, out=out, log=log)
    log((out / "report.md").read_text())
    log(f"plot: {out / 'curves.png'}")
    return report
