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
    if use_cuda_kernel is None:       # the kernels take float32 / float16 / bfloat16 inputs
        use_cuda_kernel = (u.is_cuda and u.dtype in (torch.float32, torch.float16, torch.bfloat16)
                           and mamba_ssm_available())
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


# Inside the Function every tensor is time-major: logical (L, Bt, X) for the
# (Bt, X, L) inputs and (l, b, d, N) for the state tiles, so that one time step
# is one contiguous block. The physical order of the other dims is chosen per
# call: "batch-inner" (L, X, Bt) / (l, d, N, b) when the tile holds many short
# sequences (wide vector loops over the batch even for a few channels), else
# "channel-inner" (L, Bt, X) / (l, b, d, N) (long sequences, small batch).

def _time_major(t, work, b_inner):
    """(Bt, X, L) -> logical (L, Bt, X); a view when its inner dim is already unit-stride."""
    tm = t.to(work).permute(2, 0, 1)
    if tm.stride(1 if b_inner else 2) == 1:
        return tm
    return _tm_empty(*tm.shape, tm, b_inner).copy_(tm)


def _tm_empty(L, Bt, X, like, b_inner):
    if b_inner:
        return like.new_empty(L, X, Bt).permute(0, 2, 1)
    return like.new_empty(L, Bt, X)


class _Workspace:
    """Reused (l, b, d, N) tile buffers: fresh 4 MB buffers per tile cost more in
    page faults than the arithmetic done in them."""

    def __init__(self, b_inner):
        self.b_inner, self.bufs = b_inner, {}

    def tile(self, key, l, b, d, N, like):
        n = l * b * d * N
        buf = self.bufs.get(key)
        if buf is None or buf.numel() < n:
            buf = self.bufs[key] = like.new_empty(n)
        if self.b_inner:
            return buf[:n].view(l, d, N, b).permute(0, 3, 1, 2)
        return buf[:n].view(l, b, d, N)


def _sum(x, dims):
    """x.sum(dims), reduced in x's physical dim order (much faster on permuted views)."""
    perm = sorted(range(x.dim()), key=lambda i: -x.stride(i))
    r = x.permute(perm).sum([perm.index(d) for d in dims])
    kept = [i for i in perm if i not in dims]
    return r.permute(sorted(range(len(kept)), key=lambda j: kept[j]))


class _SelectiveScanFn(torch.autograd.Function):
    """Tiled forward; backward recomputes each tile's states (nothing (.., N) is saved)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, chunked, tile_elems, want_last):
        p = _Plan(u, delta, B, C, z, A, D, delta_bias, tile_elems)
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
        p = _Plan(u, delta, B, C, z, A, D, delta_bias, tile_elems)
        gT = _time_major(dout, p.work, p.b_inner)
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


class _Plan:
    """Tiling, layout and time-major views of one call's inputs."""

    def __init__(self, u, delta, B, C, z, A, D, delta_bias, tile_elems):
        self.work = work = torch.promote_types(u.dtype, torch.float32)
        self.Bt, self.Dch, self.L = u.shape
        self.N = A.shape[1]
        self.bs, self.ds, self.ls = _tiles(self.Bt, self.Dch, self.L, self.N, tile_elems)
        # batch-inner as soon as a tile holds a few dozen sequences
        self.b_inner = self.bs >= min(self.ds * self.N, 64)
        self.uT, self.dT, self.BT, self.CT = (_time_major(t, work, self.b_inner)
                                              for t in (u, delta, B, C))
        self.zT = None if z is None else _time_major(z, work, self.b_inner)
        self.params = {"A": A.to(work), "D": None if D is None else D.to(work),
                       "delta_bias": None if delta_bias is None else delta_bias.to(work)}
        self.ws = _Workspace(self.b_inner)

    def empty(self, X):
        return _tm_empty(self.L, self.Bt, X, self.uT, self.b_inner)

    def tiles(self):
        segs = [slice(l0, l0 + self.ls) for l0 in range(0, self.L, self.ls)]
        for b0 in range(0, self.Bt, self.bs):
            for d0 in range(0, self.Dch, self.ds):
                yield slice(b0, b0 + self.bs), slice(d0, d0 + self.ds), segs

    def tile(self, lsl, bsl, dsl):
        """Views of one tile: u, delta, B, C, z as (l, b, d) / (l, b, N)."""
        return (self.uT[lsl, bsl, dsl], self.dT[lsl, bsl, dsl], self.BT[lsl, bsl],
                self.CT[lsl, bsl], None if self.zT is None else self.zT[lsl, bsl, dsl])

    def kw(self, dsl, softplus, chunked):
        sliced = {k: None if v is None else v[dsl] for k, v in self.params.items()}
        return dict(sliced, softplus=softplus, chunked=chunked, ws=self.ws)


# --------------------------------------------------------------------------- tiles

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



def _discretise(u, delta, B, A, delta_bias, softplus, ws):
    """dt (l,b,d); dA = exp(dt A) and dBu = dt B u as dense (l,b,d,N) tiles."""
    dt = delta if delta_bias is None else delta + delta_bias
    if softplus:
        dt = F.softplus(dt)
    l, b, d = dt.shape
    dA = ws.tile("dA", l, b, d, A.shape[1], dt)
    torch.mul(dt.unsqueeze(-1), A, out=dA).exp_()
    dBu = ws.tile("h", l, b, d, A.shape[1], dt)
    torch.mul((dt * u).unsqueeze(-1), B.unsqueeze(2), out=dBu)
    return dt, dA, dBu


def scan_tile_forward(u, delta, B, C, z, *, h0, A, D, delta_bias, softplus, chunked, ws):
    """One tile: u, delta, z (l,b,d); B, C (l,b,N) -> y (l,b,d), last state (b,d,N)."""
    _, dA, h = _discretise(u, delta, B, A, delta_bias, softplus, ws)
    linear_scan(dA, h, h0, chunked)
    y = _sum(torch.mul(h, C.unsqueeze(2), out=dA), [3])      # <C_t, h_t>_N
    if D is not None:
        y += u * D
    if z is not None:
        y *= F.silu(z)
    return y, h[-1].clone()                                   # ws is reused by the next tile


def scan_tile_backward(u, delta, B, C, z, dout, *, h0, dh_carry, A, D, delta_bias,
                       softplus, chunked, ws):
    """Gradients of one tile given dL/dout (l,b,d); the tile's states are recomputed.

    Reverse recurrence: dh_t = C_t dy_t + dA_{t+1} dh_{t+1} (+ dh_carry, i.e.
    dA dh flowing back from the next segment, at t = l-1). Then
    dL/d(dt A)_t = dh_t h_{t-1} dA_t,  dL/d(dt u)_t = <dh_t, B_t>_N,
    dL/dB_t = sum_d dh_t dt_t u_t,     dL/dC_t = sum_d dy_t h_t.
    Returns (grads, carry for the previous segment); grads are (l,b,d) for u,
    delta, z, (l,b,N) for B, C and (d,N) / (d,) for A, D, delta_bias.
    """
    dt, dA, h = _discretise(u, delta, B, A, delta_bias, softplus, ws)
    linear_scan(dA, h, h0, chunked)
    tmp = ws.tile("tmp", *h.shape, h)
    g = {}
    dy = dout
    if z is not None:
        y = _sum(torch.mul(h, C.unsqueeze(2), out=tmp), [3])
        if D is not None:
            y += u * D
        sig = torch.sigmoid(z)
        g["z"] = dout * y * sig * (1 + z * (1 - sig))         # d silu(z)/dz
        dy = dout * z * sig
    if D is not None:
        g["D"] = _sum(dy * u, [0, 1])
    g["C"] = _sum(torch.mul(h, dy.unsqueeze(-1), out=tmp), [2])
    dh = ws.tile("dh", *h.shape, h)
    torch.mul(dy.unsqueeze(-1), C.unsqueeze(2), out=dh)       # (l, b, d, N)
    if dh_carry is not None:
        dh[-1] += dh_carry
    linear_scan(dA[1:], dh[:-1], dh[-1], chunked, reverse=True)
    carry = dA[0] * dh[0]
    x = torch.mul(dh, dA, out=dA)                             # then times h_{t-1}
    x[1:] *= h[:-1]
    if h0 is None:
        x[0] = 0
    else:
        x[0] *= h0
    g["A"] = _sum(torch.mul(x, dt.unsqueeze(-1), out=h), [0, 1])
    ddt = _sum(torch.mul(x, A, out=h), [3])
    dtu = dt * u
    g["B"] = _sum(torch.mul(dh, dtu.unsqueeze(-1), out=h), [2])
    ddtu = _sum(torch.mul(dh, B.unsqueeze(2), out=h), [3])   # (l, b, d)
    ddt += ddtu * u
    du = ddtu * dt
    if D is not None:
        du += dy * D
    g["u"] = du
    if softplus:
        ddt *= torch.sigmoid(delta if delta_bias is None else delta + delta_bias)
    g["delta"] = ddt
    if delta_bias is not None:
        g["delta_bias"] = _sum(ddt, [0, 1])
    return g, carry
