"""In-memory batched loader in the spirit of airbench (Keller Jordan, 2024).

The whole split lives on the compute device as uint8 ``[N, C, H, W]`` (CIFAR-10's 50k
training images are 150 MB; 240 MB once padded by 4 for augmentation); each batch is
one gather (crop) + flip + normalise on the device, so there are no worker processes, no
per-sample Python and no host-device copies after construction.

Exact resume: an epoch's order, crop offsets and flips come from a ``torch.Generator``
(on the CPU, so CPU and CUDA runs see the same batches) seeded with
``SeedSequence([seed, epoch])``. The batches of epoch ``e`` are therefore a pure
function of ``(seed, epoch)``, whatever ran before.

Several processes (``torchrun``): ``shard(rank, world)`` makes each loader yield only
its rank's contiguous part of every *global* batch (``batch_size`` stays the global
batch); the order and the augmentation of every image are drawn for the whole epoch
exactly as in one process, so the ranks' shards concatenated are the one-process
batch, also for a final global batch smaller than ``world`` images: its shares are
uneven (:func:`bnnopt.data.split.shard_bounds`) and a rank may hold one image or
none, so N processes train on exactly the images one process trains on. The one
exception is ``shard(..., min_shard=m)``: a final global batch that would leave a
rank fewer than ``m`` images (fewer than ``m * world`` in all) is dropped on every
rank; the Trainer asks for ``m = 2`` only when the model has a BatchNorm that
normalises over its own rank's shard (no ``--sync-bn``), which cannot train on one
image, and records the dropped images in the run (:meth:`Sharded.dropped_images`).
``eval()`` yields the rank's contiguous part of the split.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from bnnopt.data._augment import Normalizer, crop_flip_padded, draw_crop_flip, pad_images
from bnnopt.data._base import ArrayDataset, Augment
from bnnopt.data.split import shard_bounds

__all__ = ["InMemoryLoader", "Sharded", "as_augment", "epoch_generator", "make_loaders"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, epoch)`` (well mixed, 63 bits)."""
    for what, v in (("seed", seed), ("epoch", epoch)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"invalid {what} {v!r}; valid: integers >= 0")
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def as_augment(augment: bool | Augment | None) -> Augment | None:
    """``True`` -> ``Augment()`` (pad 4, flip, zero padding); ``False``/None -> None."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return Augment()
    if isinstance(augment, Augment):
        return augment if augment.active else None
    raise ValueError(f"invalid augment {augment!r}; valid: True, False, None or an Augment(...)")


def batches_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches of ``n`` samples: floor with ``drop_last``, else ceil."""
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_order(n: int, shuffle: bool, generator: torch.Generator) -> torch.Tensor:
    """The epoch's sample order: a permutation drawn first from ``generator``, or 0..n-1."""
    return torch.randperm(n, generator=generator) if shuffle else torch.arange(n)


class Sharded:
    """Mixin: the global batches of an epoch and this rank's slice of each.

    Needs ``num_samples``, ``batch_size``, ``drop_last``; ``rank``/``world_size`` default
    to the single process, ``min_shard`` to 0 (every batch is trained, whatever its size).
    """

    rank: int = 0
    world_size: int = 1
    min_shard: int = 0

    def shard(self, rank: int, world_size: int, min_shard: int = 0):
        """Yield only rank ``rank`` of ``world_size``'s part of each batch (returns self).

        ``min_shard``: with several ranks, drop a final global batch that would leave
        some rank fewer than this many images (0: never; rank r's share of n images
        is ``shard_bounds(n, r, world)``, the smallest being ``n // world``).
        """
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise ValueError(f"invalid shard rank {rank!r} of world {world_size!r}; "
                             "valid: 0 <= rank < world_size")
        if isinstance(min_shard, bool) or not isinstance(min_shard, int) or min_shard < 0:
            raise ValueError(f"invalid min_shard {min_shard!r}; valid: an integer >= 0")
        self.rank, self.world_size, self.min_shard = rank, world_size, min_shard
        return self

    def global_ranges(self) -> list[tuple[int, int]]:
        """[start, stop) positions in the epoch's order of every global batch."""
        n, b = self.num_samples, self.batch_size
        ranges = [(i * b, min((i + 1) * b, n))
                  for i in range(batches_per_epoch(n, b, self.drop_last))]
        if (self.world_size > 1 and ranges
                and (ranges[-1][1] - ranges[-1][0]) // self.world_size < self.min_shard):
            ranges.pop()  # some rank would get fewer than min_shard images
        return ranges

    def dropped_images(self) -> int:
        """Images per epoch that ``min_shard`` keeps out of training (0 in one process;
        ``drop_last`` is not counted)."""
        n, b = self.num_samples, self.batch_size
        kept = batches_per_epoch(n, b, self.drop_last)
        trained = len(self.global_ranges())
        return 0 if trained == kept else n - trained * b

    def global_sizes(self) -> list[int]:
        """Images in each global batch (the same every epoch)."""
        return [stop - start for start, stop in self.global_ranges()]

    def local_range(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's contiguous part of the global batch [start, stop)."""
        lo, hi = shard_bounds(stop - start, self.rank, self.world_size)
        return start + lo, start + hi

    def eval_range(self) -> tuple[int, int]:
        """This rank's contiguous part of the whole split, for evaluation."""
        return shard_bounds(self.num_samples, self.rank, self.world_size)

    def __len__(self) -> int:
        return len(self.global_ranges())


class InMemoryLoader(Sharded):
    """Batches of normalised (optionally augmented) images from uint8 tensors on ``device``.

    Args:
        x: uint8 ``[N, C, H, W]``; y: int64 ``[N]`` (tensors or numpy arrays).
        batch_size: images per batch (the last one is smaller unless ``drop_last``).
        mean, std: per-channel normalisation constants in [0, 1] units.
        augment: True / False / :class:`Augment` (random crop with padding + h-flip).
        device: compute device; the data are copied there once.
        seed: base seed; epoch ``e`` uses ``epoch_generator(seed, e)``.
        drop_last: drop the final incomplete batch of each training epoch.
        shuffle: permute each epoch (default True).
        dtype: floating dtype of the batches.

    ``epoch(e)`` yields ``(x float [B, C, H, W], y int64 [B])`` on ``device``;
    ``eval()`` yields every image once, in order, unaugmented.
    """

    def __init__(self, x, y, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 augment: bool | Augment | None = False, device: torch.device | str = "cpu", seed: int = 0,
                 drop_last: bool = False, shuffle: bool = True, dtype: torch.dtype = torch.float32):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"invalid images {x.dtype} {tuple(x.shape)}; valid: uint8 [N, C, H, W]")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"invalid labels shape {tuple(y.shape)}; valid: [{x.shape[0]}]")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"invalid batch_size {batch_size!r}; valid: a positive integer")
        if len(mean) != x.shape[1]:
            raise ValueError(f"invalid mean {tuple(mean)}: images have {x.shape[1]} channels")
        self.device = torch.device(device)
        self.augment = as_augment(augment)
        if self.augment is None:
            self._padded = None
            self.x = x.to(self.device)
        else:  # pad the whole split once (airbench does the same); x is a view of its centre
            p, (h, w) = self.augment.pad, x.shape[-2:]
            self._padded = pad_images(x.to(self.device), p, self.augment.pad_mode)
            self.x = self._padded[:, :, p:p + h, p:p + w]
        self.y = y.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.normalize = Normalizer(mean, std, self.device, dtype)
        epoch_generator(seed, 0)  # validates seed

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])

    def plan(self, epoch: int) -> dict[str, torch.Tensor]:
        """The epoch's order and augmentation parameters (CPU tensors), a pure function of (seed, epoch)."""
        g = epoch_generator(self.seed, epoch)
        n = self.num_samples
        order = epoch_order(n, self.shuffle, g)
        plan = {"order": order}
        if self.augment is not None:
            dy, dx, flips = draw_crop_flip(n, self.augment.pad, self.augment.flip, g)
            plan.update(dy=dy, dx=dx, flips=flips)
        return plan

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches of ``epoch``, beginning at batch ``start`` (for mid-epoch resume)."""
        plan = {k: v.to(self.device) for k, v in self.plan(epoch).items()}
        order = plan["order"]
        for lo, hi in self.global_ranges()[start:]:
            sl = slice(*self.local_range(lo, hi))
            idx = order[sl]
            if self._padded is None:
                xb = self.x[idx]
            else:
                h, w = self.x.shape[-2:]
                xb = crop_flip_padded(self._padded, idx, plan["dy"][sl], plan["dx"][sl], plan["flips"][sl], h, w)
            yield self.normalize(xb), self.y[idx]

    def eval(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once (this rank's part), in stored order, no augmentation, last batch kept."""
        b = batch_size or self.batch_size
        first, last = self.eval_range()
        for i in range(first, last, b):
            j = min(i + b, last)
            yield self.normalize(self.x[i:j]), self.y[i:j]

    def __repr__(self) -> str:
        return (f"InMemoryLoader(n={self.num_samples}, batch_size={self.batch_size}, batches={len(self)}, "
                f"augment={self.augment}, device={self.device}, seed={self.seed}, drop_last={self.drop_last})")


def make_loaders(dataset: ArrayDataset, batch_size: int, device: torch.device | str = "cpu", seed: int = 0,
                 augment: bool | Augment | None = None, drop_last: bool = False,
                 eval_batch_size: int | None = None,
                 dtype: torch.dtype = torch.float32) -> tuple[InMemoryLoader, InMemoryLoader]:
    """(train loader, test loader) for an :class:`ArrayDataset` or an ImageNet folder dataset.

    ``augment=None`` uses the dataset's own default (``dataset.augment``: crop+flip for
    CIFAR, none for the digit datasets). The test loader never shuffles or augments.
    """
    if hasattr(dataset, "make_loaders"):  # lazily decoded datasets (ImageNet) build their own
        return dataset.make_loaders(batch_size, device, seed, augment, drop_last, eval_batch_size,
                                    dtype=dtype)
    aug = dataset.augment if augment is None else augment
    train = InMemoryLoader(dataset.train_x, dataset.train_y, batch_size, dataset.mean, dataset.std,
                           aug, device, seed, drop_last, shuffle=True, dtype=dtype)
    test = InMemoryLoader(dataset.test_x, dataset.test_y, eval_batch_size or batch_size, dataset.mean,
                          dataset.std, False, device, seed, False, shuffle=False, dtype=dtype)
    return train, test
