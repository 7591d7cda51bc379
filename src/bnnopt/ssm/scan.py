"""Selective scan of Mamba (S6; Gu and Dao 2023, Algorithm 2) in pure PyTorch.

Semantics follow ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``.
Shapes: batch ``Bt``, channels ``D``, length ``L``, state size ``N``.

    u      (Bt, D, L)   input             delta (Bt, D, L)  step size (pre-activation)
    A      (D, N)       diagonal state matrix (Mamba: A = -exp(A_log) < 0)
    B, C   (Bt, N, L)   input-dependent input / output matrices
    D      (D,)         skip, optional        z (Bt, D, L)    gate, optional
    delta_bias (D,)     optional              delta_softplus  bool

    dt_t   = softplus(delta_t + delta_bias)  (or without softplus)
    dA_t   = exp(dt_t * A)                      # ZOH discretisation of A (Eq. 4)
    dBu_t  = dt_t * B_t * u_t                   # B-bar ~ dt B, as the official kernels
    h_t    = dA_t * h_{t-1} + dBu_t,  h_{-1}=0  # recurrence (Eq. 2a), h_t: (Bt, D, N)
    y_t    = <C_t, h_t>_N + D * u_t             # (Eq. 2b) plus the D skip
    out    = y * silu(z)                        # gate of the Mamba block (Fig. 3)

``selective_scan_ref`` is the literal step-by-step loop under autograd (the
reference). ``selective_scan`` is the fast path: a custom autograd Function
with a hand-written backward that works tile by tile over (batch, channel,
length) so that the (Bt, D, L, N) state tensor is never materialised whole;
inside a tile the recurrence is either a plain loop over L (best for many
short sequences, e.g. FSG's per-weight layout with L ~ 7) or a two-level
chunked scan (best for long sequences); those tiled kernels live in
:mod:`bnnopt.ssm.scan_kernels`. On CUDA tensors it can dispatch to the
official ``mamba_ssm`` kernel when that package is installed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .scan_kernels import Plan, time_major, scan_tile_backward, scan_tile_forward
from .scan_kernels import linear_scan  # noqa: F401  (still importable from here)

__all__ = ["selective_scan", "selective_scan_ref", "mamba_ssm_available", "METHODS"]

METHODS = ("auto", "loop", "chunked")
#: sequences at least this long use the chunked scan when ``method="auto"``.
CHUNKED_MIN_LEN = 64
#: default number of (L, b, d, N) elements per tile (4 MB in float32; cache-friendly).
DEFAULT_TILE_ELEMS = 1 << 20
#: input dtypes the mamba_ssm kernel takes (use_cuda_kernel=None picks it only for these).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    """Naive reference: one autograd step per time index (see module docstring).

    Computes in float32 or wider and returns ``out`` (Bt, D, L) in u's dtype,
    plus the final state h_{L-1} (Bt, D, N) when ``return_last_state``.
    """
    dtype_in = u.dtype
    work = torch.promote_types(u.dtype, torch.float32)
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bt, Dch, L = u.shape
    h = u.new_zeros(Bt, Dch, A.shape[1])
    ys = []
    for t in range(L):
        dt = delta[:, :, t, None]                                   # (Bt, D, 1)
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))                   # (Bt, D)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(Bt, Dch, 0)
    out = y if D is None else y + u * D.to(work)[None, :, None]
    if z is not None:
        out = out * F.silu(z.to(work))
    out = out.to(dtype_in)
    return (out, h) if return_last_state else out


def mamba_ssm_available() -> bool:
    """True when the official ``mamba_ssm`` CUDA selective-scan kernel imports."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA extension
        return False
    return True


def _is_cuda(u) -> bool:
    """Whether ``u`` is on a CUDA device (one place, so tests can fake it on CPU)."""
    return u.is_cuda


def use_kernel(u, use_cuda_kernel) -> bool:
    """Resolve ``use_cuda_kernel`` for input ``u`` (see :func:`selective_scan`).

    None: True when u is on CUDA in one of ``KERNEL_DTYPES`` and ``mamba_ssm``
    imports. True: required, a ValueError naming what is missing otherwise.
    False: never.
    """
    if use_cuda_kernel is None:
        return _is_cuda(u) and u.dtype in KERNEL_DTYPES and mamba_ssm_available()
    if not use_cuda_kernel:
        return False
    missing = []
    if not _is_cuda(u):
        missing.append(f"CUDA tensors (u is on {u.device})")
    if not mamba_ssm_available():
        missing.append("the mamba_ssm package "
                       "(mamba_ssm.ops.selective_scan_interface.selective_scan_fn does not import)")
    if missing:
        raise ValueError("use_cuda_kernel=True needs " + " and ".join(missing))
    return True


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                   delta_softplus=False, return_last_state=False, *,
                   method="auto", tile_elems=DEFAULT_TILE_ELEMS, use_cuda_kernel=None):
    """Fast selective scan; same arguments, result and gradients as the reference.

    ``method``: "loop" (sequential over L inside each tile), "chunked" (two-level
    scan: sequential inside sqrt(L)-long chunks, vectorised across chunks, then
    a carry pass) or "auto" (chunked when L >= CHUNKED_MIN_LEN). ``tile_elems``
    bounds the elements of one (L, b, d, N) tile; memory is O(tile_elems) on top
    of the (Bt, D, L) inputs and outputs. ``use_cuda_kernel``: None = use
    ``mamba_ssm`` when installed and ``u`` is on CUDA in one of
    ``KERNEL_DTYPES``, True = require it (ValueError when missing), False =
    never. The returned last state carries no gradient on the fast paths (as
    in ``mamba_ssm``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown selective-scan method {method!r}; valid: {', '.join(METHODS)}")
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if use_kernel(u, use_cuda_kernel):   # A, D and delta_bias go in as float32, as it wants
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn(
            u, delta, A.float(), B, C, D=None if D is None else D.float(), z=z,
            delta_bias=None if delta_bias is None else delta_bias.float(),
            delta_softplus=delta_softplus, return_last_state=return_last_state)
    if int(tile_elems) < 1:
        raise ValueError(f"tile_elems must be >= 1, got {tile_elems!r}")
    if u.numel() == 0:
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                  return_last_state)
    chunked = method == "chunked" or (method == "auto" and u.shape[-1] >= CHUNKED_MIN_LEN)
    out, last = _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias,
                                       bool(delta_softplus), chunked, int(tile_elems),
                                       bool(return_last_state))
    return (out, last) if return_last_state else out


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, channels, length), got shape {tuple(u.shape)}")
    Bt, Dch, L = u.shape
    N = A.shape[-1] if A.dim() == 2 else -1
    want = {"delta": (delta, (Bt, Dch, L)), "A": (A, (Dch, N)), "B": (B, (Bt, N, L)),
            "C": (C, (Bt, N, L)), "D": (D, (Dch,)), "z": (z, (Bt, Dch, L)),
            "delta_bias": (delta_bias, (Dch,))}
    for name, (t, shape) in want.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape} "
                             f"for u of shape {tuple(u.shape)} and A of shape {tuple(A.shape)}")


class _SelectiveScanFn(torch.autograd.Function):
    """Tiled forward; backward recomputes each tile's states (nothing (.., N) is saved)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, chunked, tile_elems, want_last):
        p = Plan(u, delta, B, C, z, A, D, delta_bias, tile_elems)
        yT = p.empty(p.Dch)
        last = p.uT.new_empty(p.Bt, p.Dch, p.N) if want_last else p.uT.new_empty(0)
        with torch.no_grad():
            for bsl, dsl, segs in p.tiles():
                h = None
                for lsl in segs:
                    y, h = scan_tile_forward(*p.tile(lsl, bsl, dsl), h0=h, **p.kw(dsl, softplus, chunked))
                    yT[lsl, bsl, dsl] = y
                if want_last:
                    last[bsl, dsl] = h
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.cfg = (softplus, chunked, tile_elems)
        ctx.mark_non_differentiable(last)
        return yT.permute(1, 2, 0).to(u.dtype), last

    @staticmethod
    def backward(ctx, dout, _dlast):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        softplus, chunked, tile_elems = ctx.cfg
        p = Plan(u, delta, B, C, z, A, D, delta_bias, tile_elems)
        gT = time_major(dout, p.work, p.b_inner)
        grads = {"u": p.empty(p.Dch), "delta": p.empty(p.Dch), "B": p.empty(p.N).zero_(),
                 "C": p.empty(p.N).zero_(), "z": None if z is None else p.empty(p.Dch)}
        grads.update({k: None if v is None else torch.zeros_like(v) for k, v in p.params.items()})
        with torch.no_grad():
            for bsl, dsl, segs in p.tiles():
                kw = p.kw(dsl, softplus, chunked)
                starts, h = [], None              # each segment's initial state
                for lsl in segs:
                    starts.append(h)
                    if lsl is not segs[-1]:
                        _, h = scan_tile_forward(*p.tile(lsl, bsl, dsl), h0=h, **kw)
                carry = None                      # dA_next * dL/dh_next from the next segment
                for lsl, h0 in zip(reversed(segs), reversed(starts)):
                    g, carry = scan_tile_backward(*p.tile(lsl, bsl, dsl), gT[lsl, bsl, dsl],
                                                  h0=h0, dh_carry=carry, **kw)
                    for k, v in g.items():
                        if k in ("u", "delta", "z"):
                            grads[k][lsl, bsl, dsl] = v
                        elif k in ("B", "C"):
                            grads[k][lsl, bsl] += v
                        else:                     # A, D, delta_bias
                            grads[k][dsl] += v
        big = {k: None if grads[k] is None else grads[k].permute(1, 2, 0).to(ref.dtype)
               for k, ref in (("u", u), ("delta", delta), ("B", B), ("C", C), ("z", z))}
        small = {k: None if grads[k] is None else grads[k].to(ref.dtype)
                 for k, ref in (("A", A), ("D", D), ("delta_bias", delta_bias))}
        return (big["u"], big["delta"], small["A"], big["B"], big["C"], small["D"], big["z"],
                small["delta_bias"], None, None, None, None)
