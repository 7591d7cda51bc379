"""Quantization level sets of the loss-aware family and the D-weighted scale solver.

Level sets (LAB, Hou et al. ICLR 2017 Sec. 3; LAQ, Hou and Kwok ICLR 2018 Sec. 3.1).
A quantized weight tensor is ``W_hat = alpha * b`` with one scale ``alpha > 0`` per
layer and every ``b_i`` in a fixed, symmetric set ``Q`` of normalised levels:

* 1 bit (LAB / binary LAQ):  ``Q = {-1, +1}``  (``sign(0) := +1``)
* m bits, ``n = 2^(m-1) - 1``:
    - linear:      ``Q = {-k/n : k = -n..n}``                      (2n + 1 levels)
    - logarithmic: ``Q = {0} U {+-2^-k : k = 0..n-1}``             (2n + 1 levels)
  so 2 bits is ternary {-1, 0, 1} for both; 4 bits has 15 levels (one of the 16
  codes is unused, as in LAQ); 8 bits (linear only: the uniform 8-bit layers of
  BLAQ's ImageNet run) has 255.
* pow2 (BLAQ, Ma et al. AAAI 2024, "Notations"): powers of two, no zero,
  ``Q = {+-2^-j : j = 0..k-1}`` for k bits (2k levels).

The BLAQ paper prints ``Q = {-1, ..., -1/2^(k-1), -1/2^k, 1/2^k, ..., 1}``, calls it
"a set of 2k quantized values" and adds "when k = 1, Q = {-1, 1}". The printed
endpoints +-1/2^k would give 2k + 2 values ({+-1, +-1/2} at k = 1); the count 2k
and the k = 1 example agree with each other, so the set used is the 2k values
from +-1 down to +-1/2^(k-1):

    k = 1:  {-1, 1}                                    2 of the 2 codes
    k = 2:  {-1, -1/2, 1/2, 1}                         4 of the 4 codes
    k = 4:  {+-1, +-1/2, +-1/4, +-1/8}                 8 of the 16 codes

(at k = 4 the set needs only 3 bits; the other 8 codes are unused, as LAQ leaves
one code unused). Without a zero level every weight keeps a sign, so a 2-bit
pow2 layer is not ternary.

Codes: level ``Q[c]`` (sorted ascending) has the integer code ``c`` in [0, 2^m).
Projection ``b = Pi_Q(x)`` maps x to the nearest level (ties go to the larger
level), i.e. ``x`` is bucketed by the midpoints of consecutive levels; for the
log levels these midpoints are exactly LAQ's thresholds (0 below 2^-n, and
0.75 * 2^-k between 2^-k and 2^-(k+1)).

Scale (LAQ Eq. 8-9, LAB Eq. 6-7). With ``d > 0`` the diagonal of the
Hessian estimate D (one entry per weight), the loss-aware quantization solves::

    min_{alpha > 0, b in Q^n}   sum_i d_i (alpha b_i - w_i)^2                     (*)

For fixed b the minimiser is ``alpha = <d*b, w> / <d*b, b>``; for 1 bit with
``b = sign(w)`` this is LAB's closed form ``alpha = ||d * w||_1 / ||d||_1`` (then
``b = sign(w)`` is also optimal for that alpha). For fixed alpha the minimiser is
``b = Pi_Q(w / alpha)`` element-wise. LAQ alternates the two exact steps; each
step does not increase (*), so the iteration converges to a fixed point, but
it may stop in a local minimum. ``solve_exact`` finds the global minimiser of (*):
``E(alpha) = min_b (*)`` is continuous and piecewise quadratic in alpha (b changes
only when some ``|w_i| / alpha`` crosses a midpoint, where both levels are equally
near), and at every such breakpoint its slope can only drop (a minimum of convex
quadratics), so the global minimum is the stationary point ``<d*b, w> / <d*b, b>``
of one piece. Sorting the N * n breakpoints and accumulating the two sums gives
every piece's stationary point at once (the generalisation to m bits of LAQ's exact
ternary solution, Sec. 3.2 of the LAQ paper).

Shapes: ``w`` and ``d`` are any (equal) shape; codes have that shape (uint8);
alpha is a 0-d tensor.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from bnnopt.registry import choice

BITS = (1, 2, 4)
LAYER_BITS = (1, 2, 4, 8)   # 8: per-layer only (first/last layers), linear levels
LEVEL_KINDS = ("linear", "log", "pow2")


def check_levels(bits: int, kind: str) -> None:
    """ValueError unless ``kind`` levels exist at ``bits`` (8 bits: linear only)."""
    choice(bits, LAYER_BITS, "bits")
    choice(kind, LEVEL_KINDS, "levels")
    if bits == 8 and kind != "linear":
        raise ValueError(f"invalid levels {kind!r} for 8 bits; valid: linear")


@lru_cache(maxsize=None)
def _levels(bits: int, kind: str) -> tuple[float, ...]:
    if bits == 1:
        return (-1.0, 1.0)
    if kind == "pow2":
        pos = [2.0 ** -j for j in range(bits - 1, -1, -1)]
        return tuple([-p for p in reversed(pos)] + pos)
    n = 2 ** (bits - 1) - 1
    if kind == "linear":
        pos = [k / n for k in range(1, n + 1)]
    else:
        pos = [2.0 ** -k for k in range(n - 1, -1, -1)]
    return tuple([-p for p in reversed(pos)] + [0.0] + pos)


def level_values(bits: int, kind: str = "linear") -> torch.Tensor:
    """The sorted normalised levels Q (float32; 2^bits - 1 values, 2 at 1 bit, 2*bits
    for pow2)."""
    check_levels(bits, kind)
    return torch.tensor(_levels(bits, kind), dtype=torch.float32)


def code_table(bits: int, kind: str = "linear") -> torch.Tensor:
    """Decode table of length 2^bits: entry c is the level of code c (unused codes -> 0)."""
    values = level_values(bits, kind)
    table = torch.zeros(2 ** bits, dtype=torch.float32)
    table[: values.numel()] = values
    return table


def project(x: torch.Tensor, bits: int, kind: str = "linear") -> torch.Tensor:
    """Codes (uint8) of the nearest levels of ``x`` (ties go up); ``x`` any shape.

    Linear levels (and 2-bit log, which is the same set) by arithmetic,
    ``k = clamp(floor(n x + 1/2), -n, n)``, code ``k + n``; log and pow2 levels by
    bucketing ``x`` with the midpoints of consecutive levels.
    """
    if bits == 1:
        return (x >= 0).to(torch.uint8)
    if kind == "linear" or (bits == 2 and kind == "log"):
        n = 2 ** (bits - 1) - 1
        k = torch.floor(x * n + 0.5).clamp_(-n, n)
        return k.add_(n).to(torch.uint8)
    values = level_values(bits, kind).to(x.device, x.dtype)
    mids = (values[1:] + values[:-1]) / 2
    return torch.bucketize(x, mids, right=True).to(torch.uint8)


def levels_of(codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``table[codes]`` in the table's dtype (index_select: the fastest gather on CPU)."""
    return table.index_select(0, codes.flatten().int()).view(codes.shape)


def scale_for(w: torch.Tensor, d: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Closed-form ``alpha = <d*b, w> / <d*b, b>`` for fixed levels b (0 if b == 0)."""
    db = (d * b).flatten()
    num = torch.dot(db, w.flatten().to(db.dtype))
    den = torch.dot(db, b.flatten().to(db.dtype))
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(w.dtype).tiny), num.new_zeros(()))


def scale_official(w: torch.Tensor, d: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The official LAQ code's alpha-step ``sum |b d w| / sum |b| d`` (0 if b == 0).

    Equal to :func:`scale_for` when every ``|b_i|`` is 0 or 1 (1 bit, ternary)
    and ``b_i w_i >= 0``; for m-bit levels (``|b_i|`` < 1) it is a |b| d-weighted
    mean of ``|w_i|`` instead of the minimiser of (*).
    """
    bd = (d * b.abs()).flatten()
    num = torch.dot(bd, w.abs().flatten().to(bd.dtype))
    den = bd.sum()
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(w.dtype).tiny), num.new_zeros(()))


SCALE_RULES = ("exact", "official")


def weighted_error(w: torch.Tensor, d: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
    """The objective (*): ``sum_i d_i (w_hat_i - w_i)^2``."""
    return (d * (w_hat - w) ** 2).sum()


@torch.no_grad()
def solve(w: torch.Tensor, d: torch.Tensor | None, bits: int, kind: str = "linear",
          init_codes: torch.Tensor | None = None, max_iter: int = 10,
          tol: float = 1e-6, scale_rule: str = "exact") -> tuple[torch.Tensor, torch.Tensor, int]:
    """Loss-aware quantization of one layer: returns ``(alpha, codes, iterations)``.

    1 bit: closed form (LAB Eq. 7). m bits: LAQ's alternating minimisation of (*),
    started from ``init_codes`` (the previous step's levels: a warm start, as in the
    official LAQ code) or, without them, from ``alpha = ||d*w||_1 / ||d||_1``; at
    most ``max_iter`` rounds of (alpha-step, b-step), stopping early when alpha
    changes by less than ``tol * alpha``. ``d=None`` means D = I (unweighted).
    A layer with all-zero weights gets alpha = 0.

    ``scale_rule`` picks the alpha-step of the m-bit alternation:

    * ``"exact"`` (default): ``alpha = <d*b, w> / <d*b, b>``, the minimiser of (*)
      for fixed b, so no round increases (*). LAQ states the projection as the
      minimisation of (*) (its proximal step); this is the alpha that solves it.
    * ``"official"``: ``alpha = sum |b d w| / sum |b| d``, the formula of the
      official LAQ code (github houlu369/Loss-aware-weight-quantization), which
      carries LAQ's ternary alpha over to m bits. The two agree when every
      ``|b_i|`` is 0 or 1 (1 bit; 2-bit linear or log levels); otherwise (4 bits,
      pow2 levels) the official alpha is a
      ``|b| d``-weighted mean of ``|w|`` over the non-zero levels, not the
      minimiser, and its fixed point has a larger D-weighted error (*).

    The b-step (nearest level of ``w / alpha``), the warm start and the
    stopping rule are the same for both.
    """
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"invalid scale_rule {scale_rule!r}; valid: {', '.join(SCALE_RULES)}")
    if max_iter < 1:
        raise ValueError(f"invalid max_iter {max_iter!r}; must be >= 1")
    w = w.detach()
    d = torch.ones_like(w) if d is None else d.detach().to(w.dtype)
    if bits == 1:  # closed form: sum d |w| / sum d  (= scale_for with b = sign(w))
        den = d.sum()
        num = torch.dot(d.reshape(-1), w.abs().reshape(-1))   # sum d |w| (one fused pass)
        alpha = torch.where(den > 0, num / den.clamp_min(torch.finfo(w.dtype).tiny),
                            den.new_zeros(()))
        return alpha, torch.ge(w, 0).view(torch.uint8), 1   # bool -> uint8 codes, no copy
    table = code_table(bits, kind).to(w.device, w.dtype)
    step_alpha = scale_for if scale_rule == "exact" else scale_official
    alpha = w.new_zeros(())
    if init_codes is not None and init_codes.shape == w.shape:
        alpha = step_alpha(w, d, levels_of(init_codes, table))
    if not alpha > 0:
        alpha = scale_for(w, d, torch.where(w >= 0, 1.0, -1.0).to(w.dtype))
    if not alpha > 0:  # all-zero layer
        return w.new_zeros(()), project(torch.zeros_like(w), bits, kind), 0
    codes = project(w / alpha, bits, kind)
    iters = 0
    for iters in range(1, max_iter + 1):
        new_alpha = step_alpha(w, d, levels_of(codes, table))  # alpha-step
        if not new_alpha > 0:  # every weight fell to level 0 (cannot happen from a
            break              # closed-form alpha, kept as a guard)
        done = bool((new_alpha - alpha).abs() <= tol * alpha)
        alpha = new_alpha
        if done or iters == max_iter:
            break
        codes = project(w / alpha, bits, kind)  # b-step: exact for alpha
    return alpha, codes, iters


EXACT_MAX_BREAKPOINTS = 1 << 24


@torch.no_grad()
def solve_exact(w: torch.Tensor, d: torch.Tensor | None, bits: int,
                kind: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """Global minimiser ``(alpha, codes)`` of (*) (see the module docstring).

    Cost: a sort of ``N * n`` breakpoints (n = number of non-zero magnitudes): use
    it for initialisation and small layers; the per-step default is :func:`solve`.
    Above ``EXACT_MAX_BREAKPOINTS`` (an 8-bit layer of millions of weights) it falls
    back to :func:`solve` with 100 rounds (a fixed point, not always the global one).
    """
    w = w.detach()
    d = torch.ones_like(w) if d is None else d.detach().to(w.dtype)
    if bits == 1:
        alpha, codes, _ = solve(w, d, 1)
        return alpha, codes
    values = level_values(bits, kind).to(w.device, torch.float64)
    mags = torch.unique(values.abs())                 # mags[0] (0, or 2^-(k-1) for pow2)
    mids = (mags[1:] + mags[:-1]) / 2                 # < ... < mags[n] = 1; (n,)
    if w.numel() * mids.numel() > EXACT_MAX_BREAKPOINTS:
        alpha, codes, _ = solve(w, d, bits, kind, max_iter=100)
        return alpha, codes
    a = w.abs().flatten().to(torch.float64)
    dd = d.flatten().to(torch.float64)
    keep = a > 0
    a, dd = a[keep], dd[keep]
    if a.numel() == 0:
        return w.new_zeros(()), project(torch.zeros_like(w), bits, kind)
    top = mags[-1]
    s1_0 = (dd * a).sum() * top                       # all weights at the top level
    s2_0 = dd.sum() * top * top
    # crossing alpha = a_i / mids_j moves weight i from level mags[j+1] to mags[j]
    # (for large alpha every weight ends at the smallest magnitude mags[0])
    brk = (a[:, None] / mids[None, :]).flatten()      # (N*n,)
    ds1 = (dd * a)[:, None] * (mags[:-1] - mags[1:])[None, :]
    ds2 = dd[:, None] * (mags[:-1] ** 2 - mags[1:] ** 2)[None, :]
    order = torch.argsort(brk)
    brk = brk[order]
    s1 = torch.cat([s1_0.view(1), s1_0 + torch.cumsum(ds1.flatten()[order], 0)])
    s2 = torch.cat([s2_0.view(1), s2_0 + torch.cumsum(ds2.flatten()[order], 0)])
    lo = torch.cat([brk.new_zeros(1), brk])           # piece k holds on (lo_k, hi_k]
    hi = torch.cat([brk, brk.new_full((1,), float("inf"))])
    ok = s2 > 1e-300
    cand = torch.where(ok, s1 / s2.clamp_min(1e-300), torch.zeros_like(s1))
    valid = ok & (cand > lo) & (cand <= hi)
    value = torch.where(valid, -cand * s1, torch.full_like(s1, float("inf")))  # E - S0
    k = int(torch.argmin(value))
    if not bool(valid[k]):  # numerically degenerate: fall back to the alternation
        alpha, codes, _ = solve(w, d, bits, kind, max_iter=100)
        return alpha, codes
    codes = project(w / cand[k].to(w.dtype), bits, kind)
    table = code_table(bits, kind).to(w.device, w.dtype)
    return scale_for(w, d, table[codes.long()]), codes
