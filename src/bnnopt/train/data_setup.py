"""From a dataset name to (train loader, [validation loader,] test loader, data info).

``data info`` is what a checkpoint needs to rebuild and evaluate the model
without reading the data again: number of classes, input channels and size,
and the normalisation constants.
"""
from __future__ import annotations

from typing import Any

import torch


def load_split_loaders(dataset: str, **kwargs: Any):
    """``(train loader, test loader, data info)``; see :func:`load_run_loaders`."""
    train, _, test, info, _ = load_run_loaders(dataset, **kwargs)
    return train, test, info


def load_run_loaders(dataset: str, *, root: str | None = None, download: bool = False,
                     batch_size: int = 128, augment: bool = True, device: torch.device | str = "cpu",
                     seed: int = 0, train_limit: int = 0, test_limit: int = 0,
                     need_train: bool = True, eval_batch_size: int = 500,
                     val_fraction: float = 0.0, dtype: torch.dtype = torch.float32,
                     meta_fraction: float = 0.0, block_size: int | None = None):
    """Read ``dataset`` and build ``(train, val or None, test, info, meta or None)`` loaders.

    augment: True uses the dataset's usual training augmentation (crop + flip for
    CIFAR/SVHN, none for digit datasets); False disables it.
    train_limit / test_limit: keep only the first N images of a split (0 = all).
    val_fraction: hold this fraction of the (limited) training images out as a
    validation split, chosen by ``seed`` (:mod:`bnnopt.data.split`); 0 = none.
    The validation loader, like the test loader, yields its images once, in
    order, unaugmented.
    meta_fraction: then hold this fraction of the remaining training images out as
    the meta split (``bnnopt.data.split.META_STREAM``; disjoint from train and
    validation) for learned-gradient methods with ``meta_data="heldout"``; its
    loader yields full batches of the training batch size only (so every rank has
    a share under torchrun), shuffles per epoch (seeded like the training loader)
    and is not augmented. 0 = none.
    block_size: sequence length of a text (language-modelling) dataset, whose
    loaders come from :func:`bnnopt.data.text.text_run_loaders` (default 128).
    """
    from bnnopt.data import InMemoryLoader, load_dataset, make_loaders
    from bnnopt.data.split import META_STREAM, hold_out_validation

    ds = load_dataset(dataset, root=root, download=download)
    if getattr(ds, "task", None) == "lm":
        from bnnopt.data.text import text_run_loaders

        return text_run_loaders(ds, batch_size=batch_size, device=device, seed=seed,
                                train_limit=train_limit, test_limit=test_limit,
                                val_fraction=val_fraction, meta_fraction=meta_fraction,
                                eval_batch_size=eval_batch_size, need_train=need_train,
                                block_size=block_size)
    if train_limit or test_limit:
        ds = ds.take(train_limit or None, test_limit or None)
    val = None
    if val_fraction:
        if not hasattr(ds, "train_x"):
            raise ValueError(f"val_fraction {val_fraction!r}: dataset {dataset!r} is read lazily "
                             "and cannot hold out a validation split; valid: val_fraction 0")
        ds, val_x, val_y = hold_out_validation(ds, val_fraction, seed)
        val = EvalLoader(InMemoryLoader(val_x, val_y, eval_batch_size, ds.mean, ds.std, False,
                                        device, seed, False, shuffle=False, dtype=dtype))
    meta = None
    if meta_fraction:
        if not hasattr(ds, "train_x"):
            raise ValueError(f"meta_fraction {meta_fraction!r}: dataset {dataset!r} is read "
                             "lazily and cannot hold out a meta split; valid: meta_data 'train'")
        ds, meta_x, meta_y = hold_out_validation(ds, meta_fraction, seed, stream=META_STREAM,
                                                 name="meta_fraction")
        meta = InMemoryLoader(meta_x, meta_y, batch_size, ds.mean, ds.std, False, device, seed,
                              drop_last=True, shuffle=True, dtype=dtype)
        if len(meta) < 1:
            raise ValueError(f"invalid meta_fraction {meta_fraction!r}: it holds out "
                             f"{meta.num_samples} images, fewer than one batch of {batch_size}; "
                             f"valid: a meta_fraction holding out at least {batch_size} images")
    aug = None if augment else False
    train, test = make_loaders(ds, batch_size, device=device, seed=seed, augment=aug,
                               eval_batch_size=eval_batch_size, dtype=dtype)
    info: dict[str, Any] = {
        "dataset": dataset,
        "num_classes": ds.num_classes,
        "in_channels": ds.in_channels,
        "image_size": list(ds.image_size),
        "mean": list(ds.mean), "std": list(ds.std),
        "train_images": train.num_samples if need_train else None,
        "test_images": test.num_samples,
    }
    if val is not None:
        info["val_images"] = val.num_samples
    if meta is not None:
        info["meta_images"] = meta.num_samples
    return train, val, EvalLoader(test), info, meta


class EvalLoader:
    """Adapter: ``.epoch(_)`` yields an evaluation split once, in order, unaugmented."""

    def __init__(self, loader):
        self.loader = loader

    def epoch(self, epoch: int = 0):
        return self.loader.eval()

    def shard(self, rank: int, world_size: int) -> "EvalLoader":
        """Evaluate only this rank's contiguous part of the split (sums all-reduced by the caller)."""
        self.loader.shard(rank, world_size)
        return self

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples
