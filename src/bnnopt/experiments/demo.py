"""``bnnopt demo``: the embedded default job, offline, in well under two minutes.

Trains a small binarized MLP (hidden layers binarized, first and last layer full
precision) on scikit-learn's embedded 8x8 digits with several gradient methods,
one seed each, then prints the comparison table and saves the loss/accuracy plot.

The methods (``DEMO_METHODS``):

fp     full precision: nothing binarized -- the accuracy ceiling the others chase
ste    weights binarized with DoReFa, gradient by the straight-through estimator
irnet  sign weights, gradient by IR-Net's error-decay estimator (EDE)

A finished demo in ``out`` is reused only if its config equals this one (e.g.
the same ``--epochs``); otherwise it is trained again.
"""
from __future__ import annotations

from pathlib import Path

from bnnopt.experiments.compare import build_arms, run_compare
from bnnopt.train.config import RunConfig
from bnnopt.runs.io import check_output_dir
from bnnopt.experiments.protocols import protocol_config

DEMO_METHODS = ("fp", "ste", "irnet")
METHOD_NOTES = {
    "fp": "full precision, nothing binarized: the accuracy ceiling",
    "ste": "binary weights (DoReFa), straight-through estimator gradient",
    "irnet": "binary sign weights, IR-Net error-decay estimator (EDE) gradient",
}


def run_demo(out: str | Path = "runs/demo", epochs: int | None = None,
             methods: tuple[str, ...] = DEMO_METHODS, log=print) -> dict:
    cfg = RunConfig.from_dict(protocol_config("digits"))
    if epochs is not None:
        cfg.epochs = epochs
    cfg.device = "cpu"
    cfg.validate()
    out = check_output_dir(out)
    log(f"bnnopt demo: {len(methods)} methods on an MLP (hidden layers binarized, first and "
        f"last layer full precision), scikit-learn digits, {cfg.epochs} epochs, one seed")
    for name in methods:
        log(f"  {name:<6} {METHOD_NOTES.get(name, '')}")
    report = run_compare(cfg, build_arms(list(methods)), seeds=1, out=out, log=log)
    log(terminal_text((out / "report.md").read_text()))
    log(f"plot (train loss, test accuracy per epoch): {out / 'curves.png'}")
    return report


def terminal_text(markdown: str) -> str:
    """The report for a terminal: markdown image lines dropped (the plot path is printed)."""
    return "\n".join(line for line in markdown.splitlines()
                     if not line.lstrip().startswith("![")).rstrip() + "\n"
