"""A validation split held out of the training set, a pure function of the run seed.

Every choice a comparison makes (learning rate and other tuned settings, the
best epoch) is made on this split; the test split is only reported. For a
training set of N images and a fraction f in (0, 1)::

    n_val  = round(f * N)                       (at least 1, at most N - 1)
    perm   = randperm(N) from a generator seeded by SeedSequence([seed, VAL_STREAM])
    val    = sorted(perm[:n_val]);  train = sorted(perm[n_val:])

So the split depends only on (N, f, seed): the *run seed* (``RunConfig.seed``),
not on anything that ran before, and it is the same on resume. Its random
stream is separate from the epochs' ``SeedSequence([seed, epoch])`` streams
(:func:`bnnopt.data.epoch_generator`), so holding a split out does not reuse
the numbers that order the batches. Validation images come only from the
training set, so they never overlap the test set; ``train`` and ``val`` are
disjoint and together are the whole training set (after ``train_limit``).

A second split can be held out of what remains in the same way, from its own
stream: the *meta* split of the learned-gradient methods' ``meta_data="heldout"``
(``stream=META_STREAM``, ``name="meta_fraction"``), which their meta-nets are
trained on. It is disjoint from the validation split because it is drawn from the
images left after it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bnnopt.data._base import ArrayDataset

__all__ = ["VAL_STREAM", "META_STREAM", "split_generator", "validation_indices",
           "hold_out_validation"]

#: Second SeedSequence word of the split's random stream ("val" in ASCII); epoch
#: streams use the epoch number there, which never reaches this value in practice.
VAL_STREAM = 0x76616C
#: The meta split's stream word ("meta" in ASCII).
META_STREAM = 0x6D657461


def split_generator(seed: int, stream: int = VAL_STREAM) -> torch.Generator:
    """CPU generator of the held-out split ``stream`` for run seed ``seed`` (>= 0)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"invalid seed {seed!r}; valid: integers >= 0")
    state = np.random.SeedSequence([int(seed), stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def validation_indices(n: int, fraction: float, seed: int, *, stream: int = VAL_STREAM,
                       name: str = "val_fraction") -> tuple[Tensor, Tensor]:
    """``(train_idx, val_idx)``: sorted int64 index tensors partitioning ``range(n)``.

    ``fraction`` = 0 holds nothing out (``val_idx`` empty); otherwise it must be
    in (0, 1) and leave at least one image on each side. ``stream`` picks the
    split's random stream, ``name`` the option named in errors.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"invalid {name} {fraction!r}; valid: a number in [0, 1)")
    if fraction == 0:
        return torch.arange(n), torch.zeros(0, dtype=torch.int64)
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val > n - 1:
        raise ValueError(f"invalid {name} {fraction!r} for {n} training images: it holds out "
                         f"{n_val}; valid: a fraction leaving at least 1 image in each split")
    perm = torch.randperm(n, generator=split_generator(seed, stream))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def hold_out_validation(ds: ArrayDataset, fraction: float, seed: int, *,
                        stream: int = VAL_STREAM,
                        name: str = "val_fraction") -> tuple[ArrayDataset, Tensor, Tensor]:
    """``(train part of ds, val_x uint8 [V, C, H, W], val_y int64 [V])``.

    The returned dataset keeps ``ds``'s test split unchanged; its training split
    is ``ds``'s minus the held-out images (in their original order). ``stream``
    and ``name``: as in :func:`validation_indices` (the meta split: META_STREAM).
    """
    train_idx, val_idx = validation_indices(int(ds.train_x.shape[0]), fraction, seed,
                                            stream=stream, name=name)
    train = ArrayDataset(ds.name, ds.train_x[train_idx], ds.train_y[train_idx], ds.test_x,
                         ds.test_y, ds.classes, ds.mean, ds.std, ds.augment, ds.source,
                         dict(ds.extra))
    return train, ds.train_x[val_idx], ds.train_y[val_idx]


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s contiguous shard of ``n`` items.

    The first ``n % world`` ranks get one item more (as ``torch.tensor_split``), so
    concatenating the shards of ranks 0..world-1 gives back 0..n-1 in order.
    """
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
