"""MNIST and Fashion-MNIST readers for the IDX format (LeCun et al. 1998), gz or raw.

IDX header (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the
number of dimensions ``d``, then ``d`` uint32 sizes; the data follow, row-major.
Labels are ``idx1`` (magic 0x00000801, ``[N]``), images ``idx3`` (magic 0x00000803,
``[N, 28, 28]``). The header's ``N`` is trusted as long as the file holds exactly that
many bytes (the shared MNIST train files say 17,435); anything else is a DataError
naming the file.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from bnnopt.data._base import ArrayDataset, DataError, candidate_dirs, missing_data_error, resolve_data_root
from bnnopt.data._download import download, download_hint
from bnnopt.registry import DATASETS

__all__ = ["read_fashion_mnist", "read_idx", "read_mnist"]

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
#: Pixel mean / std of the 60k Fashion-MNIST training images.
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Parse an unsigned-byte IDX file (gzip detected by its magic bytes) into a uint8 array.

    ``ndim`` (1 for labels, 3 for images) is checked against the header when given.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"corrupt or truncated IDX file {path}: {type(e).__name__}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"not an IDX file {path}: bad magic number {raw[:4].hex() or 'empty'}")
    if raw[2] != 0x08:
        raise DataError(f"unsupported IDX file {path}: type code 0x{raw[2]:02x}, expected 0x08 (unsigned byte)")
    d = raw[3]
    if ndim is not None and d != ndim:
        raise DataError(f"wrong IDX file {path}: magic 0x{int.from_bytes(raw[:4], 'big'):08x} has {d} "
                        f"dimensions, expected {ndim} (0x{0x800 + ndim:08x})")
    header = 4 + 4 * d
    if len(raw) < header:
        raise DataError(f"truncated IDX file {path}: header needs {header} bytes, file has {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(d))
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "corrupt"
        raise DataError(f"{what} IDX file {path}: header says shape {shape} = {expected} bytes, "
                        f"file holds {found}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _locate(base: str, d: Path) -> Path | None:
    for name in (base + ".gz", base):
        if (d / name).is_file():
            return d / name
    return None


def _complete_dir(dirs: list[Path]) -> Path | None:
    """First folder holding all four files (each gz or raw), so a split is never mixed."""
    for d in dirs:
        if all(_locate(f, d) for pair in _FILES.values() for f in pair):
            return d
    return None


def _read_split(files: tuple[str, str], d: Path) -> tuple[np.ndarray, np.ndarray]:
    img_path, lab_path = _locate(files[0], d), _locate(files[1], d)
    images = read_idx(img_path, 3)
    labels = read_idx(lab_path, 1).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"mismatched IDX pair: {img_path} has {images.shape[0]} images, "
                        f"{lab_path} has {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"corrupt IDX labels {lab_path}: label {int(labels.max())} outside 0..9")
    return images[:, None], labels


def _read(name: str, folders: list[str], root, download_ok: bool, classes, mean, std) -> ArrayDataset:
    root = resolve_data_root(root)
    dirs = candidate_dirs(root, folders)
    d = _complete_dir(dirs)
    if d is None and download_ok:
        download(name, root)
        d = _complete_dir(dirs)
    if d is None:
        wanted = ", ".join(f + "[.gz]" for pair in _FILES.values() for f in pair)
        raise missing_data_error(name, wanted, dirs, download_hint(name, root))
    tr_x, tr_y = _read_split(_FILES["train"], d)
    te_x, te_y = _read_split(_FILES["test"], d)
    return ArrayDataset(name, torch.from_numpy(tr_x.copy()), torch.from_numpy(tr_y),
                        torch.from_numpy(te_x.copy()), torch.from_numpy(te_y),
                        classes, mean, std, None, str(d))


@DATASETS.register("mnist", "MNIST IDX files (gz or raw): 28x28 grey digits, 10 classes (60k/10k; any subset)")
def read_mnist(root: str | os.PathLike | None = None, download: bool = False) -> ArrayDataset:
    """Read MNIST from ``<root>/mnist``, ``<root>/MNIST/raw`` or ``<root>``."""
    return _read("mnist", ["mnist", "MNIST/raw", "MNIST"], root, download,
                 tuple(str(i) for i in range(10)), MNIST_MEAN, MNIST_STD)


@DATASETS.register("fashion_mnist", "Fashion-MNIST IDX files (gz or raw): 28x28 grey clothing, 10 classes")
def read_fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> ArrayDataset:
    """Read Fashion-MNIST from ``<root>/fashion_mnist``, ``<root>/FashionMNIST/raw`` or ``<root>``."""
    return _read("fashion_mnist", ["fashion_mnist", "fashion-mnist", "FashionMNIST/raw", "FashionMNIST"],
                 root, download, FASHION_CLASSES, FASHION_MEAN, FASHION_STD)
