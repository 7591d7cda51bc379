"""bnnopt.data: dataset readers for each dataset's own on-disk format, ``--download``
with checksum verification, and an in-memory loader with batched on-device augmentation.

    from bnnopt.data import load_dataset, make_loaders
    ds = load_dataset("cifar10", root="../shared/data")        # ArrayDataset, uint8 [N,3,32,32]
    train, test = make_loaders(ds, batch_size=128, device="cpu", seed=0)
    for x, y in train.epoch(0): ...                               # pure function of (seed, epoch)

Registered datasets (``DATASETS``): cifar10, cifar100, mnist, fashion_mnist, svhn, digits,
imagenet. Every reader takes ``(root=None, download=False, ...)``; the root defaults to
``$BNNOPT_DATA``, else ``~/.cache/bnnopt``. Missing or unreadable data raise
:class:`DataError` (a ValueError) with a one-line message naming the paths/files.
"""
from __future__ import annotations

import os

from bnnopt.data._augment import Normalizer, crop_flip, draw_crop_flip
from bnnopt.data._base import ArrayDataset, Augment, DataError, resolve_data_root
from bnnopt.data._cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, read_cifar10, read_cifar100
from bnnopt.data._digits import read_digits
from bnnopt.data._download import SOURCES, Resource, Source, download, md5sum
from bnnopt.data._idx import FASHION_MEAN, FASHION_STD, MNIST_MEAN, MNIST_STD, read_fashion_mnist, read_idx, read_mnist
from bnnopt.data._imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataset,
    ImageFolderLoader,
    read_imagenet,
)
from bnnopt.data._loader import InMemoryLoader, epoch_generator, make_loaders
from bnnopt.data._svhn import SVHN_MEAN, SVHN_STD, read_svhn
from bnnopt.data import text  # noqa: E402,F401  (registers tinyshakespeare, shakespeare_embedded, enwik8)
from bnnopt.registry import DATASETS

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "FASHION_MEAN",
    "FASHION_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "SOURCES",
    "SVHN_MEAN",
    "SVHN_STD",
    "ArrayDataset",
    "Augment",
    "DataError",
    "ImageFolderDataset",
    "ImageFolderLoader",
    "InMemoryLoader",
    "Normalizer",
    "Resource",
    "Source",
    "crop_flip",
    "download",
    "draw_crop_flip",
    "epoch_generator",
    "load_dataset",
    "make_loaders",
    "md5sum",
    "read_cifar10",
    "read_cifar100",
    "read_digits",
    "read_fashion_mnist",
    "read_idx",
    "read_imagenet",
    "read_mnist",
    "read_svhn",
    "resolve_data_root",
]


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False, **options):
    """``DATASETS.get(name)(root, download=download, **options)`` (ValueError lists valid names)."""
    return DATASETS.get(name)(root, download=download, **options)
