"""Fixtures shared by every test area."""
from __future__ import annotations

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
