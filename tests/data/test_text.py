"""Byte-level text data: readers (embedded, tiny Shakespeare, enwik8 from a fake zip),
fixed splits, next-byte windows, determinism and sharding of the sequence loader."""
from __future__ import annotations

import hashlib
import zipfile

import pytest
import torch

from bnnopt.data import DataError, load_dataset
from bnnopt.data.text import (
    EMBEDDED_SHA256,
    TextDataset,
    TextLoader,
    bits_per_char,
    read_enwik8,
    read_tinyshakespeare,
    text_run_loaders,
)
from bnnopt.models.gpt import DEFAULT_BLOCK_SIZE as MODEL_BLOCK
from bnnopt.data.text import DEFAULT_BLOCK_SIZE as DATA_BLOCK


def _ds(n=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist())
    return TextDataset.from_bytes("fake", data, "test")


def test_embedded_corpus_needs_no_files(tmp_path):
    ds = load_dataset("shakespeare_embedded", root=tmp_path / "nothing")
    whole = bytes(torch.cat([ds.train, ds.val, ds.test]).tolist())
    assert len(whole) == 400_000 and hashlib.sha256(whole).hexdigest() == EMBEDDED_SHA256
    assert whole.startswith(b"First Citizen:")
    assert (ds.train.numel(), ds.val.numel(), ds.test.numel()) == (360_000, 20_000, 20_000)
    assert ds.num_classes == 256 and MODEL_BLOCK == DATA_BLOCK


def test_shared_tinyshakespeare(shared_dir):
    ds = read_tinyshakespeare(shared_dir / "data")
    assert ds.train.numel() + ds.val.numel() + ds.test.numel() == 1_115_394
    emb = load_dataset("shakespeare_embedded")
    assert torch.equal(ds.train[:360_000], emb.train)  # the embedded text is its first slice


def test_tinyshakespeare_missing_and_damaged(tmp_path):
    with pytest.raises(DataError, match="tinyshakespeare data not found"):
        read_tinyshakespeare(tmp_path)
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_bytes(b"not shakespeare")
    with pytest.raises(DataError, match="SHA-256"):
        read_tinyshakespeare(tmp_path)


def test_enwik8_reader_on_fake_zip_and_raw(tmp_path):
    data = bytes(range(256)) * 40  # 10,240 bytes
    folder = tmp_path / "enwik8"
    folder.mkdir()
    with zipfile.ZipFile(folder / "enwik8.zip", "w") as z:
        z.writestr("enwik8", data)
    ds = read_enwik8(tmp_path)
    assert bytes(torch.cat([ds.train, ds.val, ds.test]).tolist()) == data
    assert ds.train.numel() == int(len(data) * 0.9)
    (folder / "enwik8").write_bytes(data[:2000])  # an extracted file wins over the zip
    assert read_enwik8(tmp_path).train.numel() == 1800
    with pytest.raises(DataError, match="enwik8 data not found"):
        read_enwik8(tmp_path / "empty")
    bad = tmp_path / "bad" / "enwik8"
    bad.mkdir(parents=True)
    with zipfile.ZipFile(bad / "enwik8.zip", "w") as z:
        z.writestr("other", b"x")
    with pytest.raises(DataError, match="member 'enwik8'"):
        read_enwik8(tmp_path / "bad")


def test_windows_are_next_byte_pairs_and_deterministic():
    ds = _ds()
    loader = TextLoader(ds.train, 8, 5, seed=3)
    assert loader.num_samples == (900 - 8) // 8
    batches = list(loader.epoch(0))
    assert sum(x.shape[0] for x, _ in batches) == loader.num_samples
    text = ds.train.long()
    for x, y in batches:
        assert x.dtype == torch.int64 and x.shape[1] == 8
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x, y):  # every window is a contiguous slice of the text
            s = next(i for i in range(len(text) - 8) if torch.equal(text[i:i + 8], row_x))
            assert torch.equal(text[s + 1:s + 9], row_y)
    again = list(loader.epoch(0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    firsts = {int(list(loader.epoch(e))[0][0][0, 0]) for e in range(6)}
    assert len(firsts) > 1  # order / offset change with the epoch


def test_eval_windows_and_sharding():
    ds = _ds()
    loader = TextLoader(ds.test, 8, 4, shuffle=False)
    xs = torch.cat([x for x, _ in loader.eval()])
    assert xs.shape == ((50 - 1) // 8, 8) and torch.equal(xs[0], ds.test[:8].long())
    train = TextLoader(ds.train, 8, 6, seed=1)
    whole = [x for x, _ in train.epoch(2)]
    parts = [[x for x, _ in TextLoader(ds.train, 8, 6, seed=1).shard(r, 2).epoch(2)] for r in (0, 1)]
    for i, full in enumerate(whole[:len(parts[0])]):
        assert torch.equal(torch.cat([parts[0][i], parts[1][i]]), full)


def test_run_loaders_limits_and_errors():
    ds = _ds(4000)
    train, val, test, info, meta = text_run_loaders(ds, batch_size=4, train_limit=10,
                                                     test_limit=3, block_size=16)
    assert train.num_samples == 10 and test.num_samples == 3 and val.num_samples == 3
    assert meta is None and info["block_size"] == 16 and info["num_classes"] == 256
    with pytest.raises(ValueError, match="val_fraction"):
        text_run_loaders(ds, batch_size=4, val_fraction=0.1)
    with pytest.raises(ValueError, match="too few"):
        text_run_loaders(ds, batch_size=4, block_size=1000)
    with pytest.raises(ValueError, match="block_size"):
        TextLoader(ds.train, 0, 4)


def test_bits_per_char():
    assert bits_per_char(torch.log(torch.tensor(256.0)).item()) == pytest.approx(8.0)
