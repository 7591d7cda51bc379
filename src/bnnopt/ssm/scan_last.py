"""The selective scan read at its LAST position only, in closed form.

FSG's per-weight layout (:func:`bnnopt.methods.learned.lre.per_weight_slow_gradients`)
runs the slow-net over one short sequence (L = l + 1 ~ 7 tokens) per weight and
reads only the output at the last token. The full scan
(:mod:`bnnopt.ssm.scan`) computes all L outputs, keeps the recurrence
sequential and, in backward, recomputes every state and runs the adjoint
recurrence; with ~270k sequences of one channel that is memory-bound
elementwise work on (L, b, N) tiles. The last output alone has a closed form.
With the notation of :mod:`bnnopt.ssm.scan_kernels` (time-major, batch
innermost; ``E`` channels, ``N`` states, ``b`` sequences)::

    u, delta (L, E, b)   A (E, N)   B (L, N, b)   C (N, b)   D, delta_bias (E,)   z (E, b)

    dt_t   = softplus(delta_t + delta_bias)                    (or without softplus)
    S_t    = sum_{s > t} dt_s                                  decay time from t to L-1
    h_{L-1}[e, n] = sum_t exp(A[e, n] S_t[e]) dt_t[e] u_t[e] B_t[n]      (unrolled Eq. 2a)
    y      = sum_n C[n] h_{L-1}[n] + D u_{L-1}
           = sum_t dt_t u_t K_t + D u_{L-1},   K_t[e] = sum_n exp(A[e, n] S_t[e]) B_t[n] C[n]
    out    = y * silu(z)                                                 (E, b)

because unrolling h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t from h_{-1} = 0 gives
a product of exp(dt_s A) over s = t+1..L-1, i.e. exp(A S_t). C and z are those
of the last position only, so the caller computes them only there.

Backward (δ = dL/dout, all elementwise with the broadcasts above)::

    dy = δ silu(z);   dz = δ y σ(z) (1 + z (1 - σ(z)));   dD = Σ_b dy u_{L-1}
    dX_t = dy K_t,  dK_t = dy X_t      with X_t = dt_t u_t
    dP_t[e, n] = dK_t[e] B_t[n] C[n] exp(A S_t)  (P = A S)
    dA = Σ_{t,b} dP S;   dS_t = Σ_n dP A;   dB_t = C Σ_e dK_t exp(A S_t);  dC = Σ_t B_t (same)
    ddt_s = dX_s u_s + Σ_{t < s} dS_t;   du = dX dt (+ dy D at L-1)
    ddelta = ddt σ(delta + delta_bias) (softplus);   d delta_bias = Σ ddelta

Work is done in chunks of sequences (``tile_elems`` bounds the (L, E, chunk)
temporaries, so they stay in cache), one state n at a time, and nothing of size
(L, E, N, b) is ever stored: backward recomputes the chunk's exponentials. Equal to
``selective_scan_ref(...)[..., -1]`` up to rounding
(tests/ssm/test_scan_last.py, float64 values and gradients).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_last"]

#: default bound on the (L, E, chunk) elements of one chunk's temporaries (256 kB in float32).
DEFAULT_TILE_ELEMS = 1 << 16


def selective_scan_last(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=False, *, tile_elems=DEFAULT_TILE_ELEMS):
    """Last-position output of the selective scan: time-major inputs -> (E, b).

    Shapes as in the module docstring: ``u``, ``delta`` (L, E, b); ``A`` (E, N);
    ``B`` (L, N, b); ``C`` (N, b) and ``z`` (E, b) of the last position; ``D``,
    ``delta_bias`` (E,). Computed in float32 or wider; returns u's dtype.
    """
    if u.dim() != 3:
        raise ValueError(f"u must be time-major (length, channels, batch), got {tuple(u.shape)}")
    L, E, b = u.shape
    N = A.shape[-1] if A.dim() == 2 else -1
    want = {"delta": (delta, (L, E, b)), "A": (A, (E, N)), "B": (B, (L, N, b)),
            "C": (C, (N, b)), "D": (D, (E,)), "z": (z, (E, b)), "delta_bias": (delta_bias, (E,))}
    for name, (t, shape) in want.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape} "
                             f"for u of shape {tuple(u.shape)} and A of shape {tuple(A.shape)}")
    if int(tile_elems) < 1:
        raise ValueError(f"tile_elems must be >= 1, got {tile_elems!r}")
    return _ScanLastFn.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                             int(tile_elems))


def _chunks(L, E, b, tile_elems):
    step = max(1, tile_elems // max(1, L * E))
    return [slice(s, min(b, s + step)) for s in range(0, b, step)]


def _decay_times(dt, out):
    """out[t] = S_t = sum_{s > t} dt_s along dim 0 (S_{L-1} = 0), by a short exact loop."""
    out[-1] = 0
    for t in range(dt.shape[0] - 2, -1, -1):
        torch.add(out[t + 1], dt[t + 1], out=out[t])
    return out


class _ScanLastFn(torch.autograd.Function):
    """Chunked closed form. The state index n is an outer loop over (L, E, chunk)
    operations (N is small: 4..16), so every operation is a contiguous, cache-sized
    elementwise pass with no broadcast over a middle dim. Forward keeps dt, S and
    K (each (L, E, b), the size of u) for backward, which recomputes exp(A S)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, tile_elems):
        work = torch.promote_types(u.dtype, torch.float32)
        cast = (lambda t: None if t is None else t.to(work))
        uw, dw, Aw, Bw, Cw, Dw, zw, bw = map(cast, (u, delta, A, B, C, D, z, delta_bias))
        L, E, b = u.shape
        N = A.shape[1]
        out = uw.new_empty(E, b)
        dt_all, S_all, K_all = (torch.empty_like(uw) for _ in range(3))
        with torch.no_grad():
            for s in _chunks(L, E, b, tile_elems):
                uc, Bc, Cc = uw[..., s], Bw[..., s], Cw[:, s]
                dt = dw[..., s] if bw is None else dw[..., s] + bw[:, None]
                dt = F.softplus(dt) if softplus else dt.clone()
                S = _decay_times(dt, torch.empty_like(dt))
                K = torch.zeros_like(dt)
                ex = torch.empty_like(dt)
                for n in range(N):
                    torch.mul(S, Aw[:, n, None], out=ex).exp_()
                    K.addcmul_(ex, Bc[:, n:n + 1] * Cc[n])                 # exp(A_n S) B_n C_n
                y = torch.mul(dt, uc).mul_(K).sum(0)                       # sum_t dt u K
                if Dw is not None:
                    y.addcmul_(Dw[:, None], uc[-1])
                out[:, s] = y if zw is None else y * F.silu(zw[:, s])
                dt_all[..., s], S_all[..., s], K_all[..., s] = dt, S, K
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, dt_all, S_all, K_all)
        ctx.cfg = (softplus, tile_elems)
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, dt_all, S_all, K_all = ctx.saved_tensors
        softplus, tile_elems = ctx.cfg
        work = dt_all.dtype
        cast = (lambda t: None if t is None else t.to(work))
        uw, dw, Aw, Bw, Cw, Dw, zw, bw = map(cast, (u, delta, A, B, C, D, z, delta_bias))
        dout = dout.to(work)
        L, E, b = u.shape
        N = A.shape[1]
        g_u, g_delta, g_B = torch.empty_like(uw), torch.empty_like(dw), torch.empty_like(Bw)
        g_C = torch.empty_like(Cw)
        g_z = None if z is None else torch.empty_like(zw)
        g_A = torch.zeros_like(Aw)
        g_D = None if D is None else torch.zeros_like(Dw)
        g_bias = None if delta_bias is None else torch.zeros_like(bw)
        with torch.no_grad():
            for s in _chunks(L, E, b, tile_elems):
                uc, Bc, Cc = uw[..., s], Bw[..., s], Cw[:, s]
                dt, S, K = dt_all[..., s], S_all[..., s], K_all[..., s]
                X = dt * uc
                dy = dout[:, s]
                if zw is not None:
                    zc = zw[:, s]
                    y = (X * K).sum(0)
                    if Dw is not None:
                        y.addcmul_(Dw[:, None], uc[-1])
                    sig = torch.sigmoid(zc)
                    g_z[:, s] = dy * y * sig * (1 + zc * (1 - sig))
                    dy = dy * zc * sig
                if Dw is not None:
                    g_D += (dy * uc[-1]).sum(-1)
                dK = X.mul_(dy)                                            # dy X (X not needed after)
                dS = torch.zeros_like(dt)
                ex = torch.empty_like(dt)
                for n in range(N):
                    torch.mul(S, Aw[:, n, None], out=ex).exp_()
                    ex.mul_(dK)                                            # dK exp(A_n S)
                    dM = ex.sum(1)                                         # (L, chunk): sum over e
                    g_B[:, n, s] = dM * Cc[n]
                    g_C[n, s] = (dM * Bc[:, n]).sum(0)
                    ex.mul_((Bc[:, n] * Cc[n])[:, None])                   # dL/d(A_n S)
                    g_A[:, n] += (ex * S).sum((0, 2))
                    dS.add_(ex.mul_(Aw[:, n, None]))
                ddt = torch.mul(K, dy).mul_(uc)                            # dX u, dX = dy K
                ddt[1:] += dS[:-1].cumsum(0)                               # + sum_{t' < t} dS_t'
                du = torch.mul(K, dy).mul_(dt)                             # dX dt
                if Dw is not None:
                    du[-1].addcmul_(dy, Dw[:, None])
                g_u[..., s] = du
                if softplus:
                    pre = dw[..., s] if bw is None else dw[..., s] + bw[:, None]
                    ddt.mul_(torch.sigmoid(pre))
                g_delta[..., s] = ddt
                if g_bias is not None:
                    g_bias += ddt.sum((0, 2))
        cast_back = (lambda g, ref: None if g is None else g.to(ref.dtype))
        return (cast_back(g_u, u), cast_back(g_delta, delta), cast_back(g_A, A),
                cast_back(g_B, B), cast_back(g_C, C), cast_back(g_D, D), cast_back(g_z, z),
                cast_back(g_bias, delta_bias), None, None)
