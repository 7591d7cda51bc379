"""CIFAR-10 and CIFAR-100 readers for the official "python version" pickles.

Layout (Krizhevsky 2009): ``cifar-10-batches-py/{data_batch_1..5, test_batch,
batches.meta}`` and ``cifar-100-python/{train, test, meta}``. Each batch is a
protocol-2 pickle of a dict with byte-string keys; ``data`` is ``[N, 3072]`` uint8,
channel-major (1024 R, 1024 G, 1024 B, each row-major 32x32), so a plain reshape
gives ``[N, 3, 32, 32]``. ``N`` is whatever the file holds (the shared subset has
1,017 per batch), never the 10,000 that ``batches.meta`` claims.

Unpickling is restricted to the numpy array constructors that these files use, so a
foreign pickle cannot run code.
"""
from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from bnnopt.data._base import ArrayDataset, Augment, DataError, candidate_dirs, missing_data_error, resolve_data_root
from bnnopt.data._download import download, download_hint
from bnnopt.registry import DATASETS, choice

__all__ = ["read_cifar10", "read_cifar100", "read_cifar_batch"]

#: Normalisation used by the official FSG code (github two-tiger/FSG, utils/dataset.py)
#: and hence expected by its pretrained ResNets. (The std is the mean per-image std, not
#: the pixel std 0.247/0.243/0.261; we keep it because the checkpoints were trained with it.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
#: The official FSG code normalises CIFAR-100 with 0.5 / 0.5 per channel.
CIFAR100_MEAN = (0.5, 0.5, 0.5)
CIFAR100_STD = (0.5, 0.5, 0.5)

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name == "_reconstruct":
            for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return getattr(importlib.import_module(mod), name)
                except (ImportError, AttributeError):
                    continue
        return getattr(np, name)


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - restricted unpickler: any failure = damaged file
        # (found by property tests: a flipped byte can also give LookupError, OverflowError,
        # RecursionError, UnicodeDecodeError ...)
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise DataError(f"corrupt or truncated CIFAR file {path}: {type(e).__name__}: {msg}") from e
    if not isinstance(obj, dict):
        raise DataError(f"corrupt CIFAR file {path}: expected a dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def read_cifar_batch(path: str | os.PathLike, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 ``[N, 3, 32, 32]``, int64 ``[N]``); DataError naming the file."""
    path = Path(path)
    d = _load_pickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"corrupt CIFAR file {path}: keys {sorted(d)} lack 'data' or {label_key!r}")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"corrupt CIFAR file {path}: data is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    if labels.shape != (data.shape[0],):
        raise DataError(f"corrupt CIFAR file {path}: {data.shape[0]} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _names(meta: Path, key: str, n: int) -> tuple[str, ...]:
    if not meta.is_file():
        return tuple(str(i) for i in range(n))
    names = _load_pickle(meta).get(key)
    if not isinstance(names, list) or len(names) != n:
        raise DataError(f"corrupt CIFAR meta file {meta}: {key!r} should list {n} class names")
    return tuple(x.decode("latin1") if isinstance(x, bytes) else str(x) for x in names)


def _find(name: str, root: Path, folder: str, files: list[str], download_ok: bool) -> Path:
    dirs = candidate_dirs(root, [folder])
    for d in dirs:
        if all((d / f).is_file() for f in files):
            return d
    if download_ok:
        got = download(name, root)
        if all((got / f).is_file() for f in files):
            return got
    raise missing_data_error(name, ", ".join(files), dirs, download_hint(name, root))


def _to_dataset(name, tr, te, classes, mean, std, source) -> ArrayDataset:
    return ArrayDataset(
        name, torch.from_numpy(np.ascontiguousarray(tr[0])), torch.from_numpy(tr[1]),
        torch.from_numpy(np.ascontiguousarray(te[0])), torch.from_numpy(te[1]),
        classes, mean, std, Augment(pad=4, flip=True, pad_mode="zero"), str(source))


@DATASETS.register("cifar10", "CIFAR-10 python pickles: 32x32 RGB, 10 classes (50k/10k; any subset)")
def read_cifar10(root: str | os.PathLike | None = None, download: bool = False) -> ArrayDataset:
    """Read CIFAR-10 from ``<root>/cifar-10-batches-py`` (or ``<root>`` itself)."""
    root = resolve_data_root(root)
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    d = _find("cifar10", root, "cifar-10-batches-py", train_files + ["test_batch"], download)
    parts = [read_cifar_batch(d / f) for f in train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = read_cifar_batch(d / "test_batch")
    classes = _names(d / "batches.meta", "label_names", 10)
    return _to_dataset("cifar10", train, test, classes, CIFAR10_MEAN, CIFAR10_STD, d)


@DATASETS.register("cifar100", "CIFAR-100 python pickles: 32x32 RGB, 100 fine (or 20 coarse) classes")
def read_cifar100(root: str | os.PathLike | None = None, download: bool = False,
                  label_mode: str = "fine") -> ArrayDataset:
    """Read CIFAR-100 from ``<root>/cifar-100-python``; ``label_mode`` "fine" (100) or "coarse" (20)."""
    choice(label_mode, ("fine", "coarse"), "cifar100 label_mode")
    root = resolve_data_root(root)
    d = _find("cifar100", root, "cifar-100-python", ["train", "test"], download)
    key = f"{label_mode}_labels"
    train = read_cifar_batch(d / "train", key)
    test = read_cifar_batch(d / "test", key)
    n = 100 if label_mode == "fine" else 20
    classes = _names(d / "meta", f"{label_mode}_label_names", n)
    return _to_dataset("cifar100", train, test, classes, CIFAR100_MEAN, CIFAR100_STD, d)
