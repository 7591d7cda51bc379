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
    dBu_t  = dt_t * B_t * u_t                   # Euler-simplified B-bar (Sec. 3.5)
    h_t    = dA_t * h_{t-1} + dBu_t,  h_{-1}=0  # recurrence (Eq. 2a), h_t: (Bt, D, N)
    y_t    = <C_t, h_t>_N + D * u_t             # (Eq. 2b) plus skip
    out    = y * silu(z)                        # gate of the Mamba block (Fig. 3)

``selective_scan_ref`` is the literal step-by-step loop under autograd (the
reference). ``selective_scan`` is the fast path: a custom autograd Function
with a hand-written backward that works tile by tile over (batch, channel,
length) so that the (Bt, D, L, N) state tensor is never materialised whole;
inside a tile the recurrence is either a plain loop over L (best for many
short sequences, e.g. FSG's per-weight layout with L ~ 7) or a two-level
chunked scan (best for long sequences). On CUDA tensors it can dispatch to the
official ``mamba_ssm`` kernel when that package is installed.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["selective_scan", "selective_scan_ref", "mamba_ssm_available", "METHODS"]

METHODS = ("auto", "loop", "chunked")
#: sequences at least this long use the chunked scan when ``method="auto"``.
CHUNKED_MIN_LEN = 64
#: default number of (L, b, d, N) elements per tile (4 MB in float32; cache-friendly).
DEFAULT_TILE_ELEMS = 1 << 20


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


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                   delta_softplus=False, return_last_state=False, *,
                   method="auto", tile_elems=DEFAULT_TILE_ELEMS, use_cuda_kernel=None):
    """Fast selective scan; same arguments, result and gradients as the reference.

    ``method``: "loop" (sequential over L inside each tile), "chunked" (two-level
    scan: sequential inside sqrt(L)-long chunks, vectorised across chunks, then
    a carry pass) or "auto" (chunked when L >= CHUNKED_MIN_LEN). ``tile_elems``
    bounds the elements of one (L, b, d, N) tile; memory is O(tile_elems) on top
    of the (Bt, D, L) inputs and outputs. ``use_cuda_kernel``: None = use
    ``mamba_ssm`` when installed and ``u`` is on CUDA, True = require it, False
    = never. The returned last state carries no gradient on the fast paths (as
    in ``mamba_ssm``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown selective-scan method {method!r}; valid: {', '.join(METHODS)}")
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if use_cuda_kernel is None:
        use_cuda_kernel = u.is_cuda and mamba_ssm_available()
    if use_cuda_kernel:
        if not (u.is_cuda and mamba_ssm_available()):
            raise ValueError("use_cuda_kernel=True needs CUDA tensors and the mamba_ssm package")
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn(
            u, delta, A.float(), B, C, None if D is None else D.float(), z,
            None if delta_bias is None else delta_bias.float(), delta_softplus,
            return_last_state)
    if int(tile_elems) < 1:
        raise ValueError(f"tile_elems must be >= 1, got {tile_elems!r}")
    chunked = method == "chunked" or (method == "auto" and u.shape[-1] >= CHUNKED_MIN_LEN)
    out, last = _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias,
                                       bool(delta_softplus), chunked, int(tile_elems))
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


def _tiles(Bt, Dch, L, N, tile_elems):
    """Tile sizes (bs, ds, ls) with bs*ds*ls*N <= tile_elems (when possible).

    Whole sequences of all channels first (the per-weight case: many short
    sequences); a long sequence is cut along L into segments whose states are
    carried, so the channels stay together and each scan step stays wide.
    """
    per_b = Dch * L * N
    if per_b <= tile_elems:
        return max(1, min(Bt, tile_elems // per_b)), Dch, L
    ds = min(Dch, max(1, tile_elems // N))
    return 1, ds, max(1, tile_elems // (ds * N))


class _SelectiveScanFn(torch.autograd.Function):
    """Tiled forward; backward recomputes each tile's states (nothing (.., N) is saved)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, chunked, tile_elems):
        work = torch.promote_types(u.dtype, torch.float32)
        Bt, Dch, L = u.shape
        N = A.shape[1]
        out = torch.empty_like(u, dtype=work)
        last = u.new_empty(Bt, Dch, N, dtype=work)
        bs, ds, ls = _tiles(Bt, Dch, L, N, tile_elems)
        args = dict(A=A.to(work), D=None if D is None else D.to(work),
                    delta_bias=None if delta_bias is None else delta_bias.to(work),
                    softplus=softplus, chunked=chunked)
        with torch.no_grad():
            for b0 in range(0, Bt, bs):
                for d0 in range(0, Dch, ds):
                    bsl, dsl = slice(b0, b0 + bs), slice(d0, d0 + ds)
                    h = None
                    for l0 in range(0, L, ls):
                        lsl = slice(l0, l0 + ls)
                        y, h = scan_tile_forward(*_tile_inputs(u, delta, B, C, z, bsl, dsl, lsl, work),
                                                 h0=h, dsl=dsl, **args)
                        out[bsl, dsl, lsl] = y
                    last[bsl, dsl] = h if h is not None else 0
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.cfg = (softplus, chunked, tile_elems, work)
        ctx.mark_non_differentiable(last)
        return out.to(u.dtype), last

    @staticmethod
    def backward(ctx, dout, _dlast):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        softplus, chunked, tile_elems, work = ctx.cfg
        Bt, Dch, L = u.shape
        N = A.shape[1]
        dout = dout.to(work)
        grads = {k: torch.zeros_like(t, dtype=work) if t is not None else None
                 for k, t in dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, bias=delta_bias).items()}
        bs, ds, ls = _tiles(Bt, Dch, L, N, tile_elems)
        args = dict(A=A.to(work), D=None if D is None else D.to(work),
                    delta_bias=None if delta_bias is None else delta_bias.to(work),
                    softplus=softplus, chunked=chunked)
        with torch.no_grad():
            for b0 in range(0, Bt, bs):
                for d0 in range(0, Dch, ds):
                    bsl, dsl = slice(b0, b0 + bs), slice(d0, d0 + ds)
                    segs = [slice(l0, l0 + ls) for l0 in range(0, L, ls)]
                    # forward pass over segments to get each segment's initial state
                    starts, h = [], None
                    for lsl in segs[:-1]:
                        starts.append(h)
                        _, h = scan_tile_forward(*_tile_inputs(u, delta, B, C, z, bsl, dsl, lsl, work),
                                                 h0=h, dsl=dsl, **args)
                    starts.append(h)
                    dh_next = None  # dL/dh at the start of the following segment, times its dA
                    for lsl, h0 in zip(reversed(segs), reversed(starts)):
                        tin = _tile_inputs(u, delta, B, C, z, bsl, dsl, lsl, work)
                        g, dh_next = scan_tile_backward(*tin, dout[bsl, dsl, lsl], h0=h0,
                                                        dh_carry=dh_next, dsl=dsl, **args)
                        grads["u"][bsl, dsl, lsl] = g["u"]
                        grads["delta"][bsl, dsl, lsl] = g["delta"]
                        grads["B"][bsl, :, lsl] += g["B"]
                        grads["C"][bsl, :, lsl] += g["C"]
                        grads["A"][dsl] += g["A"]
                        if D is not None:
                            grads["D"][dsl] += g["D"]
                        if z is not None:
                            grads["z"][bsl, dsl, lsl] = g["z"]
                        if delta_bias is not None:
                            grads["bias"][dsl] += g["bias"]

        def cast(name, ref):
            return None if ref is None else grads[name].to(ref.dtype)

        return (cast("u", u), cast("delta", delta), cast("A", A), cast("B", B), cast("C", C),
                cast("D", D), cast("z", z), cast("bias", delta_bias), None, None, None)


def _tile_inputs(u, delta, B, C, z, bsl, dsl, lsl, work):
    """Slices of one tile, in the compute dtype (views when no cast is needed)."""
    zt = None if z is None else z[bsl, dsl, lsl].to(work)
    return (u[bsl, dsl, lsl].to(work), delta[bsl, dsl, lsl].to(work),
            B[bsl, :, lsl].to(work), C[bsl, :, lsl].to(work), zt)



# --------------------------------------------------------------------------- tiles
# Inside a tile every (.., N) tensor is laid out (l, b, d, N): one time step is
# one contiguous block, so the sequential recurrence touches contiguous memory.

def linear_scan(a, b, h0=None, chunked=False, reverse=False):
    """In place along dim 0: b[t] <- a[t] * b[t-1] + b[t] (b[t+1] when ``reverse``).

    ``h0`` is the state before the first step (b[-1], or b[L] when reversed);
    returns b, which then holds every state. ``chunked`` = two-level scan: with
    T ~ sqrt(L), the recurrence runs inside all chunks of length T at once (T
    steps), the chunk-end states are carried in a short loop (L/T steps), and
    each carried state enters its chunk through the cumulative product of a.
    Python steps: ~2 sqrt(L) instead of L.
    """
    L = b.shape[0]
    T = math.isqrt(max(L - 1, 0)) + 1 if chunked else L
    nC = L // T if chunked else 0
    if nC >= 2 and reverse:
        return b.copy_(linear_scan(a.flip(0), b.flip(0), h0, chunked=True).flip(0))
    start = 0
    if nC >= 2:
        start = nC * T
        a2, b2 = a[:start].view(nC, T, *a.shape[1:]), b[:start].view(nC, T, *b.shape[1:])
        P = torch.empty_like(a2)                             # decay since chunk start
        P[:, 0] = a2[:, 0]
        for t in range(1, T):                                # local scans, all chunks
            b2[:, t].addcmul_(a2[:, t], b2[:, t - 1])
            torch.mul(P[:, t - 1], a2[:, t], out=P[:, t])
        starts = torch.zeros_like(b2[:, 0]) if h0 is None else h0.expand_as(b2[:, 0]).clone()
        for c in range(1, nC):                               # carry chunk-end states
            torch.addcmul(b2[c - 1, T - 1], P[c - 1, T - 1], starts[c - 1], out=starts[c])
        b2.addcmul_(P, starts.unsqueeze(1))
        h0 = b2[nC - 1, T - 1]
    steps = range(L - 1, -1, -1) if reverse else range(start, L)
    for t in steps:
        if h0 is not None:
            b[t].addcmul_(a[t], h0)
        h0 = b[t]
    return b


def _discretise(u, delta, B, dsl, A, delta_bias, softplus):
    """dt (b,d,l); dA = exp(dt A) and dBu = dt B u as contiguous (l,b,d,N) tiles."""
    dt = delta if delta_bias is None else delta + delta_bias[dsl, None]
    if softplus:
        dt = F.softplus(dt)
    dtT = dt.permute(2, 0, 1).contiguous()                    # (l, b, d)
    BT = B.permute(2, 0, 1).contiguous()                      # (l, b, N)
    dA = torch.exp(dtT.unsqueeze(-1) * A[dsl])
    dBu = (dtT * u.permute(2, 0, 1)).unsqueeze(-1) * BT.unsqueeze(2)
    return dtT, BT, dA, dBu


def _readout(h, CT):
    """y[l,b,d] = sum_n h[l,b,d,n] C[l,b,n]."""
    return torch.matmul(h, CT.unsqueeze(-1)).squeeze(-1)


def scan_tile_forward(u, delta, B, C, z, *, h0, dsl, A, D, delta_bias, softplus, chunked):
    """One tile: u, delta, z (b,d,l); B, C (b,N,l) -> out (b,d,l), last state (b,d,N)."""
    _, _, dA, h = _discretise(u, delta, B, dsl, A, delta_bias, softplus)
    linear_scan(dA, h, h0, chunked)
    y = _readout(h, C.permute(2, 0, 1).contiguous()).permute(1, 2, 0)
    if D is not None:
        y = y + u * D[dsl, None]
    if z is not None:
        y = y * F.silu(z)
    return y, h[-1]


def scan_tile_backward(u, delta, B, C, z, dout, *, h0, dh_carry, dsl, A, D, delta_bias,
                       softplus, chunked):
    """Gradients of one tile given dL/dout (b,d,l); the tile's states are recomputed.

    Reverse recurrence: dh_t = C_t dy_t + dA_{t+1} dh_{t+1} (+ dh_carry, i.e.
    dA dh flowing back from the next segment, at t = l-1). Then
    dL/d(dt A)_t = dh_t h_{t-1} dA_t,  dL/d(dt u)_t = <dh_t, B_t>_N,
    dL/dB_t = sum_d dh_t dt_t u_t,     dL/dC_t = sum_d dy_t h_t.
    Returns (grads in the inputs' orientations, carry for the previous segment).
    """
    dtT, BT, dA, h = _discretise(u, delta, B, dsl, A, delta_bias, softplus)
    linear_scan(dA, h, h0, chunked)
    CT = C.permute(2, 0, 1).contiguous()
    g = {}
    dy = dout
    if z is not None:
        y = _readout(h, CT).permute(1, 2, 0)
        if D is not None:
            y = y + u * D[dsl, None]
        sig = torch.sigmoid(z)
        g["z"] = dout * y * sig * (1 + z * (1 - sig))         # d silu(z)/dz
        dy = dout * z * sig
    dyT = dy.permute(2, 0, 1).contiguous()                    # (l, b, d)
    if D is not None:
        g["D"] = (dy * u).sum((0, 2))
    g["C"] = torch.matmul(dyT.unsqueeze(2), h).squeeze(2).permute(1, 2, 0)
    dh = dyT.unsqueeze(-1) * CT.unsqueeze(2)                  # (l, b, d, N)
    if dh_carry is not None:
        dh[-1] += dh_carry
    linear_scan(dA[1:], dh[:-1], dh[-1], chunked, reverse=True)
    carry = dA[0] * dh[0]
    x = dh * dA                                               # then times h_{t-1}
    x[1:] *= h[:-1]
    if h0 is None:
        x[0] = 0
    else:
        x[0] *= h0
    del h, dA
    g["A"] = (x * dtT.unsqueeze(-1)).sum((0, 1))
    ddtT = (x * A[dsl]).sum(-1)
    del x
    uT = u.permute(2, 0, 1)
    g["B"] = torch.matmul((dtT * uT).unsqueeze(2), dh).squeeze(2).permute(1, 2, 0)
    ddtu = torch.matmul(dh, BT.unsqueeze(-1)).squeeze(-1)     # (l, b, d)
    ddtT += ddtu * uT
    duT = ddtu * dtT
    if D is not None:
        duT += dyT * D[dsl]
    g["u"] = duT.permute(1, 2, 0)
    ddt = ddtT.permute(1, 2, 0)
    if softplus:
        pre = delta if delta_bias is None else delta + delta_bias[dsl, None]
        ddt = ddt * torch.sigmoid(pre)
    g["delta"] = ddt
    if delta_bias is not None:
        g["bias"] = ddt.sum((0, 2))
    return g, carry
