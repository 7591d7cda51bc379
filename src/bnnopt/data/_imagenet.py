"""ImageNet (ILSVRC2012) in the usual class-folder layout, decoded lazily with PIL.

Layout: ``<root>/imagenet/{train,val}/<class>/<image>`` (val must already be sorted
into class folders, as the usual ``valprep.sh`` does). Class index = position of the
folder name in the sorted list of *train* class folders.

ImageNet is far too large to hold in memory, so the loader decodes each batch with
PIL in a pool of worker processes (``executor="process"``, the default; started once
per loader, with the ``spawn`` method so that a CUDA parent is safe; ``"thread"``
uses threads instead, which suits small folders and tests), keeping the next batch
in flight, then normalises and flips the uint8 batch on the compute device. Under
``torchrun`` each rank decodes only its shard of every global batch (``shard``). Per image: the shorter
side is resized to ``resize`` (bilinear); training takes a random ``size x size``
crop of that and a random horizontal flip, evaluation the centre crop (the classic
"resize 256, crop 224" recipe; ``RandomResizedCrop`` is not used). Crop positions and
flips come from ``epoch_generator(seed, epoch)``, so batches are a pure function of
``(seed, epoch)`` as with the in-memory loader.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bnnopt.data._augment import Normalizer
from bnnopt.data._base import Augment, DataError, candidate_dirs, missing_data_error, resolve_data_root
from bnnopt.data._download import download_hint
from bnnopt.data._loader import Sharded, as_augment, epoch_generator, epoch_order
from bnnopt.registry import DATASETS

__all__ = [
    "ImageFolder",
    "ImageFolderDataset",
    "ImageFolderLoader",
    "decode_image",
    "read_imagenet",
    "scan_image_folder",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXECUTORS = ("process", "thread")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageFolder:
    """A split: ``samples[i] = (path, label)`` sorted by class then file name."""

    root: Path
    samples: tuple[tuple[Path, int], ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.samples)


def scan_image_folder(path: str | os.PathLike, classes: Sequence[str] | None = None) -> ImageFolder:
    """Index ``path/<class>/<image>``; ``classes`` (the train classes) fixes the label order."""
    path = Path(path)
    folders = sorted(d.name for d in path.iterdir() if d.is_dir()) if path.is_dir() else []
    if not folders:
        loose = path.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in path.iterdir())
        hint = " (images lie directly in it: sort them into one folder per class)" if loose else ""
        raise DataError(f"no class folders in {path}{hint}")
    classes = tuple(folders) if classes is None else tuple(classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DataError(f"class folders {unknown[:5]} in {path} are not among the {len(classes)} train classes")
    samples = []
    for c in folders:
        files = sorted(f for f in (path / c).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        samples.extend((f, index[c]) for f in files)
    if not samples:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {path}")
    return ImageFolder(path, tuple(samples), classes)


def decode_image(path: Path, resize: int, size: int, crop: tuple[float, float] | None = None) -> np.ndarray:
    """Decode to RGB, shorter side -> ``resize``, crop ``size x size`` -> uint8 ``[3, size, size]``.

    ``crop=None`` takes the centre; ``crop=(u, v)`` with u, v in [0, 1) puts the top-left
    corner at ``(floor(u (H - size + 1)), floor(v (W - size + 1)))``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            s = resize / min(w, h)
            nw, nh = max(size, round(w * s)), max(size, round(h * s))
            im.draft("RGB", (nw, nh))  # JPEG: decode at a reduced scale >= the target size
            im = im.convert("RGB")
            if im.size != (nw, nh):
                im = im.resize((nw, nh), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from e
    if crop is None:
        top, left = (nh - size) // 2, (nw - size) // 2
    else:
        top, left = int(crop[0] * (nh - size + 1)), int(crop[1] * (nw - size + 1))
    return np.ascontiguousarray(a[top:top + size, left:left + size].transpose(2, 0, 1))


class ImageFolderLoader(Sharded):
    """Same interface as :class:`InMemoryLoader` (``epoch``, ``eval``, ``__len__``), decoding lazily."""

    def __init__(self, folder: ImageFolder, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 size: int = 224, resize: int = 256, augment: bool | Augment | None = False,
                 device: torch.device | str = "cpu", seed: int = 0, drop_last: bool = False, shuffle: bool = True,
                 workers: int | None = None, dtype: torch.dtype = torch.float32,
                 executor: str = "process"):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"invalid batch_size {batch_size!r}; valid: a positive integer")
        if not (isinstance(size, int) and isinstance(resize, int) and 0 < size <= resize):
            raise ValueError(f"invalid size {size!r} / resize {resize!r}; valid: integers 0 < size <= resize")
        self.folder, self.batch_size, self.size, self.resize = folder, batch_size, size, resize
        self.augment = as_augment(augment)
        self.device = torch.device(device)
        self.seed, self.drop_last, self.shuffle = seed, drop_last, shuffle
        self.workers = workers or min(8, os.cpu_count() or 1)
        if executor not in EXECUTORS:
            raise ValueError(f"invalid executor {executor!r}; valid: {', '.join(EXECUTORS)}")
        self.executor = executor
        self._pool: Executor | None = None
        self.normalize = Normalizer(mean, std, self.device, dtype)
        epoch_generator(seed, 0)

    @property
    def num_samples(self) -> int:
        return len(self.folder)

    def pool(self) -> Executor:
        """The decoding pool, created on first use and kept for the loader's lifetime."""
        if self._pool is None:
            if self.executor == "process":
                import multiprocessing

                self._pool = ProcessPoolExecutor(self.workers,
                                                 mp_context=multiprocessing.get_context("spawn"))
            else:
                self._pool = ThreadPoolExecutor(self.workers)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __del__(self):  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def plan(self, epoch: int) -> dict[str, torch.Tensor]:
        g = epoch_generator(self.seed, epoch)
        n = self.num_samples
        plan = {"order": epoch_order(n, self.shuffle, g)}
        if self.augment is not None:
            plan["crop"] = torch.rand(n, 2, generator=g, dtype=torch.float64)
            plan["flips"] = (torch.randint(0, 2, (n,), generator=g).bool() if self.augment.flip
                             else torch.zeros(n, dtype=torch.bool))
        return plan

    def _batches(self, jobs: Iterable[list[tuple[Path, tuple[float, float] | None]]]) -> Iterator[torch.Tensor]:
        """Decode job lists into uint8 batches, keeping the next batch in flight."""
        pool, pending = self.pool(), None
        for job in itertools.chain(jobs, [None]):
            nxt = None if job is None else [pool.submit(decode_image, p, self.resize, self.size, c)
                                            for p, c in job]
            if pending is not None:  # a rank's share of a final batch may be empty
                yield (torch.from_numpy(np.stack([f.result() for f in pending])) if pending
                       else torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8))
            pending = nxt

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches of ``epoch`` from batch ``start`` on; a pure function of (seed, epoch)."""
        plan, s = self.plan(epoch), self.folder.samples
        order = plan["order"].tolist()
        crop = plan["crop"].tolist() if "crop" in plan else None
        ranges = [range(*self.local_range(lo, hi)) for lo, hi in self.global_ranges()[start:]]
        jobs = ([(s[order[k]][0], None if crop is None else tuple(crop[k])) for k in r] for r in ranges)
        for r, xb in zip(ranges, self._batches(jobs)):
            xb = xb.to(self.device)
            if "flips" in plan:
                f = plan["flips"][r.start:r.stop].to(self.device)[:, None, None, None]
                xb = torch.where(f, xb.flip(3), xb)
            yb = torch.tensor([s[order[k]][1] for k in r], dtype=torch.int64, device=self.device)
            yield self.normalize(xb), yb

    def eval(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b, s = batch_size or self.batch_size, self.folder.samples
        first, last = self.eval_range()
        ranges = [range(i, min(i + b, last)) for i in range(first, last, b)]
        for r, xb in zip(ranges, self._batches([(s[k][0], None) for k in r] for r in ranges)):
            yb = torch.tensor([s[k][1] for k in r], dtype=torch.int64, device=self.device)
            yield self.normalize(xb.to(self.device)), yb


@dataclass
class ImageFolderDataset:
    """ImageNet-style dataset: two lazily decoded splits plus what the Trainer needs to know."""

    name: str
    train: ImageFolder
    test: ImageFolder
    classes: tuple[str, ...]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    size: int = 224
    resize: int = 256
    workers: int | None = None
    executor: str = "process"
    augment: Augment | None = field(default_factory=lambda: Augment(pad=0, flip=True))
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    in_channels = 3

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size, self.size

    def make_loaders(self, batch_size, device="cpu", seed=0, augment=None, drop_last=False, eval_batch_size=None,
                     dtype=torch.float32):
        aug = self.augment if augment is None else augment
        kw = {"size": self.size, "resize": self.resize, "device": device, "seed": seed,
              "workers": self.workers, "executor": self.executor, "dtype": dtype}
        train = ImageFolderLoader(self.train, batch_size, self.mean, self.std, augment=aug,
                                  drop_last=drop_last, shuffle=True, **kw)
        test = ImageFolderLoader(self.test, eval_batch_size or batch_size, self.mean, self.std, augment=False,
                                 drop_last=False, shuffle=False, **kw)
        return train, test


@DATASETS.register("imagenet", "ImageNet class folders (train/, val/), decoded lazily with PIL; 1000 classes")
def read_imagenet(root: str | os.PathLike | None = None, download: bool = False, size: int = 224,
                  resize: int = 256, workers: int | None = None,
                  executor: str = "process") -> ImageFolderDataset:
    """Index ``<root>/imagenet/{train,val}`` (or ``<root>/{train,val}``); images are decoded per batch."""
    root = resolve_data_root(root)
    dirs = candidate_dirs(root, ["imagenet", "ILSVRC2012"])
    found = next((d for d in dirs if (d / "train").is_dir() and (d / "val").is_dir()), None)
    if found is None:
        raise missing_data_error("imagenet", "train/ and val/ class folders", dirs, download_hint("imagenet", root))
    train = scan_image_folder(found / "train")
    test = scan_image_folder(found / "val", train.classes)
    return ImageFolderDataset("imagenet", train, test, train.classes, size=size, resize=resize,
                              workers=workers, executor=executor, source=str(found))
