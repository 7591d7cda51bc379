"""Property-based: a damaged .bnnpk file (also with its checksum recomputed, so the
parser behind the checksum is exercised) loads or raises one ExportFormatError line."""
from __future__ import annotations

import hashlib

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bnnopt.export import export_packed, load_packed  # noqa: E402
from bnnopt.nn import QuantConfig  # noqa: E402

FAST = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def packed(tmp_path_factory, quantized):
    path = tmp_path_factory.mktemp("fuzz") / "mlp.bnnpk"
    model = quantized("mlp", {"hidden": 8, "hidden_layers": 1, "input_size": 4}, QuantConfig(), 0)
    export_packed(model, path, {"model": "mlp"})
    return path.read_bytes()


def _rehash(data: bytes) -> bytes:
    return data[:-32] + hashlib.sha256(data[:-32]).digest() if len(data) > 32 else data


@FAST
@given(flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=1,
                      max_size=3), rehash=st.booleans(), cut=st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_damaged_packed_file(tmp_path, packed, flips, rehash, cut):
    data = bytearray(packed)
    body = len(data) - 32
    for pos, mask in flips:
        data[pos % body] ^= mask
    data = bytes(data)
    if cut is not None:
        data = data[: cut % len(data)]
    if rehash:
        data = _rehash(data)
    path = tmp_path / "x.bnnpk"
    path.write_bytes(data)
    try:
        load_packed(path)
    except ValueError as err:
        assert "\n" not in str(err).strip(), str(err)
