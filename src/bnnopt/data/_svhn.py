"""SVHN reader for the official cropped-digits MATLAB files (Netzer et al. 2011).

``train_32x32.mat`` / ``test_32x32.mat`` hold ``X`` as ``[32, 32, 3, N]`` uint8
(height, width, channel, sample) and ``y`` as ``[N, 1]`` with labels 1..10, where
10 stands for the digit 0; we return ``[N, 3, 32, 32]`` and ``y mod 10``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from bnnopt.data import _download
from bnnopt.data._base import ArrayDataset, DataError, candidate_dirs, missing_data_error, resolve_data_root
from bnnopt.registry import DATASETS

__all__ = ["read_svhn", "read_svhn_mat"]

#: Per-channel pixel mean / std of the SVHN training set (commonly used values).
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
_FILES = ("train_32x32.mat", "test_32x32.mat")


def read_svhn_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One .mat file -> (uint8 ``[N, 3, 32, 32]``, int64 ``[N]`` in 0..9)."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises many types (MatReadError, ValueError, zlib.error, ...)
        raise DataError(f"corrupt or truncated SVHN file {path}: {type(e).__name__}: {e}") from e
    if "X" not in mat or "y" not in mat:
        raise DataError(f"corrupt SVHN file {path}: variables {sorted(k for k in mat if not k.startswith('__'))} "
                        "lack 'X' or 'y'")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.dtype != np.uint8:
        raise DataError(f"corrupt SVHN file {path}: X is {x.dtype} {x.shape}, expected uint8 [H, W, 3, N]")
    if y.shape[0] != x.shape[3]:
        raise DataError(f"corrupt SVHN file {path}: {x.shape[3]} images but {y.shape[0]} labels")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() > 10):
        raise DataError(f"corrupt SVHN file {path}: labels span {y.min()}..{y.max()}, expected 1..10")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y % 10


@DATASETS.register("svhn", "SVHN cropped digits .mat files: 32x32 RGB, 10 classes (73k/26k)")
def read_svhn(root: str | os.PathLike | None = None, download: bool = False) -> ArrayDataset:
    """Read SVHN from ``<root>/svhn`` (or ``<root>``); label 10 in the files is digit 0."""
    root = resolve_data_root(root)
    dirs = candidate_dirs(root, ["svhn", "SVHN"])
    found = next((d for d in dirs if all((d / f).is_file() for f in _FILES)), None)
    if found is None and download:
        found = _download.download("svhn", root)
    if found is None:
        raise missing_data_error("svhn", ", ".join(_FILES), dirs, _download.download_hint("svhn", root))
    tr_x, tr_y = read_svhn_mat(found / _FILES[0])
    te_x, te_y = read_svhn_mat(found / _FILES[1])
    return ArrayDataset("svhn", torch.from_numpy(tr_x), torch.from_numpy(tr_y), torch.from_numpy(te_x),
                        torch.from_numpy(te_y), tuple(str(i) for i in range(10)), SVHN_MEAN, SVHN_STD,
                        None, str(found))
