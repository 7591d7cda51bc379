"""Writers for tiny files in each dataset's real on-disk format (tests never download).

Exposed through the ``fmt`` fixture: ``fmt.cifar10(root, ...)`` etc. return the arrays
they wrote so tests can compare what the readers give back.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def write_cifar_batch(path: Path, data: np.ndarray, labels, label_key: bytes = b"labels",
                      str_keys: bool = False) -> None:
    """Protocol-2 pickle of a dict with byte-string keys, as in the official release."""
    d = {b"batch_label": b"testing batch", b"data": data, label_key: list(map(int, labels)),
         b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    if str_keys:
        d = {k.decode(): v for k, v in d.items()}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def write_cifar10(root: Path, n_per_batch: int = 7, n_test: int = 5, seed: int = 0, str_keys: bool = False):
    """``root/cifar-10-batches-py`` with 5 train batches + test batch + meta; returns (x_tr, y_tr, x_te, y_te)."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n_per_batch)
        write_cifar_batch(d / f"data_batch_{i}", x, y, str_keys=str_keys)
        xs.append(x), ys.append(y)
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = rng.integers(0, 10, n_test)
    write_cifar_batch(d / "test_batch", xt, yt, str_keys=str_keys)
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                  "ship", "truck")]
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return np.concatenate(xs), np.concatenate(ys), xt, yt


def write_cifar100(root: Path, n_train: int = 6, n_test: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, n), rng.integers(0, 20, n)
        with open(d / split, "wb") as f:
            pickle.dump({b"data": x, b"fine_labels": list(map(int, fine)), b"coarse_labels": list(map(int, coarse)),
                         b"filenames": [b"x"] * n, b"batch_label": split.encode()}, f, protocol=2)
        out[split] = (x, fine, coarse)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}, f, protocol=2)
    return out


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 0, 0, 0x08, ndim, big-endian uint32 sizes, data."""
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
    return header + np.ascontiguousarray(a, dtype=np.uint8).tobytes()


def write_idx(path: Path, a: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(a)
    path = Path(str(path) + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist(folder: Path, n_train: int = 9, n_test: int = 4, gz: bool = True, seed: int = 0):
    """The four MNIST IDX files in ``folder``; returns (x_tr [N,28,28], y_tr, x_te, y_te)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train).astype(np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test).astype(np.uint8))
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name, a in zip(names, arrays):
        write_idx(folder / name, a, gz)
    return arrays


def write_svhn(folder: Path, n_train: int = 6, n_test: int = 3, seed: int = 0):
    """train_32x32.mat / test_32x32.mat with X [32,32,3,N] and y [N,1] in 1..10."""
    import scipy.io

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10  # always include the "10 means 0" case
        scipy.io.savemat(str(folder / f"{split}_32x32.mat"), {"X": x, "y": y})
        out[split] = (x, y)
    return out


def write_image_folder(root: Path, classes=("n01", "n02", "n03"), per_class: int = 2, size=(12, 10),
                       seed: int = 0):
    """``root/{train,val}/<class>/*.png`` with random RGB images of PIL size ``size`` = (w, h)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = {}
    for split in ("train", "val"):
        for c in classes:
            d = Path(root) / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(a).save(d / f"img{i}.png")
                images[(split, c, i)] = a
    return images


@pytest.fixture
def fmt() -> SimpleNamespace:
    return SimpleNamespace(cifar10=write_cifar10, cifar100=write_cifar100, cifar_batch=write_cifar_batch,
                           idx_bytes=idx_bytes, idx=write_idx, mnist=write_mnist, svhn=write_svhn,
                           image_folder=write_image_folder)


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch, tmp_path):
    """Tests never see the user's data root or cache: BNNOPT_DATA unset, cache in tmp."""
    monkeypatch.delenv("BNNOPT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
