"""Packing of k-bit integer codes into bytes, and back (exact round trip).

A quantized weight tensor with ``n`` elements and ``k`` bits per element is
stored as a little-endian *bit stream* of ``ceil(n * k / 8)`` bytes:

    element i occupies stream bits [i*k, i*k + k), least significant bit first;
    stream bit b lives in byte b // 8 at bit position b % 8 (LSB = position 0).

For ``k`` in {1, 2, 4, 8} (the widths bnnopt trains) an element never straddles
a byte, so this is the familiar layout

    byte j = sum_{t=0}^{8/k-1} code[j*(8/k) + t] << (t*k),

e.g. for k = 1 the first weight is bit 0 of byte 0 (numpy
``packbits(..., bitorder="little")``). Other widths 1 <= k <= 8 are supported
by the same stream definition (elements then cross byte boundaries). The unused
high bits of the last byte are zero; the reader checks that they are, so a
flipped padding bit is reported as corruption rather than silently ignored.

Shapes: ``pack_codes(codes, k)`` takes any integer tensor/array whose values
lie in [0, 2^k) and returns a flat ``uint8`` numpy array of
``packed_nbytes(codes.numel(), k)`` bytes; ``unpack_codes(buf, k, n)`` returns a
flat ``uint8`` numpy array of ``n`` codes (the caller reshapes).
"""
from __future__ import annotations

import numpy as np
import torch

SUPPORTED_BITS = tuple(range(1, 9))

# Packing works on chunks of this many elements (a multiple of 8, so every chunk
# but the last ends on a byte boundary for any k) to bound temporary memory.
_CHUNK = 1 << 20


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in SUPPORTED_BITS:
        raise ValueError(
            f"invalid bits per code {bits!r}; valid: {', '.join(map(str, SUPPORTED_BITS))}"
        )
    return int(bits)


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes needed for ``count`` codes of ``bits`` bits: ceil(count * bits / 8)."""
    bits = _check_bits(bits)
    if count < 0:
        raise ValueError(f"invalid code count {count}; must be >= 0")
    return (count * bits + 7) // 8


def _as_numpy_codes(codes: torch.Tensor | np.ndarray, bits: int) -> np.ndarray:
    """Flatten ``codes`` to uint8 after checking they are integers in [0, 2^bits)."""
    if isinstance(codes, torch.Tensor):
        if codes.is_floating_point() or codes.is_complex():
            raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}")
        arr = codes.detach().cpu().reshape(-1).numpy()
    else:
        arr = np.asarray(codes).reshape(-1)
        if arr.dtype.kind not in "iub":
            raise ValueError(f"codes must be an integer array, got dtype {arr.dtype}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= (1 << bits):
            raise ValueError(
                f"codes out of range for {bits} bits: min {lo}, max {hi}; valid range [0, {(1 << bits) - 1}]"
            )
    return arr.astype(np.uint8, copy=False)


def pack_codes(codes: torch.Tensor | np.ndarray, bits: int) -> np.ndarray:
    """Pack integer ``codes`` (values in [0, 2^bits)) into a flat uint8 bit stream.

    Returns ``np.ndarray`` of dtype uint8 and length ``packed_nbytes(n, bits)``.
    """
    bits = _check_bits(bits)
    flat = _as_numpy_codes(codes, bits)
    if bits == 8:
        return flat.copy()
    if 8 % bits == 0:  # fast path: whole codes per byte, byte = sum_t code[t] << (t*k)
        per = 8 // bits
        padded = np.zeros(-(-flat.size // per) * per, dtype=np.uint8)
        padded[:flat.size] = flat
        shifts = (np.arange(per, dtype=np.uint8) * bits)
        return np.bitwise_or.reduce(padded.reshape(-1, per) << shifts, axis=1).astype(np.uint8)
    pieces = []
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK]
        # (m, 8) little-endian bits of each code, keep the low k -> stream order.
        stream = np.unpackbits(chunk[:, None], axis=1, bitorder="little")[:, :bits]
        pieces.append(np.packbits(stream.reshape(-1), bitorder="little"))
    out = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)
    assert out.size == packed_nbytes(flat.size, bits)
    return out


def unpack_codes(buf: bytes | np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes (uint8, flat) from ``buf``.

    Raises ValueError if ``buf`` has the wrong length or non-zero padding bits.
    """
    bits = _check_bits(bits)
    if isinstance(buf, (bytes, bytearray, memoryview)):
        data = np.frombuffer(buf, dtype=np.uint8)
    else:
        data = np.asarray(buf, dtype=np.uint8).reshape(-1)
    need = packed_nbytes(count, bits)
    if data.size != need:
        raise ValueError(f"packed buffer has {data.size} bytes; {count} codes of {bits} bits need {need}")
    if bits == 8:
        return data.copy()
    used = count * bits
    if used % 8:
        pad = int(data[-1]) >> (used % 8)
        if pad:
            raise ValueError("non-zero padding bits after the last code (corrupt packed data)")
    if 8 % bits == 0:  # fast path: code t of byte j = (byte_j >> t*k) & (2^k - 1)
        per = 8 // bits
        shifts = (np.arange(per, dtype=np.uint8) * bits)
        codes = (data[:, None] >> shifts) & np.uint8((1 << bits) - 1)
        return codes.reshape(-1)[:count].copy()
    out = np.empty(count, dtype=np.uint8)
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    step = _CHUNK  # elements per chunk; chunk * bits is a multiple of 8
    for start in range(0, count, step):
        m = min(step, count - start)
        lo_byte = start * bits // 8
        hi_byte = (start * bits + m * bits + 7) // 8
        stream = np.unpackbits(data[lo_byte:hi_byte], bitorder="little")[: m * bits]
        out[start:start + m] = (stream.reshape(m, bits).astype(np.uint16) @ weights).astype(np.uint8)
    return out
