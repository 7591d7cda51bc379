"""bnnopt: train binary and low-bit weight networks with every gradient method of FSG and BLAQ and their baselines.

Compare the methods fairly (validation tuning, seeds, Welch intervals) with
``bnnopt compare`` / :mod:`bnnopt.experiments.compare`.

Public API (curated)::

    from bnnopt import binarize_, QuantConfig, summary, METHODS, MODELS
"""
from __future__ import annotations

__version__ = "0.1.0"

from bnnopt.registry import (  # noqa: F401
    DATASETS,
    ESTIMATORS,
    METHODS,
    MODELS,
    OPTIMIZERS,
    PROTOCOLS,
    QUANTIZERS,
)


def __getattr__(name: str):
    # Lazy re-exports keep `import bnnopt` cheap and free of import cycles.
    lazy = {
        "binarize_": "bnnopt.nn",
        "QuantConfig": "bnnopt.nn",
        "QConv2d": "bnnopt.nn",
        "QLinear": "bnnopt.nn",
        "summary": "bnnopt.nn",
        "EstimatorSchedule": "bnnopt.quant",
        "Trainer": "bnnopt.train",
        "FSG": "bnnopt.methods.learned",
        "FCGrad": "bnnopt.methods.learned",
        "MultiFC": "bnnopt.methods.learned",
        "LSTMFC": "bnnopt.methods.learned",
        "load_packed": "bnnopt.export",
        "export_packed": "bnnopt.export",
        "packed_summary": "bnnopt.export",
        "LAB": "bnnopt.methods.lossaware",
        "LAQ": "bnnopt.methods.lossaware",
        "BLAQ": "bnnopt.methods.lossaware",
        "Bop": "bnnopt.methods.bop",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'bnnopt' has no attribute {name!r}")
