"""Common pieces of the dataset readers: the error type, the in-memory dataset
record, the data-root rule and the per-dataset normalisation constants.

Every array reader returns an :class:`ArrayDataset` holding *uint8* images in
``[N, C, H, W]`` layout and ``int64`` labels as torch tensors on the CPU; the
loader (:mod:`bnnopt.data._loader`) moves them to the compute device once and
normalises there, ``x_norm[c] = (x[c] / 255 - mean[c]) / std[c]``.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["ArrayDataset", "Augment", "DataError", "missing_data_error", "resolve_data_root"]

#: Environment variable that sets the default data root.
ENV_VAR = "BNNOPT_DATA"


class DataError(ValueError):
    """A dataset could not be found or read (missing root, truncated/corrupt file).

    The message is always one line and names the file or the paths that were searched.
    """


@dataclass(frozen=True)
class Augment:
    """Batched training augmentation: random crop with ``pad`` pixels, optional h-flip.

    ``pad_mode="zero"`` pads with black pixels (value 0 *before* normalisation, exactly
    what ``RandomCrop(32, padding=4)`` does in the official FSG / MetaQuant code);
    ``"reflect"`` mirrors the border without repeating the edge pixel (airbench's choice).
    """

    pad: int = 4
    flip: bool = True
    pad_mode: str = "zero"

    def __post_init__(self) -> None:
        if not isinstance(self.pad, int) or self.pad < 0:
            raise ValueError(f"invalid augment pad {self.pad!r}; valid: integers >= 0")
        if self.pad_mode not in ("zero", "reflect"):
            raise ValueError(f"invalid augment pad_mode {self.pad_mode!r}; valid: zero, reflect")

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip


@dataclass
class ArrayDataset:
    """A whole image-classification dataset held in memory.

    Attributes:
        name: registry name ("cifar10", "mnist", ...).
        train_x, test_x: uint8 tensors ``[N, C, H, W]`` (CPU).
        train_y, test_y: int64 tensors ``[N]`` with values in ``[0, len(classes))``.
        classes: class names, index = label.
        mean, std: per-channel normalisation constants in [0, 1] units (length C).
        augment: the training augmentation this dataset is usually trained with, or
            None for none (MNIST-like digits are not flip-invariant).
        source: where the data was read from (for run records).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(f"{self.name} {split}_x must be uint8 [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(f"{self.name} {split}_y must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise DataError(
                    f"{self.name} {split} labels outside [0, {len(self.classes)}): "
                    f"min {int(y.min())}, max {int(y.max())}"
                )
        c = self.train_x.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(f"{self.name}: mean/std need {c} channels, got {len(self.mean)}/{len(self.std)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def take(self, n_train: int | None = None, n_test: int | None = None) -> ArrayDataset:
        """The first ``n_train`` / ``n_test`` images of each split (None keeps all)."""
        for what, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None and (not isinstance(n, int) or n < 1):
                raise ValueError(f"invalid {what} {n!r}; valid: a positive integer or None")
        tr = slice(None) if n_train is None else slice(0, n_train)
        te = slice(None) if n_test is None else slice(0, n_test)
        return ArrayDataset(self.name, self.train_x[tr], self.train_y[tr], self.test_x[te],
                            self.test_y[te], self.classes, self.mean, self.std, self.augment,
                            self.source, dict(self.extra))

    def __repr__(self) -> str:
        return (f"ArrayDataset({self.name!r}, train={tuple(self.train_x.shape)}, "
                f"test={tuple(self.test_x.shape)}, classes={self.num_classes}, source={self.source!r})")


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bnnopt"


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$BNNOPT_DATA``, else ``~/.cache/bnnopt``.

    (``$XDG_CACHE_HOME/bnnopt`` when XDG_CACHE_HOME is set.) Nothing is created.
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return _user_cache_dir()


def missing_data_error(name: str, wanted: str, looked: Iterable[Path], how: str) -> DataError:
    """One-line DataError: which files were wanted, where we looked, how to get them."""
    places = ", ".join(str(p) for p in looked)
    return DataError(f"{name} data not found: looked for {wanted} in {places}; {how}")


def candidate_dirs(root: Path, subdirs: Sequence[str]) -> list[Path]:
    """``root/<sub>`` for each conventional sub-folder name, then ``root`` itself."""
    return [root / s for s in subdirs] + [root]
