"""Named protocols: partial RunConfigs for the experiments this project runs.

A protocol fixes the model, data and initialisation of a comparison so that
methods are compared fairly; ``bnnopt compare --protocol NAME`` and
``bnnopt train --protocol NAME`` start from it. Paper-scale configurations live
in ``configs/*.toml`` instead.

cifar10-subset   ResNet-20 from the official FSG full-precision checkpoint,
                 binarized (first conv and last linear FP), fine-tuned on the
                 5,085 shared CIFAR-10 training images, tested on the 1,017
                 shared test images.
mnist-subset     4-layer MLP on the shared MNIST files (17,435 train / 10,000 test).
mnist-lenet      ALQ's LeNet-5 (20C5-MP-50C5-MP-500-10, ``lenet5_alq``; the network
                 of BLAQ's Table 4) on the shared MNIST files; sign-weight methods
                 need ``--set model_options.batch_norm=true``. The classic ``lenet5``
                 (6C5-16C5-120-84 with BN) is ``--set model=lenet5``.
digits           a small MLP on scikit-learn's embedded 8x8 digits (the demo; no files).
lm-tiny          ``gpt_tiny`` byte-level language model (context 128) on tiny Shakespeare
                 from the shared directory when present, else on the 400,000-byte slice
                 shipped with bnnopt; the attention and MLP projections are quantized,
                 embeddings and output head stay float; metric bits per character.

The shared directory is found from ``$BNNOPT_SHARED`` (an error if it has no
``data/``), else a ``shared`` directory beside the current directory or beside
any of its parents.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from bnnopt.registry import PROTOCOLS


def find_shared() -> Path:
    """Locate the read-only ``shared`` directory with ``data/`` and ``pretrained/``."""
    env = os.environ.get("BNNOPT_SHARED")
    if env:  # an explicit choice: never fall back silently to another directory
        if not (Path(env) / "data").is_dir():
            raise ValueError(f"BNNOPT_SHARED={env} has no data/ directory; point it at the "
                             "shared directory (with data/ and pretrained/) or unset it")
        return Path(env)
    candidates = []
    here = Path.cwd().resolve()
    for base in (here, *here.parents):
        candidates += [base / "shared", base.parent / "shared"]
    for cand in candidates:
        if (cand / "data").is_dir():
            return cand
    looked = ", ".join(str(c) for c in candidates[:4])
    raise ValueError(
        "this protocol needs the shared data subsets (a 'shared' directory with data/ and "
        f"pretrained/); looked in {looked} ...; set BNNOPT_SHARED=/path/to/shared"
    )


def _shared_protocol(name: str, description: str, build: Callable[[Path], dict[str, Any]]):
    def protocol() -> dict[str, Any]:
        return {"protocol": name, **build(find_shared())}

    protocol.__doc__ = description
    PROTOCOLS.register(name, description)(protocol)


_shared_protocol(
    "cifar10-subset",
    "ResNet-20 from the official FP checkpoint, binarized, on the shared CIFAR-10 subset",
    lambda shared: {
        "model": "resnet20", "dataset": "cifar10", "data_root": str(shared / "data"),
        "init": str(shared / "pretrained" / "resnet20-cifar10-fp.pth"),
        "policy": {"keep_first": True, "keep_last": True},
        "optim": {"name": "adam", "lr": 1e-3}, "epochs": 8, "batch_size": 128,
        "schedule": "cosine",
    },
)

def _mnist(model: str):
    return lambda shared: {
        "model": model, "dataset": "mnist", "data_root": str(shared / "data"),
        "policy": {"keep_first": False, "keep_last": False},
        "optim": {"name": "adam", "lr": 1e-3}, "epochs": 10, "batch_size": 100,
        "schedule": "cosine", "augment": False,
    }


_shared_protocol("mnist-subset",
                 "4-layer MLP on the shared MNIST subset (17,435 train / 10,000 test)",
                 _mnist("mlp"))
_shared_protocol("mnist-lenet",
                 "ALQ's LeNet-5 (BLAQ Table 4) on the shared MNIST subset (17,435 train / "
                 "10,000 test)",
                 _mnist("lenet5_alq"))


@PROTOCOLS.register("digits", "small MLP on scikit-learn's embedded 8x8 digits (no files needed)")
def digits_protocol() -> dict[str, Any]:
    return {
        "protocol": "digits", "model": "mlp", "dataset": "digits",
        "model_options": {"hidden": 256},
        "policy": {"keep_first": True, "keep_last": True},
        "optim": {"name": "adam", "lr": 3e-3}, "epochs": 15, "batch_size": 64,
        "schedule": "cosine", "augment": False,
    }


@PROTOCOLS.register("lm-tiny", "gpt_tiny byte-level LM on tiny Shakespeare (shared file, else "
                               "the embedded slice); projections quantized, bits per character")
def lm_tiny_protocol() -> dict[str, Any]:
    try:
        shared = find_shared()
    except ValueError:
        shared = None
    if shared is not None and (shared / "data" / "tinyshakespeare" / "input.txt").is_file():
        data = {"dataset": "tinyshakespeare", "data_root": str(shared / "data")}
    else:
        data = {"dataset": "shakespeare_embedded"}
    return {
        "protocol": "lm-tiny", "model": "gpt_tiny", **data,
        "model_options": {"block_size": 128},
        "policy": {"keep_first": False, "keep_last": True},
        "optim": {"name": "adam", "lr": 2e-3}, "epochs": 3, "batch_size": 32,
        "train_limit": 1000, "test_limit": 100,
        "schedule": "cosine", "augment": False,
    }


def protocol_config(name: str) -> dict[str, Any]:
    """The partial config of protocol ``name`` (ValueError listing valid names)."""
    return PROTOCOLS.get(name)()
