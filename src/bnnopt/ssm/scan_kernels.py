"""Tiled CPU kernels of the selective scan behind :func:`bnnopt.ssm.scan.selective_scan`.

The selective scan (S6; Gu and Dao 2023, Alg. 2), for batch ``Bt``, channels
``Dch``, length ``L`` and state size ``N``, with a diagonal ``A``:

    u, delta, z (Bt, Dch, L)   A (Dch, N)   B, C (Bt, N, L)   D, delta_bias (Dch,)

    dt_t  = softplus(delta_t + delta_bias)          (the paper's Delta; no softplus if
                                                     delta_softplus=False)
    h_t   = exp(dt_t A) * h_{t-1} + dt_t B_t u_t,  h_{-1} = 0      h_t: (Bt, Dch, N)
    y_t   = C_t . h_t + D * u_t                     (. = sum over the N state entries)
    out_t = y_t * silu(z_t)                         (only when the gate z is given)

Every product above is elementwise over (batch, channel, state), each
operand broadcast over the dim it lacks: dt_t, u_t (Bt, Dch), A (Dch, N),
B_t, C_t (Bt, N).

Tiles. The (Bt, Dch, L) problem is cut into tiles of ``b`` sequences, ``d``
channels and ``l`` steps with ``l*b*d*N <= tile_elems`` (:func:`_tiles`), so
the (Bt, Dch, L, N) state tensor never exists whole. A tile's u, delta, z are
(l, b, d), its B, C (l, b, N), its A (d, N), D and delta_bias (d,), and its
discretised ``dA = exp(dt A)``, ``dBu = dt B u`` and states ``h`` are dense
(l, b, d, N) buffers reused from tile to tile (:class:`_Workspace`). A
sequence cut along L into several segments carries its state h (b, d, N) from
one segment into the next. :func:`scan_tile_forward` gives y and the last
state; :func:`scan_tile_backward` recomputes the tile's states and runs the
adjoint recurrence backwards in time. The recurrence itself is
:func:`linear_scan`: a plain loop over the l steps or, when ``chunked``, a
two-level scan in about 2 sqrt(l) Python steps.

Layout. Every tensor is time-major: logical (L, Bt, X) for the (Bt, X, L)
inputs and (l, b, d, N) for the state tiles, so that one time step is one
contiguous block. The physical order of the other dims is chosen per call
(:class:`Plan`): "batch-inner" (L, X, Bt) / (l, d, N, b) when a tile holds
many short sequences (wide vector loops over the batch even for a few
channels), else "channel-inner" (L, Bt, X) / (l, b, d, N) (long sequences,
small batch).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["linear_scan", "scan_tile_forward", "scan_tile_backward"]


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


def time_major(t, work, b_inner):
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



class Plan:
    """Tiling, layout and time-major views of one call's inputs."""

    def __init__(self, u, delta, B, C, z, A, D, delta_bias, tile_elems):
        self.work = work = torch.promote_types(u.dtype, torch.float32)
        self.Bt, self.Dch, self.L = u.shape
        self.N = A.shape[1]
        self.bs, self.ds, self.ls = _tiles(self.Bt, self.Dch, self.L, self.N, tile_elems)
        # batch-inner as soon as a tile holds a few dozen sequences
        self.b_inner = self.bs >= min(self.ds * self.N, 64)
        self.uT, self.dT, self.BT, self.CT = (time_major(t, work, self.b_inner)
                                              for t in (u, delta, B, C))
        self.zT = None if z is None else time_major(z, work, self.b_inner)
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
