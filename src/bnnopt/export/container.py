"""The bnnopt packed-model container: magic, version, JSON manifest, blobs, checksum.

Byte layout (all integers little-endian; see docs/export_format.md)::

    offset  size  field
    0       8     magic  b"\\x89BNNPKD\\n"  (the high byte and the newline catch
                  7-bit and text-mode mangling, as PNG's signature does)
    8       4     uint32 format version (this reader writes and reads 1)
    12      4     uint32 reserved, must be 0
    16      8     uint64 H = manifest length in bytes (a multiple of 8)
    24      8     uint64 N = total file length in bytes (detects truncation)
    32      H     manifest: UTF-8 JSON object, right-padded with spaces
    32+H    D     data section: the blobs, each starting at a multiple of 8
                  bytes from the start of the data section, zero-padded between
    32+H+D  32    SHA-256 of every preceding byte of the file (N = 64+H+D)

Bytes 0-11 (magic and version) keep their meaning in every future version, so
any reader can tell a foreign file from a newer one.

The manifest's ``"tensors"`` entry maps each blob name to
``{"dtype", "shape", "offset", "nbytes"}`` (offset relative to the data
section). Everything else in the manifest belongs to the layer above
(:mod:`bnnopt.export.writer`).

Reading checks, in order: the magic (else *not a bnnopt packed model*), the
version (a newer one is refused by name before anything else is parsed, since
its layout may differ), the length recorded in the header against the actual
length (else *truncated*), the whole-file SHA-256 (else *corrupt*), then the manifest's JSON
and that every blob lies inside the data section with a size matching its dtype and shape. Every failure raises
:class:`ExportFormatError` (a ValueError). Writing goes to a temporary file in
the destination directory that is renamed over the destination only once it is
complete (``os.replace``), so a reader never sees a half-written file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAGIC = b"\x89BNNPKD\n"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")  # magic, version, reserved, manifest length, file length
_DIGEST = 32
_ALIGN = 8

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class ExportFormatError(ValueError):
    """A file is not a readable bnnopt packed model (foreign, corrupt, truncated, too new)."""


def _check_host() -> None:
    if sys.byteorder != "little":  # pragma: no cover - no big-endian host here
        raise ExportFormatError("bnnopt packed files are little-endian; this host is big-endian")


def tensor_bytes(t: torch.Tensor) -> tuple[str, list[int], bytes]:
    """(dtype name, shape, raw little-endian bytes) of a CPU copy of ``t``."""
    if t.dtype not in _DTYPE_NAMES:
        raise ValueError(f"cannot store dtype {t.dtype}; valid: {', '.join(DTYPES)}")
    flat = t.detach().cpu().contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return _DTYPE_NAMES[t.dtype], list(t.shape), raw


def write_container(path: str | os.PathLike, manifest: Mapping[str, Any], blobs: Mapping[str, Any]) -> int:
    """Atomically write ``manifest`` + ``blobs`` to ``path``; return the file size.

    ``blobs`` maps names to torch tensors or uint8 numpy arrays (stored with
    their dtype and shape). ``manifest`` must be JSON-serialisable and must not
    use the key ``"tensors"`` (the container fills it in).
    """
    _check_host()
    if "tensors" in manifest:
        raise ValueError("manifest key 'tensors' is reserved for the container")
    table: dict[str, dict[str, Any]] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, value in blobs.items():
        t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"blob {name!r} must be a tensor or numpy array, got {type(value).__name__}")  # noqa: TRY004
        dtype, shape, raw = tensor_bytes(t)
        pad = (-offset) % _ALIGN
        chunks.append(b"\0" * pad)
        offset += pad
        table[name] = {"dtype": dtype, "shape": shape, "offset": offset, "nbytes": len(raw)}
        chunks.append(raw)
        offset += len(raw)
    full = dict(manifest)
    full["tensors"] = table
    text = json.dumps(full, sort_keys=True, separators=(",", ":"), allow_nan=True).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    total = _HEADER.size + len(text) + offset + _DIGEST
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(text), total)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        from bnnopt.runs.io import current_umask

        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 -> the usual umask mode
    except (AttributeError, OSError):  # pragma: no cover - no fchmod (Windows)
        pass
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as f:
            for part in (head, text, *chunks):
                f.write(part)
                digest.update(part)
                size += len(part)
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        assert size + _DIGEST == total
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return total


def read_header(data: bytes, where: str = "file") -> int:
    """Validate magic, version, length and reserved field; return the manifest length."""
    if len(data) < 8 and not MAGIC.startswith(data):
        raise ExportFormatError(f"{where} is not a bnnopt packed model (only {len(data)} bytes, bad magic)")
    if len(data) >= 8 and data[:8] != MAGIC:
        raise ExportFormatError(f"{where} is not a bnnopt packed model (bad magic bytes {data[:8]!r})")
    if len(data) < 12:
        raise ExportFormatError(f"{where} is truncated ({len(data)} bytes; the header alone is {_HEADER.size})")
    (version,) = struct.unpack_from("<I", data, 8)
    if version > FORMAT_VERSION:
        raise ExportFormatError(
            f"{where}: file format version {version} is newer than this reader's {FORMAT_VERSION}; upgrade bnnopt"
        )
    if version < 1:
        raise ExportFormatError(f"{where}: invalid file format version {version}")
    if len(data) < _HEADER.size + _DIGEST:
        raise ExportFormatError(f"{where} is truncated ({len(data)} bytes; a packed model has at "
                                f"least {_HEADER.size + _DIGEST})")
    _, _, reserved, mlen, total = _HEADER.unpack_from(data, 0)
    if total > len(data):
        raise ExportFormatError(f"{where} is truncated ({len(data)} bytes of {total})")
    if total < len(data):
        raise ExportFormatError(f"{where} is corrupt ({len(data) - total} unexpected trailing bytes after {total})")
    if reserved != 0:
        raise ExportFormatError(f"{where} is corrupt (reserved header field is {reserved}, expected 0)")
    return mlen


def read_container(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify a container; return (manifest without 'tensors', name -> tensor)."""
    _check_host()
    path = Path(path)
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such packed model file: {where}") from None
    mlen = read_header(data, where)
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ExportFormatError(f"{where} is corrupt (SHA-256 checksum mismatch)")
    start = _HEADER.size
    if start + mlen > len(body):
        raise ExportFormatError(f"{where} is corrupt (manifest length {mlen} exceeds the file)")
    try:
        manifest = json.loads(data[start:start + mlen].decode("utf-8"))
        table = manifest.pop("tensors")
        if not isinstance(manifest, dict) or not isinstance(table, dict):
            raise TypeError("manifest is not an object")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ExportFormatError(f"{where} is corrupt (unreadable manifest: {exc})") from None
    data_start = start + mlen
    data_len = len(body) - data_start
    tensors: dict[str, torch.Tensor] = {}
    for name, spec in table.items():
        tensors[name] = _tensor_from(spec, body, data_start, data_len, f"{where}: tensor {name!r}")
    return manifest, tensors


def _tensor_from(spec: Any, body: bytes, data_start: int, data_len: int, where: str) -> torch.Tensor:
    try:
        dtype = DTYPES[spec["dtype"]]
        shape = [int(s) for s in spec["shape"]]
        offset, nbytes = int(spec["offset"]), int(spec["nbytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportFormatError(f"{where} has an invalid table entry ({exc!r})") from None
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if any(s < 0 for s in shape) or nbytes != math.prod(shape) * itemsize:
        raise ExportFormatError(f"{where}: {nbytes} bytes do not hold shape {shape} of {spec['dtype']}")
    if offset < 0 or offset + nbytes > data_len:
        raise ExportFormatError(f"{where} lies outside the data section")
    raw = bytearray(body[data_start + offset:data_start + offset + nbytes])
    if not nbytes:
        return torch.zeros(shape, dtype=dtype)
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape)
