"""scikit-learn's embedded 8x8 handwritten digits (UCI optdigits test set, 1,797 images).

Offline by construction (the data ship inside scikit-learn), so this is the dataset of
``bnnopt demo``. Pixel values 0..16 are mapped to uint8 by ``round(v * 255 / 16)`` so
every dataset shares the same "uint8, divide by 255" convention. The train/test split
is stratified and deterministic: within each class, a ``numpy.random.default_rng(seed)``
permutation puts the first ``round(test_fraction * n_class)`` images in the test set.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from bnnopt.data._base import ArrayDataset, DataError
from bnnopt.registry import DATASETS

__all__ = ["read_digits", "split_stratified"]


def split_stratified(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_idx, test_idx) with ``round(test_fraction * n_c)`` test images per class c."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"invalid test_fraction {test_fraction!r}; valid: 0 < test_fraction < 1")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = round(test_fraction * idx.size)
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@DATASETS.register("digits", "scikit-learn's embedded 8x8 digits (1,797 images, offline): 10 classes")
def read_digits(root: str | os.PathLike | None = None, download: bool = False,
                test_fraction: float = 0.25, seed: int = 0) -> ArrayDataset:
    """Load the digits; ``root``/``download`` are accepted for a uniform signature and unused."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from e
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # [1797, 8, 8], values 0..16
    x = np.rint(images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, te = split_stratified(y, test_fraction, seed)
    pixels = x[tr].astype(np.float64) / 255.0
    mean, std = (float(pixels.mean()),), (float(pixels.std()),)
    return ArrayDataset("digits", torch.from_numpy(x[tr]), torch.from_numpy(y[tr]),
                        torch.from_numpy(x[te]), torch.from_numpy(y[te]),
                        tuple(str(i) for i in range(10)), mean, std, None,
                        "sklearn.datasets.load_digits", {"split_seed": seed, "test_fraction": test_fraction})
