"""Property-based: corrupted IDX and CIFAR files give data or one DataError line."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bnnopt.data._cifar import read_cifar_batch  # noqa: E402
from bnnopt.data._idx import read_idx  # noqa: E402

FAST = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, byte in edits:
        if not buf:
            break
        pos %= len(buf)
        if kind == "flip":
            buf[pos] ^= byte or 1
        elif kind == "cut":
            del buf[pos:]
        elif kind == "insert":
            buf.insert(pos, byte)
    return bytes(buf)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert"]),
                           st.integers(0, 10_000), st.integers(0, 255)), max_size=4)


def _one_line(err: ValueError) -> None:
    assert "\n" not in str(err).strip(), str(err)


@FAST
@given(edits=EDITS, gz=st.booleans(), ndim=st.sampled_from([None, 1, 3]))
def test_idx_reader(tmp_path, edits, gz, ndim):
    raw = _idx_bytes(np.arange(2 * 4 * 4).reshape(2, 4, 4) % 256)
    data = gzip.compress(raw) if gz else raw
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(_mutate(data, edits))
    try:
        arr = read_idx(path, ndim=ndim)
    except ValueError as err:
        _one_line(err)
        return
    assert arr.dtype == np.uint8 and (ndim is None or arr.ndim == ndim)


@FAST
@given(edits=EDITS, n=st.integers(0, 3), drop=st.sampled_from([None, b"data", b"labels"]))
def test_cifar_batch_reader(tmp_path, edits, n, drop):
    d = {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n)),
         b"batch_label": b"t"}
    if drop:
        del d[drop]
    path = tmp_path / "data_batch_1"
    path.write_bytes(_mutate(pickle.dumps(d, protocol=2), edits))
    try:
        x, y = read_cifar_batch(path)
    except ValueError as err:
        _one_line(err)
        return
    assert x.shape[0] == y.shape[0]
