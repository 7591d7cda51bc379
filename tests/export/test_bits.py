"""Bit packing of k-bit codes: exact round trips and the documented byte layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bnnopt.export.bits import pack_codes, packed_nbytes, unpack_codes


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 63, 1000])
def test_round_trip_is_exact(bits, count):
    gen = torch.Generator().manual_seed(bits * 1000 + count)
    codes = torch.randint(0, 2**bits, (count,), generator=gen, dtype=torch.int64)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.size == packed_nbytes(count, bits) == (count * bits + 7) // 8
    assert np.array_equal(unpack_codes(packed.tobytes(), bits, count), codes.numpy().astype(np.uint8))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_layout_matches_closed_form(bits):
    # byte j = sum_t code[j*(8/k) + t] << (t*k): the first element sits in the low bits.
    rng = np.random.default_rng(bits)
    per = 8 // bits
    codes = rng.integers(0, 2**bits, size=5 * per, dtype=np.uint8)
    expected = np.zeros(5, dtype=np.int64)
    for i, c in enumerate(codes):
        expected[i // per] += int(c) << ((i % per) * bits)
    assert np.array_equal(pack_codes(codes, bits).astype(np.int64), expected)


def _reference_stream(codes, bits):
    """The documented definition, bit by bit: element i -> stream bits [i*k, i*k+k), LSB first."""
    out = [0] * ((len(codes) * bits + 7) // 8)
    for i, c in enumerate(codes):
        for b in range(bits):
            if (int(c) >> b) & 1:
                pos = i * bits + b
                out[pos // 8] |= 1 << (pos % 8)
    return out


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_layout_matches_bit_stream_definition(bits):
    codes = np.random.default_rng(10 + bits).integers(0, 2**bits, size=37, dtype=np.uint8)
    assert pack_codes(codes, bits).tolist() == _reference_stream(codes, bits)


def test_one_bit_matches_numpy_packbits_little():
    codes = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 1], dtype=np.uint8)
    assert np.array_equal(pack_codes(codes, 1), np.packbits(codes, bitorder="little"))
    assert pack_codes(codes, 1).tolist() == [0b10001101, 0b00000011]


def test_shapes_are_flattened_in_row_major_order():
    codes = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=torch.uint8)
    out = unpack_codes(pack_codes(codes, 2), 2, 8)
    assert out.tolist() == codes.reshape(-1).tolist()


def test_out_of_range_and_bad_input_rejected():
    with pytest.raises(ValueError, match="out of range for 2 bits"):
        pack_codes(torch.tensor([0, 4]), 2)
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(torch.tensor([-1, 0]), 1)
    with pytest.raises(ValueError, match="integer"):
        pack_codes(torch.tensor([0.0, 1.0]), 1)
    with pytest.raises(ValueError, match="invalid bits per code 9; valid: 1, 2"):
        pack_codes(torch.tensor([0]), 9)
    with pytest.raises(ValueError, match="invalid bits per code 0"):
        unpack_codes(b"", 0, 0)


def test_unpack_detects_wrong_length_and_dirty_padding():
    packed = pack_codes(np.ones(5, dtype=np.uint8), 1)  # 0b00011111
    with pytest.raises(ValueError, match="need 1"):
        unpack_codes(packed.tobytes() + b"\0", 1, 5)
    dirty = packed.copy()
    dirty[0] |= 0b10000000
    with pytest.raises(ValueError, match="padding"):
        unpack_codes(dirty, 1, 5)


def test_large_input_crosses_chunk_boundary():
    from bnnopt.export import bits as bits_module

    n = bits_module._CHUNK + 13
    codes = np.random.default_rng(0).integers(0, 8, size=n, dtype=np.uint8)
    assert np.array_equal(unpack_codes(pack_codes(codes, 3), 3, n), codes)
