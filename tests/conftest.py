"""Fixtures shared by every test area."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

# tests/conftest.py -> parents[1] is the repository root; the read-only shared
# data (CIFAR-10 / MNIST subsets, pretrained checkpoints) sits beside it.
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """Path to the ``shared`` directory beside the repo root; skips when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data directory not found at {SHARED.resolve()}")
    return SHARED.resolve()


def pytest_configure(config):
    """The suite's models are tiny: one torch thread is as fast and avoids the thread
    pool's spin-waiting when the machine is busy (results never depend on it)."""
    torch.set_num_threads(1)
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one; "
                                       "bench/gpu_check.sh runs them with -m cuda)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


class Kill(Exception):
    """Stands for the process dying right after an epoch's checkpoint was written."""


@pytest.fixture
def full_and_killed():
    """``run(config, full_dir, killed_dir, after_epoch=1) -> (full_trainer, full_summary)``.

    Trains ``config`` to the end in ``full_dir``, then again in ``killed_dir``, where
    the run dies (an exception from the epoch callback) right after epoch
    ``after_epoch`` was checkpointed; the test then resumes ``killed_dir``.
    """
    from bnnopt.train import Trainer

    def kill(trainer, row, after_epoch):
        if row["epoch"] == after_epoch:
            raise Kill

    def run(config, full_dir, killed_dir, after_epoch=1):
        full = Trainer(copy.deepcopy(config), full_dir)
        summary = full.run()
        killed = Trainer(copy.deepcopy(config), killed_dir,
                         callbacks=[lambda t, row: kill(t, row, after_epoch)])
        with pytest.raises(Kill):
            killed.run()
        return full, summary

    return run
