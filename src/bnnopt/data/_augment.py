"""Batched image augmentation and normalisation on the compute device.

Random crop with padding ``p`` and horizontal flip, for a whole batch in one gather
from the padded images (the loader pads its whole split once). For image ``b`` with crop offset
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

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Normalizer", "crop_flip", "crop_flip_padded", "draw_crop_flip", "pad_images"]


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


def _reflect_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source coordinate of each of the ``size + 2 pad`` padded positions, reflect mode."""
    coord = (torch.arange(-pad, size + pad, device=device)).abs()
    return torch.where(coord > size - 1, 2 * (size - 1) - coord, coord)


def pad_images(x: torch.Tensor, pad: int, pad_mode: str = "zero") -> torch.Tensor:
    """``[N, C, H, W] -> [N, C, H + 2 pad, W + 2 pad]`` with zero or reflect padding (any dtype)."""
    if pad_mode not in ("zero", "reflect"):
        raise ValueError(f"invalid pad_mode {pad_mode!r}; valid: zero, reflect")
    h, w = x.shape[-2:]
    if pad_mode == "reflect" and (pad >= h or pad >= w):
        raise ValueError(f"reflect padding {pad} needs images larger than the pad, got {h}x{w}")
    if pad == 0:
        return x
    if pad_mode == "zero":
        return F.pad(x, (pad, pad, pad, pad))
    rows, cols = _reflect_index(h, pad, x.device), _reflect_index(w, pad, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def crop_flip_padded(padded: torch.Tensor, index: torch.Tensor | None, dy: torch.Tensor, dx: torch.Tensor,
                     flips: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crops ``padded[index[b], :, dy_b : dy_b + height, dx_b : dx_b + width]``, flipped where ``flips``.

    One gather through an ``unfold`` view (every crop position is a view of the padded
    images, so nothing but the output is materialised). Returns ``[B, C, height, width]``.
    """
    dev = padded.device
    b = torch.arange(padded.shape[0], device=dev) if index is None else index.to(dev)
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # [N, C, 2p+1, 2p+1, H, W] view
    out = windows[b, :, dy.to(dev), dx.to(dev)]  # [B, C, H, W]
    flips = flips.to(dev)
    if dev.type == "cpu":  # copy only the flipped half
        out[flips] = out[flips].flip(3)
        return out
    return torch.where(flips[:, None, None, None], out.flip(3), out)  # no host sync on accelerators


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
    h, w = x.shape[-2:]
    batch = x if index is None else x[index.to(x.device)]
    return crop_flip_padded(pad_images(batch, pad, pad_mode), None, dy, dx, flips, h, w)


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
        return x.to(self.dtype).mul_(self.scale).add_(self.shift)
