"""Batched image augmentation and normalisation on the compute device.

Random crop with padding ``p`` and horizontal flip, for a whole batch in one gather,
without materialising the padded images. For image ``b`` with crop offset
``(dy_b, dx_b)`` in ``[0, 2p]`` (the position of the crop's top-left corner inside the
padded image, as ``RandomCrop(H, padding=p)`` draws it) and flip bit ``f_b``::

    out[b, c, i, j] = x[b, c, r(dy_b - p + i), r(dx_b - p + j')]
    j' = W - 1 - j if f_b else j          (flip after crop = reversed columns)

where ``r`` maps a coordinate of the padded image back to the source: with zero
padding, out-of-range coordinates give 0 (a black pixel *before* normalisation, which
is what the official FSG / MetaQuant code does: pad the PIL image, then ToTensor and
Normalize); with reflect padding ``r(-k) = k`` and ``r(H - 1 + k) = H - 1 - k``.

Normalisation: ``x_norm = (x / 255 - mean) / std = x * (1 / (255 std)) - mean / std``.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["draw_crop_flip", "crop_flip", "Normalizer"]


def draw_crop_flip(n: int, pad: int, flip: bool, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random offsets ``dy, dx`` in ``[0, 2 pad]`` and flip bits for ``n`` images (CPU tensors).

    Drawn in a fixed order (dy, dx, flip) from ``generator`` so the result is a pure
    function of the generator's state.
    """
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    if flip:
        flips = torch.randint(0, 2, (n,), generator=generator).bool()
    else:
        flips = torch.zeros(n, dtype=torch.bool)
    return dy, dx, flips


def _source_index(offset: torch.Tensor, size: int, pad: int, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Source coordinates ``[B, size]`` for crop offsets ``[B]``; plus a validity mask for zero padding."""
    coord = offset[:, None] - pad + torch.arange(size, device=offset.device)
    if mode == "reflect":
        coord = coord.abs()
        coord = torch.where(coord > size - 1, 2 * (size - 1) - coord, coord)
        return coord, None
    valid = (coord >= 0) & (coord < size)
    return coord.clamp(0, size - 1), valid


def crop_flip(x: torch.Tensor, index: torch.Tensor | None, dy: torch.Tensor, dx: torch.Tensor,
              flips: torch.Tensor, pad: int, pad_mode: str = "zero") -> torch.Tensor:
    """Crop-with-padding and flip images ``x[index]`` (all of ``x`` if index is None).

    Args:
        x: ``[N, C, H, W]`` images (any dtype; uint8 in the loader).
        index: ``[B]`` long indices into ``x``, or None for ``B = N``.
        dy, dx: ``[B]`` crop offsets in ``[0, 2 pad]``; flips: ``[B]`` bool.
        pad: padding in pixels (``pad < H, W`` for reflect); pad_mode: "zero" or "reflect".
    Returns:
        ``[B, C, H, W]`` tensor of ``x``'s dtype on ``x``'s device.
    """
    n, c, h, w = x.shape
    if pad_mode not in ("zero", "reflect"):
        raise ValueError(f"invalid pad_mode {pad_mode!r}; valid: zero, reflect")
    if pad_mode == "reflect" and (pad >= h or pad >= w):
        raise ValueError(f"reflect padding {pad} needs images larger than the pad, got {h}x{w}")
    dev = x.device
    b = torch.arange(n, device=dev) if index is None else index.to(dev)
    rows, vr = _source_index(dy.to(dev), h, pad, pad_mode)
    cols, vc = _source_index(dx.to(dev), w, pad, pad_mode)
    f = flips.to(dev)[:, None]
    cols = torch.where(f, cols.flip(1), cols)
    out = x[b[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
            rows[:, None, :, None], cols[:, None, None, :]]
    if vr is not None:
        vc = torch.where(f, vc.flip(1), vc)
        mask = vr[:, None, :, None] & vc[:, None, None, :]
        out = out * mask.to(out.dtype)
    return out


class Normalizer:
    """``x_uint8 -> (x / 255 - mean) / std`` per channel, as one fused multiply-add.

    Args:
        mean, std: length-C sequences in [0, 1] pixel units.
        device, dtype: where the result lives and its floating dtype.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"invalid normalisation mean={tuple(mean)} std={tuple(std)}; "
                             "valid: equal lengths and std > 0")
        m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        self.scale = (1.0 / (255.0 * s)).to(device=device, dtype=dtype)
        self.shift = (-m / s).to(device=device, dtype=dtype)
        self.dtype = dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` uint8 -> ``[B, C, H, W]`` float (``self.dtype``)."""
        return torch.addcmul(self.shift, x.to(self.dtype), self.scale)
