"""The packed-file container: round trip, and refusal of damaged or foreign files."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bnnopt.export.container import (
    FORMAT_VERSION,
    MAGIC,
    ExportFormatError,
    read_container,
    write_container,
)


def _blobs():
    gen = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 4, generator=gen),
        "d": torch.randn(2, dtype=torch.float64, generator=gen),
        "h": torch.randn(5, generator=gen).half(),
        "bf": torch.randn(5, generator=gen).bfloat16(),
        "n": torch.tensor(7, dtype=torch.int64),
        "flag": torch.tensor([True, False]),
        "packed": np.arange(11, dtype=np.uint8),
        "empty": torch.zeros(0, 3),
    }


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "m.bnnpk"
    write_container(path, {"format": "test", "x": [1.5, None]}, _blobs())
    return path


def test_round_trip_preserves_dtype_shape_and_bits(tmp_path):
    path = _write(tmp_path)
    manifest, tensors = read_container(path)
    assert manifest == {"format": "test", "x": [1.5, None]}
    for name, value in _blobs().items():
        ref = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
        got = tensors[name]
        assert got.dtype == ref.dtype and got.shape == ref.shape, name
        # compare raw bytes, so -0.0 / NaN payloads would count too
        assert got.reshape(-1).view(torch.uint8).tolist() == ref.reshape(-1).view(torch.uint8).tolist(), name


def test_header_fields_and_checksum(tmp_path):
    data = _write(tmp_path).read_bytes()
    assert data[:8] == MAGIC
    _, version, reserved, mlen, total = struct.unpack_from("<8sIIQQ", data)
    assert (version, reserved, total) == (FORMAT_VERSION, 0, len(data))
    assert mlen % 8 == 0
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]


def test_every_single_byte_flip_is_detected(tmp_path):
    path = _write(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "bad.bnnpk"
    for pos in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        bad.write_bytes(bytes(damaged))
        with pytest.raises(ExportFormatError):
            read_container(bad)


@pytest.mark.parametrize("keep", [0, 5, 11, 40, 100, -1, -32, -33])
def test_truncated_file_refused(tmp_path, keep):
    data = _write(tmp_path).read_bytes()
    bad = tmp_path / "cut.bnnpk"
    bad.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(ExportFormatError, match="truncated"):
        read_container(bad)


def test_trailing_garbage_refused(tmp_path):
    path = _write(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ExportFormatError, match="corrupt"):
        read_container(path)


@pytest.mark.parametrize("content", [b"PK\x03\x04" + b"\0" * 200, b"hello world, not a model\n" * 5, b"{}"])
def test_foreign_files_refused(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(ExportFormatError, match="not a bnnopt packed model"):
        read_container(path)


def test_torch_checkpoint_refused(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(3)}, path)
    with pytest.raises(ExportFormatError, match="not a bnnopt packed model"):
        read_container(path)


def test_newer_version_refused_by_name(tmp_path):
    path = _write(tmp_path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, 3)
    body = bytes(data[:-32])
    path.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(ExportFormatError) as info:
        read_container(path)
    assert f"file format version 3 is newer than this reader's {FORMAT_VERSION}; upgrade bnnopt" in str(info.value)
    # ...even when the rest of the layout is unreadable to this reader.
    path.write_bytes(bytes(data[:12]))
    with pytest.raises(ExportFormatError, match="version 3 is newer"):
        read_container(path)


def test_error_is_a_value_error(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"nope")
    with pytest.raises(ValueError):
        read_container(path)


def test_failed_write_leaves_no_file_and_keeps_old_one(tmp_path):
    path = tmp_path / "m.bnnpk"
    bad_blobs = {"ok": torch.ones(3), "bad": torch.ones(2, dtype=torch.complex64)}
    with pytest.raises(ValueError, match="cannot store dtype"):
        write_container(path, {}, bad_blobs)
    assert list(tmp_path.iterdir()) == []

    _write(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_container(path, {}, bad_blobs)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.bnnpk"]


def test_failure_during_disk_write_leaves_nothing(tmp_path, monkeypatch):
    import os

    path = tmp_path / "m.bnnpk"
    real_fsync = os.fsync

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        write_container(path, {}, _blobs())
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []


def test_exported_packed_file_respects_the_umask(tmp_path):
    import os

    from bnnopt.export.container import write_container

    old = os.umask(0o022)
    try:
        write_container(tmp_path / "m.bnnpk", {"x": 1}, {})
    finally:
        os.umask(old)
    assert (tmp_path / "m.bnnpk").stat().st_mode & 0o777 == 0o644
