"""A one-channel Mamba read at its last token, fused into one chunked function.

FSG's default slow-net (``preset="cpu"``, per-weight layout) is a Mamba block
with d_model = 1, d_inner = expand·d_model = 1 and dt_rank = 1, run over one
short sequence of scalar tokens per weight (~270k sequences of L = 7 for
ResNet-20) and read at the last token only. Every projection is then a
product with a scalar and the whole block collapses to a few scalar formulas
per (token, sequence). With tokens h_t (t = 0..L-1) and the block's
parameters as scalars (``in_proj`` a_x, a_z; ``conv1d`` taps w_0..w_{K-1} and
bias c_b; ``x_proj`` rows p_dt, p_B[n], p_C[n]; ``dt_proj`` weight q and bias
q_b; A_n = -exp(A_log[n]); D; ``out_proj`` o)::

    x_t   = a_x h_t
    u_t   = silu(c_b + sum_k w_k x_{t-(K-1)+k})            causal depthwise conv, then SiLU
    dt_t  = softplus(q p_dt u_t + q_b)                     (v_t = q p_dt u_t + q_b)
    S_t   = sum_{s > t} dt_s                               decay time from t to the last token
    kappa_t = sum_n p_B[n] p_C[n] exp(A_n S_t)
    r     = sum_t dt_t u_t^2 kappa_t
    y     = u_{L-1} (r + D)                                 last output of the scan, plus D u
    out   = o · y · silu(a_z h_{L-1})

This equals :meth:`bnnopt.ssm.mamba.Mamba.forward` at the last position
because, with one channel, B_t[n] = p_B[n] u_t and C[n] = p_C[n] u_{L-1}, and
the unrolled recurrence gives h_{L-1}[n] = sum_t exp(A_n S_t) dt_t u_t B_t[n]
(:mod:`bnnopt.ssm.scan_last`). Backward is written by hand (the chain rule
through the lines above, in reverse; see :meth:`_ScalarMambaLast.backward`).

The causal conv and the decay times are (L, L) matrices applied to the (L, chunk)
tokens (pre = T h + c_b, S = U dt, and their adjoints in backward), one small
matrix product each instead of a loop of shifted adds.

Why: in eager PyTorch each of the block's ~150 autograd operations is a pass
over (L, sequences) tensors much larger than the cache. Here the sequences are
processed in chunks whose temporaries stay in cache; forward keeps six
(L, sequences) tensors (pre-activation, sigmoid, u, dt, S, kappa), and backward
recomputes the rest of a chunk's forward (the exponentials included) right
before its gradients. Equal to the general path to rounding (tests/ssm/test_scalar_mamba.py,
float64).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["applies", "scalar_mamba_last"]

#: (L, chunk) elements per chunk (256 kB in float32: the temporaries stay in cache).
#: Measured on the 2-core machine, 1 and 2 threads: 1<<16 and 1<<17 best, 1<<15 1.4x
#: slower (per-operation overhead), 1<<19 1.2x; Python threads over chunks did not help.
DEFAULT_CHUNK_ELEMS = 1 << 16


def applies(mamba, h: torch.Tensor) -> bool:
    """Whether ``mamba`` on ``h`` is the one-channel block this module computes."""
    return (mamba.d_model == 1 and mamba.d_inner == 1 and mamba.dt_rank == 1
            and mamba.in_proj.bias is None and mamba.out_proj.bias is None
            and h.device.type == "cpu" and h.shape[1] >= 1)


def scalar_mamba_last(mamba, h: torch.Tensor, chunk_elems: int | None = None):
    """``mamba.forward(h)[:, -1]`` for a one-channel block: h (b, L, 1) -> (b, 1).

    ``chunk_elems``: (L, chunk) elements per chunk (default ``DEFAULT_CHUNK_ELEMS``).
    """
    if chunk_elems is None:
        chunk_elems = DEFAULT_CHUNK_ELEMS
    conv_bias = mamba.conv1d.bias
    params = (mamba.in_proj.weight, mamba.conv1d.weight,
              conv_bias if conv_bias is not None else mamba.conv1d.weight.new_zeros(1),
              mamba.x_proj.weight, mamba.dt_proj.weight, mamba.dt_proj.bias, mamba.A_log,
              mamba.D, mamba.out_proj.weight)
    out = _ScalarMambaLast.apply(h[..., 0].t(), int(chunk_elems), *params)
    return out.unsqueeze(-1)


class _Scalars:
    """The block's parameters as Python numbers (CPU: no device sync)."""

    def __init__(self, w_in, w_conv, b_conv, w_x, w_dt, b_dt, A_log, D, w_out):
        N = A_log.shape[1]
        self.a_x, self.a_z = float(w_in[0, 0]), float(w_in[1, 0])
        self.w = [float(v) for v in w_conv[0, 0]]
        self.cb = float(b_conv[0])
        self.p_dt = float(w_x[0, 0])
        self.p_B = [float(v) for v in w_x[1:1 + N, 0]]
        self.p_C = [float(v) for v in w_x[1 + N:, 0]]
        self.q, self.qb = float(w_dt[0, 0]), float(b_dt[0])
        self.A = [-float(torch.exp(v.double())) for v in A_log[0]]
        self.D, self.o = float(D[0]), float(w_out[0, 0])
        self.c = [b * c for b, c in zip(self.p_B, self.p_C)]
        work = torch.promote_types(A_log.dtype, torch.float32)
        col = (lambda v: torch.tensor(v, dtype=work).reshape(N, 1, 1))
        self.A_col, self.c_col = col(self.A), col(self.c)          # (N, 1, 1): over states
        self.cA_col = col([c * a for c, a in zip(self.c, self.A)])
        self.work, self._mats = work, {}

    def mats(self, L: int):
        """(L, L) matrices: T, the causal conv times a_x (pre = T h + c_b), and U, the
        strict upper triangle of ones (S = U dt: S_t = sum_{s > t} dt_s)."""
        if L not in self._mats:
            K = len(self.w)
            T = torch.zeros(L, L, dtype=torch.float64)
            for s in range(min(K, L)):                      # tap K-1-s looks s steps back
                T.diagonal(-s).fill_(self.w[K - 1 - s] * self.a_x)
            U = torch.ones(L, L, dtype=torch.float64).triu(1)
            self._mats[L] = (T.to(self.work), U.to(self.work))
        return self._mats[L]


class _Forward:
    """One chunk's forward quantities, h (L, m) -> everything backward needs.

    ``keep``: (L, m) views of the six full-size buffers pre, sig, u, dt, S, kappa.
    With ``computed=False`` they are written (the forward pass); with True they
    are read instead of recomputed (backward), and only the cheap rest is redone.
    """

    def __init__(self, h, p: _Scalars, keep, computed: bool):
        L = h.shape[0]
        T, U = p.mats(L)
        pre, sig, u, dt, S, kappa = keep
        self.h = h
        if not computed:
            torch.addmm(h.new_full((), p.cb), T, h, out=pre)    # causal conv of x = a_x h
            torch.sigmoid(pre, out=sig)
            torch.mul(pre, sig, out=u)
        self.pre, self.sig, self.u = pre, sig, u
        self.v = u * (p.q * p.p_dt) + p.qb
        if not computed:
            dt.copy_(F.softplus(self.v))
            torch.mm(U, dt, out=S)
        self.dt, self.S = dt, S
        self.e = e = torch.mul(S, p.A_col).exp_()                      # (N, L, m) exp(A_n S_t)
        if not computed:
            kappa.copy_((p.c_col.reshape(1, -1) @ e.view(e.shape[0], -1)).view_as(kappa))
        self.kappa = kappa
        self.r = (dt * u * u * kappa).sum(0)                           # (m,)
        self.u_last = u[-1]
        self.y = self.u_last * (self.r + p.D)
        z = h[-1] * p.a_z
        self.z, self.sz = z, torch.sigmoid(z)
        self.out = self.y * (z * self.sz) * p.o


class _ScalarMambaLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, chunk_elems, *params):
        work = torch.promote_types(h.dtype, torch.float32)
        p = _Scalars(*params)
        L, b = h.shape
        step = max(1, chunk_elems // L)
        out = h.new_empty(b, dtype=work)
        keep = h.new_empty(6, L, b, dtype=work)   # pre, sig, u, dt, S, kappa for backward
        with torch.no_grad():
            for s in range(0, b, step):
                f = _Forward(h[:, s:s + step].to(work), p, keep[:, :, s:s + step], False)
                out[s:s + step] = f.out
        ctx.save_for_backward(h, keep, *params)
        ctx.step = step
        return out.to(h.dtype)

    @staticmethod
    def backward(ctx, dout):
        h, keep, *params = ctx.saved_tensors
        p = _Scalars(*params)
        work = torch.promote_types(h.dtype, torch.float32)
        L, b = h.shape
        keys = _grad_keys(len(p.w), len(p.A))
        dh = torch.empty(L, b, dtype=work)
        step, sums = ctx.step, []
        with torch.no_grad():
            for s in range(0, b, step):
                f = _Forward(h[:, s:s + step].to(work), p, keep[:, :, s:s + step], True)
                dh[:, s:s + step], parts = _chunk_backward(f, dout[s:s + step].to(work), p)
                zero = dout.new_zeros((), dtype=work)      # taps reaching before t = 0 (K > L)
                sums.append(torch.stack([parts.get(k, zero) for k in keys]))
        acc = dict(zip(keys, torch.stack(sums).to(torch.float64).sum(0).tolist()))
        return (dh.to(h.dtype), None, *_param_grads(acc, p, params))


def _grad_keys(K: int, N: int) -> list:
    """The scalar gradients summed over chunks: named ones, conv taps, c_n and A_n."""
    return (["a_x", "a_z", "c_b", "p_dt", "q", "q_b", "D", "o"] + [("w", k) for k in range(K)]
            + [("c", n) for n in range(N)] + [("A", n) for n in range(N)])


def _chunk_backward(f: _Forward, d, p: _Scalars):
    """One chunk: dL/dh (L, m) and the chunk's sums of the scalar gradients (by key)."""
    L, K, N = f.h.shape[0], len(p.w), len(p.A)
    silz = f.z * f.sz
    parts = {"o": (d * f.y * silz).sum()}
    dy = d * silz * p.o
    dz = d * f.y * f.sz * (1 + f.z * (1 - f.sz)) * p.o
    parts["a_z"] = (dz * f.h[-1]).sum()
    parts["D"] = (dy * f.u_last).sum()
    dr = dy * f.u_last                                     # (m,)
    du_last = dy * (f.r + p.D)
    du2 = f.u * f.u * dr                                   # dr u^2
    ddt = du2 * f.kappa                                    # d r / d dt
    dkappa = du2.mul_(f.dt)                                # dr dt u^2
    du = f.dt * f.kappa * dr * f.u * 2                     # d r / d u
    e = f.e.mul_(dkappa)                                   # dkappa exp(A_n S)
    g_c = e.sum((1, 2))                                    # (N,)
    g_A = (e * f.S).sum((1, 2)) * p.c_col.reshape(-1)
    dS = (p.cA_col.reshape(1, -1) @ e.view(N, -1)).view(L, -1)   # sum_n c_n A_n ...
    for n in range(N):
        parts["c", n], parts["A", n] = g_c[n], g_A[n]
    T, U = p.mats(L)
    ddt.addmm_(U.t(), dS)                                  # dt_t gets sum_{t' < t} dS_t'
    dv = ddt.mul_(torch.sigmoid(f.v))                      # softplus'
    dvu = (dv * f.u).sum()
    parts["q"], parts["p_dt"], parts["q_b"] = dvu * p.p_dt, dvu * p.q, dv.sum()
    du.add_(dv, alpha=p.q * p.p_dt)
    du[-1] += du_last
    dpre = du.mul_(f.sig * (1 + f.pre * (1 - f.sig)))      # silu'
    parts["c_b"] = dpre.sum()
    M = dpre @ f.h.t()                                     # (L, L): sum_m dpre_t h_t'
    diag = [M.diagonal(-sh).sum() for sh in range(min(K, L))]   # sum_t dpre_t h_{t-sh}
    for sh, d_sh in enumerate(diag):                       # tap K-1-sh looks sh steps back
        parts["w", K - 1 - sh] = d_sh * p.a_x
    parts["a_x"] = sum(d_sh * p.w[K - 1 - sh] for sh, d_sh in enumerate(diag))
    dhc = T.t() @ dpre                                     # adjoint of the conv (a_x included)
    dhc[-1] += dz * p.a_z
    return dhc, parts


def _param_grads(acc: dict, p: _Scalars, params):
    """The summed scalar gradients as tensors shaped like the parameters."""
    K, N = len(p.w), len(p.A)
    c = [acc["c", n] for n in range(N)]                    # c_n = p_B[n] p_C[n]
    x_proj = [acc["p_dt"]] + [c[n] * p.p_C[n] for n in range(N)] + [c[n] * p.p_B[n] for n in range(N)]
    grads = ([[acc["a_x"]], [acc["a_z"]]], [acc["w", k] for k in range(K)], [acc["c_b"]], x_proj,
             [[acc["q"]]], [acc["q_b"]],
             [[acc["A", n] * p.A[n] for n in range(N)]],   # dA/dA_log = A
             [acc["D"]], [[acc["o"]]])
    return tuple(torch.tensor(g, dtype=torch.float64).reshape(ref.shape).to(ref.dtype)
                 for g, ref in zip(grads, params))
