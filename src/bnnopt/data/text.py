"""Byte-level language-modelling data: readers, fixed splits, sequence loaders.

Every text is read as raw bytes, so the vocabulary is the 256 byte values
(``num_classes`` 256) and bits per character (byte) is the metric:
bpc = mean cross-entropy (nats) / ln 2.

Registered datasets (``DATASETS``):

====================  ========================================================
tinyshakespeare       the "tiny Shakespeare" corpus (Karpathy's char-rnn,
                      public domain), ``tinyshakespeare/input.txt`` under the
                      data root (1,115,394 bytes, SHA-256 checked);
                      ``--download`` fetches it
shakespeare_embedded  the first 400,000 bytes of the same corpus, shipped with
                      bnnopt (xz, SHA-256 checked): needs no file and no network
enwik8                the first 10^8 bytes of an English Wikipedia dump (Hutter
                      prize), ``enwik8/enwik8`` or ``enwik8/enwik8.zip`` under the
                      data root; ``--download`` fetches the zip and checks the
                      extracted file's size and published SHA-1
====================  ========================================================

Splits are fixed, contiguous and the same for everyone: enwik8 uses its standard
90 M / 5 M / 5 M bytes (train / validation / test); the other texts the same
proportions, 90 % / 5 % / 5 %. A validation split therefore always exists
(``val_fraction`` must stay 0 for text; the Trainer evaluates on it anyway).

Sequences of ``block_size`` T tokens: window i of a split holds
x = text[s : s + T], y = text[s + 1 : s + T + 1] (next-byte targets), s = o + i T.
Training windows are shuffled every epoch, and o is a random offset in [0, T)
drawn per epoch, so that over epochs every byte is seen at every position;
both are a pure function of (seed, epoch). Evaluation uses o = 0 and every
window once, in order. Shapes: x, y int64 [B, T].
"""
from __future__ import annotations

import hashlib
import io
import lzma
import math
import os
import shutil
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bnnopt.data._base import DataError, resolve_data_root
from bnnopt.data._loader import Sharded, epoch_generator
from bnnopt.data.split import shard_bounds
from bnnopt.registry import DATASETS

__all__ = ["TextDataset", "TextLoader", "read_tinyshakespeare", "read_shakespeare_embedded",
           "read_enwik8", "text_run_loaders", "bits_per_char", "DEFAULT_BLOCK_SIZE",
           "TINYSHAKESPEARE_SHA256", "EMBEDDED_SHA256", "ENWIK8_SHA1", "TEXT_DATASETS",
           "has_fixed_validation"]

#: Default sequence length T (equal to bnnopt.models.gpt's default block_size).
DEFAULT_BLOCK_SIZE = 128
#: Fractions of train / validation (the rest is test) for texts other than enwik8.
SPLIT = (0.90, 0.05)

TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_BYTES = 1_115_394
TINYSHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                       "tinyshakespeare/input.txt")
EMBEDDED_FILE = "tinyshakespeare_400k.txt.xz"
EMBEDDED_SHA256 = "2e189dbc841c9ffff8bb4a41f2238e735d81e62e936ea48bde5c7b9ac0303ec3"
ENWIK8_URLS = ("http://mattmahoney.net/dc/enwik8.zip", "https://mattmahoney.net/dc/enwik8.zip")
ENWIK8_BYTES = 100_000_000
#: SHA-1 of the extracted ``enwik8`` file as published with the Hutter prize corpus.
ENWIK8_SHA1 = "57b8363b814821dc9d47aa4d41f58733519076b2"
ENWIK8_SPLIT = (90_000_000, 95_000_000)


def bits_per_char(mean_ce_nats: float) -> float:
    """Bits per character (byte): mean cross-entropy in nats divided by ln 2."""
    return mean_ce_nats / math.log(2)


#: The registered text datasets: each has a fixed validation split of its own.
TEXT_DATASETS = frozenset({"tinyshakespeare", "shakespeare_embedded", "enwik8"})


def has_fixed_validation(dataset: str) -> bool:
    """True for a dataset whose validation split is part of the data (the text corpora):
    runs on it report validation scores with ``val_fraction`` 0, and refuse any other."""
    return dataset in TEXT_DATASETS


@dataclass
class TextDataset:
    """A byte-level corpus split into fixed train / val / test uint8 tensors [N] (CPU)."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    source: str = ""
    extra: dict = field(default_factory=dict)
    task = "lm"
    num_classes = 256

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            t = getattr(self, split)
            if t.dtype != torch.uint8 or t.dim() != 1:
                raise DataError(f"{self.name} {split} must be uint8 [N], got {t.dtype} {tuple(t.shape)}")

    @classmethod
    def from_bytes(cls, name: str, data: bytes, source: str,
                   cuts: tuple[int, int] | None = None) -> "TextDataset":
        """Split ``data`` at ``cuts`` (default 90 % / 95 % of its length)."""
        n = len(data)
        if cuts is None:
            cuts = (int(n * SPLIT[0]), int(n * (SPLIT[0] + SPLIT[1])))
        t = torch.frombuffer(bytearray(data), dtype=torch.uint8) if n else torch.zeros(0, dtype=torch.uint8)
        return cls(name, t[:cuts[0]].clone(), t[cuts[0]:cuts[1]].clone(), t[cuts[1]:].clone(), source)

    def __repr__(self) -> str:
        return (f"TextDataset({self.name!r}, train={self.train.numel()}, val={self.val.numel()}, "
                f"test={self.test.numel()} bytes, source={self.source!r})")


class TextLoader(Sharded):
    """Batches (x, y) int64 [B, T] of next-byte windows of one split, on ``device``.

    ``shuffle=True`` (training): ``(len - T) // T`` windows at a random per-epoch
    offset, in a random order, both from ``epoch_generator(seed, epoch)``.
    ``shuffle=False``: ``(len - 1) // T`` windows from offset 0 in order.
    ``eval()`` always yields the offset-0 windows in order (this rank's part).
    """

    def __init__(self, tokens: torch.Tensor, block_size: int, batch_size: int,
                 device: torch.device | str = "cpu", seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, what: str = "text") -> None:
        for name, v in (("block_size", block_size), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"invalid {name} {v!r}; valid: a positive integer")
        self.device = torch.device(device)
        self.tokens = tokens.to(self.device)
        self.block_size, self.batch_size = block_size, batch_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        length = int(tokens.numel())
        self._train_windows = max((length - block_size) // block_size, 0)
        self._eval_windows = max((length - 1) // block_size, 0)
        if self.num_samples < 1:
            raise ValueError(f"{what} has {length} bytes, too few for one sequence of block_size "
                             f"{block_size}; valid: block_size <= {max((length - 1) // (2 if shuffle else 1), 0)}")
        epoch_generator(seed, 0)  # validates seed
        self._arange = torch.arange(block_size + 1, device=self.device)

    @property
    def num_samples(self) -> int:
        return self._train_windows if self.shuffle else self._eval_windows

    def _windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq = self.tokens[starts[:, None] + self._arange].long()
        return seq[:, :-1], seq[:, 1:]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` (from batch ``start``), a pure function of (seed, epoch)."""
        g = epoch_generator(self.seed, epoch)
        n, t = self.num_samples, self.block_size
        if self.shuffle:
            offset = int(torch.randint(0, t, (1,), generator=g))
            order = torch.randperm(n, generator=g)
        else:
            offset, order = 0, torch.arange(n)
        starts_all = (offset + order * t).to(self.device)
        for lo, hi in self.global_ranges()[start:]:
            a, b = self.local_range(lo, hi)
            yield self._windows(starts_all[a:b])

    def eval(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every offset-0 window once (this rank's part), in order."""
        b = batch_size or self.batch_size
        n = self._eval_windows
        first, last = shard_bounds(n, self.rank, self.world_size)
        t = self.block_size
        for i in range(first, last, b):
            j = min(i + b, last)
            yield self._windows(torch.arange(i, j, device=self.device) * t)

    def __repr__(self) -> str:
        return (f"TextLoader(bytes={self.tokens.numel()}, block_size={self.block_size}, "
                f"windows={self.num_samples}, batch_size={self.batch_size}, shuffle={self.shuffle})")


class _Eval:
    """Adapter: ``.epoch(_)`` yields a split once, in order (the Trainer's evaluation loader)."""

    def __init__(self, loader: TextLoader) -> None:
        self.loader = loader

    def epoch(self, epoch: int = 0):
        return self.loader.eval()

    def shard(self, rank: int, world_size: int) -> "_Eval":
        self.loader.shard(rank, world_size)
        return self

    def __len__(self) -> int:
        return -(-self.loader.num_samples // self.loader.batch_size)

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples


def text_run_loaders(ds: TextDataset, *, batch_size: int, device: torch.device | str = "cpu",
                     seed: int = 0, train_limit: int = 0, test_limit: int = 0,
                     val_fraction: float = 0.0, meta_fraction: float = 0.0,
                     eval_batch_size: int = 500, need_train: bool = True,
                     block_size: int | None = None):
    """``(train, val, test, info, None)`` loaders of a :class:`TextDataset` for the Trainer.

    train_limit / test_limit: keep only the first N sequences of the training /
    test (and validation) split (0 = all). ``val_fraction`` and ``meta_fraction``
    must be 0: a text's validation split is fixed, and no meta split is held out.
    """
    if val_fraction:
        raise ValueError(f"invalid val_fraction {val_fraction!r} for text dataset {ds.name!r}: its "
                         "validation split is fixed (the Trainer always evaluates on it); valid: 0")
    if meta_fraction:
        raise ValueError(f"invalid meta_fraction {meta_fraction!r} for text dataset {ds.name!r}; "
                         "valid: meta_data 'train'")
    t = DEFAULT_BLOCK_SIZE if block_size is None else block_size
    train_text, val_text, test_text = ds.train, ds.val, ds.test
    if train_limit:
        train_text = train_text[:(train_limit + 1) * t]
    if test_limit:
        val_text, test_text = val_text[:test_limit * t + 1], test_text[:test_limit * t + 1]
    train = TextLoader(train_text, t, batch_size, device, seed, True, what=f"{ds.name} train")
    eb = eval_batch_size or batch_size
    val = _Eval(TextLoader(val_text, t, eb, device, seed, False, what=f"{ds.name} validation"))
    test = _Eval(TextLoader(test_text, t, eb, device, seed, False, what=f"{ds.name} test"))
    info: dict[str, Any] = {
        "dataset": ds.name, "task": "lm", "num_classes": ds.num_classes, "block_size": t,
        "train_images": train.num_samples if need_train else None,
        "val_images": val.num_samples, "test_images": test.num_samples,
        "train_bytes": int(ds.train.numel()), "val_bytes": int(ds.val.numel()),
        "test_bytes": int(ds.test.numel()), "source": ds.source,
    }
    return train, val, test, info, None


# ---------------------------------------------------------------- readers
def _sha(data: bytes, algo: str = "sha256") -> str:
    return hashlib.new(algo, data, usedforsecurity=False).hexdigest()


def _fetch(urls: tuple[str, ...], dest: Path, check, quiet: bool) -> None:
    """Fetch the first working URL to ``dest`` atomically; ``check(bytes)`` raises on bad data."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        if not quiet:
            print(f"downloading {url}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
            check(tmp.read_bytes())
            os.replace(tmp, dest)
            return
        except (OSError, ValueError) as err:
            errors.append(f"{url}: {err}")
            tmp.unlink(missing_ok=True)
    raise DataError("download failed: " + "; ".join(errors))


def _check_shakespeare(data: bytes) -> None:
    if _sha(data) != TINYSHAKESPEARE_SHA256:
        raise DataError(f"tinyshakespeare input.txt has SHA-256 {_sha(data)}, expected "
                        f"{TINYSHAKESPEARE_SHA256} (a different or damaged file)")


@DATASETS.register("tinyshakespeare", "tiny Shakespeare, 1.1 MB of bytes (char-rnn), 90/5/5 split")
def read_tinyshakespeare(root: str | os.PathLike | None = None, download: bool = False) -> TextDataset:
    """Read ``tinyshakespeare/input.txt`` (or ``input.txt``) under the data root (SHA-256 checked)."""
    base = resolve_data_root(root)
    places = [base / "tinyshakespeare" / "input.txt", base / "input.txt"]
    found = next((p for p in places if p.is_file()), None)
    if found is None and download:
        found = places[0]
        _fetch((TINYSHAKESPEARE_URL,), found, _check_shakespeare, quiet=False)
    if found is None:
        raise DataError(f"tinyshakespeare data not found: looked for input.txt in "
                        f"{', '.join(str(p.parent) for p in places)}; run with --download, or use "
                        "dataset shakespeare_embedded (no files needed)")
    data = found.read_bytes()
    _check_shakespeare(data)
    return TextDataset.from_bytes("tinyshakespeare", data, str(found))


@DATASETS.register("shakespeare_embedded",
                   "first 400,000 bytes of tiny Shakespeare, shipped with bnnopt (no files)")
def read_shakespeare_embedded(root: str | os.PathLike | None = None,
                              download: bool = False) -> TextDataset:
    """The packaged slice (``root``/``download`` accepted for the uniform signature, unused)."""
    path = Path(__file__).parent / "corpora" / EMBEDDED_FILE
    try:
        data = lzma.decompress(path.read_bytes())
    except (OSError, lzma.LZMAError) as err:
        raise DataError(f"cannot read the embedded corpus {path}: {err}") from None
    if _sha(data) != EMBEDDED_SHA256:
        raise DataError(f"embedded corpus {path} has SHA-256 {_sha(data)}, expected {EMBEDDED_SHA256}")
    return TextDataset.from_bytes("shakespeare_embedded", data, f"package:{EMBEDDED_FILE}")


def _enwik8_from_zip(blob: bytes, where: str) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            return z.read("enwik8")
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"cannot read member 'enwik8' of {where}: {err}") from None


def _check_enwik8_zip(blob: bytes) -> None:
    data = _enwik8_from_zip(blob, "the downloaded enwik8.zip")
    if len(data) != ENWIK8_BYTES or _sha(data, "sha1") != ENWIK8_SHA1:
        raise DataError(f"downloaded enwik8 has {len(data)} bytes and SHA-1 {_sha(data, 'sha1')}; "
                        f"expected {ENWIK8_BYTES} bytes and SHA-1 {ENWIK8_SHA1}")


@DATASETS.register("enwik8", "enwik8, 10^8 bytes of Wikipedia XML (Hutter prize), 90M/5M/5M split")
def read_enwik8(root: str | os.PathLike | None = None, download: bool = False) -> TextDataset:
    """Read ``enwik8/enwik8`` or ``enwik8/enwik8.zip`` under the data root.

    The standard 90 M / 5 M / 5 M split applies to the full 10^8-byte file; a file
    of another length (e.g. a test fixture) is split 90 % / 5 % / 5 %.
    ``download=True`` fetches enwik8.zip (checked: size and SHA-1 of the extracted file).
    """
    folder = resolve_data_root(root) / "enwik8"
    raw, zipped = folder / "enwik8", folder / "enwik8.zip"
    if not raw.is_file() and not zipped.is_file() and download:
        _fetch(ENWIK8_URLS, zipped, _check_enwik8_zip, quiet=False)
    if raw.is_file():
        data, source = raw.read_bytes(), str(raw)
    elif zipped.is_file():
        data, source = _enwik8_from_zip(zipped.read_bytes(), str(zipped)), str(zipped)
    else:
        raise DataError(f"enwik8 data not found: looked for enwik8 or enwik8.zip in {folder}; "
                        f"run with --download to fetch {ENWIK8_URLS[0]} (checksum verified)")
    cuts = ENWIK8_SPLIT if len(data) == ENWIK8_BYTES else None
    return TextDataset.from_bytes("enwik8", data, source, cuts)
