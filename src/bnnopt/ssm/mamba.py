"""A Mamba block (Gu and Dao 2023, Sec. 3.4 / Fig. 3) on the pure-PyTorch scan.

Same parameters, names and initialisation as ``mamba_ssm.modules.mamba_simple.
Mamba`` (so its state dicts load), and the forward of its non-fused path.
With ``E = d_inner = expand * d_model``, ``N = d_state``, ``R = dt_rank``:

    x, z   = split(in_proj(h))                  in_proj: d_model -> 2E (no bias)
    x      = silu(causal_depthwise_conv(x))     width d_conv, per-channel weights + bias
    dt, B, C = split(x_proj(x))                 x_proj: E -> R + 2N (no bias)
    dt     = dt_proj.weight @ dt                R -> E; its bias enters the scan as
                                                delta_bias, with softplus (Alg. 2 s_Delta)
    A      = -exp(A_log)                        (E, N), S4D-real init A_log = log(1..N)
    y      = selective_scan(x, dt, A, B, C, D, z)   = SSM(x) + D x, gated by silu(z)
    out    = out_proj(y)                        E -> d_model (no bias)

Initialisation (mamba_simple): dt_proj.weight ~ U(-s, s) with s = R^-1/2 *
dt_scale; dt drawn log-uniformly in [dt_min, dt_max] (floored at dt_init_floor)
and dt_proj.bias = softplus^-1(dt) = dt + log(1 - exp(-dt)); D = 1; the linear
layers and the conv use PyTorch's default initialisation.

Shapes: forward(h: (batch, L, d_model)) -> (batch, L, d_model). Internally all
activations are time-major with the batch innermost, (L, features, batch), and
reach the scan as (batch, features, L) views of that memory, which is the
scan's own layout for many short sequences (FSG per-weight layout: batch ~
1e5..1e6, L ~ 7, d_model = 1), so nothing is transposed on the way.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .scan import DEFAULT_TILE_ELEMS, METHODS, use_kernel, selective_scan
from . import scalar_mamba
from .scan_last import selective_scan_last

__all__ = ["Mamba", "causal_depthwise_conv"]

DT_INITS = ("random", "constant")


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """out[t, e, :] = bias[e] + sum_k weight[e, 0, k] * x[t - (K-1) + k, e, :].

    Time-major x: (L, E, batch); weight: (E, 1, K) as nn.Conv1d(E, E, K,
    groups=E) stores it. Equal to that conv with padding K-1 cut to the first
    L outputs (Mamba's causal conv), computed as shifted multiply-adds; taps
    reaching before t = 0 (K > L) are skipped.
    """
    L, K = x.shape[0], weight.shape[-1]
    w = weight[:, 0, :, None]                             # (E, K, 1)
    out = x * w[:, K - 1]
    if bias is not None:
        out = out + bias[:, None]
    for s in range(1, min(K, L)):                         # tap k = K-1-s looks s steps back
        out[s:] += x[:L - s] * w[:, K - 1 - s]
    return out


class _ConvSiLU(torch.autograd.Function):
    """silu(causal_depthwise_conv(x)) saving only x: the backward recomputes the
    pre-activation and runs the conv's adjoint tap by tap into one buffer
    (autograd of the in-place taps would allocate a zero-filled full-size
    gradient per tap)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight, bias)
        return F.silu(causal_depthwise_conv(x, weight, bias))

    @staticmethod
    def backward(ctx, g):
        x, weight, bias = ctx.saved_tensors
        L, K = x.shape[0], weight.shape[-1]
        pre = causal_depthwise_conv(x, weight, bias)
        sig = torch.sigmoid(pre)
        g = g * sig * (1 + pre * (1 - sig))                   # d silu / d pre
        del pre, sig
        w = weight[:, 0, :, None]                             # (E, K, 1)
        gx = g * w[:, K - 1]
        gw = torch.zeros_like(weight)
        gw[:, 0, K - 1] = (g * x).sum((0, 2))
        for s in range(1, min(K, L)):                         # adjoint of the shift by s
            gx[:L - s] += g[s:] * w[:, K - 1 - s]
            gw[:, 0, K - 1 - s] = (g[s:] * x[:L - s]).sum((0, 2))
        gb = None if bias is None else g.sum((0, 2))
        return gx, gw, gb


class _TimeMajorMatmul(torch.autograd.Function):
    """W (M, K) @ x (L, K, b) -> (L, M, b), with dW computed as one GEMM whose
    operands are both contiguous along the long (L*b) reduction dim (autograd's
    default folds it into a much slower layout on CPU)."""

    @staticmethod
    def forward(ctx, weight, x):
        ctx.save_for_backward(weight, x)
        return torch.matmul(weight, x)

    @staticmethod
    def backward(ctx, g):
        weight, x = ctx.saved_tensors
        gx = torch.matmul(weight.t(), g) if ctx.needs_input_grad[1] else None
        gw = None
        if ctx.needs_input_grad[0]:
            M, K = weight.shape
            gw = torch.mm(g.transpose(0, 1).reshape(M, -1), x.transpose(0, 1).reshape(K, -1).t())
        return gw, gx


def _linear(weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None = None):
    """Time-major linear map: (M, K) weight, x (L, K, batch) -> (L, M, batch)."""
    y = x * weight[:, :1] if weight.shape[1] == 1 else _TimeMajorMatmul.apply(weight, x)
    return y if bias is None else y + bias[:, None]


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """A, D and the dt bias are kept in float32 or wider (as mamba_ssm does)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class Mamba(nn.Module):
    """Mamba block: (batch, L, d_model) -> (batch, L, d_model); see module docstring.

    ``scan_method`` / ``tile_elems`` / ``use_cuda_kernel`` are passed to
    :func:`bnnopt.ssm.scan.selective_scan`.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, scan_method: str = "auto",
                 tile_elems: int = DEFAULT_TILE_ELEMS, use_cuda_kernel: bool | None = None,
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Mamba {name} must be a positive int, got {value!r}")
        if not expand > 0 or int(expand * d_model) < 1:
            raise ValueError(f"Mamba expand must give d_inner = int(expand * d_model) >= 1, "
                             f"got expand={expand!r} with d_model={d_model}")
        if dt_rank != "auto" and (not isinstance(dt_rank, int) or dt_rank < 1):
            raise ValueError(f"Mamba dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        if dt_init not in DT_INITS:
            raise ValueError(f"invalid Mamba dt_init {dt_init!r}; valid: {', '.join(DT_INITS)}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"Mamba needs 0 < dt_min <= dt_max, got {dt_min!r}, {dt_max!r}")
        if scan_method not in METHODS:
            raise ValueError(f"invalid Mamba scan_method {scan_method!r}; valid: {', '.join(METHODS)}")
        kw = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = E = int(expand * d_model)
        self.dt_rank = R = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.scan_method, self.tile_elems, self.use_cuda_kernel = scan_method, tile_elems, use_cuda_kernel

        self.in_proj = nn.Linear(d_model, 2 * E, bias=bias, **kw)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=conv_bias, **kw)
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False, **kw)
        self.dt_proj = nn.Linear(R, E, bias=True, **kw)
        self.out_proj = nn.Linear(E, d_model, bias=bias, **kw)

        with torch.no_grad():
            std = R ** -0.5 * dt_scale
            if dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
            log_dt = torch.rand(E, **kw) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            dt = torch.exp(log_dt).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # softplus^-1(dt)
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(E, 1)
        self.A_log = nn.Parameter(torch.log(A))                          # (E, N), S4D-real
        self.D = nn.Parameter(torch.ones(E, device=device))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, "
                f"expand={self.expand}, d_inner={self.d_inner}, dt_rank={self.dt_rank}")

    def _check_input(self, h: torch.Tensor) -> None:
        if h.dim() != 3 or h.shape[-1] != self.d_model:
            raise ValueError(f"Mamba expects (batch, length, {self.d_model}), got {tuple(h.shape)}")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._check_input(h)
        E, N, R = self.d_inner, self.d_state, self.dt_rank
        # Time-major, batch-inner layout (L, features, batch) throughout: every
        # projection is one broadcast GEMM, and the scan gets its preferred layout
        # for many short sequences without transposed copies.
        hT = h.permute(1, 2, 0).contiguous()                             # (L, d_model, b)
        xz = _linear(self.in_proj.weight, hT, self.in_proj.bias)         # (L, 2E, b)
        x, z = xz.split(E, dim=1)
        x = _ConvSiLU.apply(x, self.conv1d.weight, self.conv1d.bias)     # (L, E, b)
        dt, Bm, Cm = _linear(self.x_proj.weight, x).split([R, N, N], dim=1)
        dt = _linear(self.dt_proj.weight, dt)                            # (L, E, b)
        A = -torch.exp(_at_least_fp32(self.A_log))
        bt = (lambda t: t.permute(2, 1, 0))                              # -> (b, features, L)
        y = selective_scan(bt(x), bt(dt), A, bt(Bm), bt(Cm), _at_least_fp32(self.D), bt(z),
                           _at_least_fp32(self.dt_proj.bias), delta_softplus=True,
                           method=self.scan_method, tile_elems=self.tile_elems,
                           use_cuda_kernel=self.use_cuda_kernel)          # (b, E, L)
        out = _linear(self.out_proj.weight, bt(y), self.out_proj.bias)   # (L, d_model, b)
        return out.permute(2, 0, 1)

    def forward_last(self, h: torch.Tensor) -> torch.Tensor:
        """The output at the last position only: (batch, L, d_model) -> (batch, d_model).

        Equal to ``forward(h)[:, -1]`` (up to rounding) and much cheaper for many
        short sequences: z and C are projected at the last position only and the
        scan is :func:`bnnopt.ssm.scan_last.selective_scan_last` (closed form,
        no per-step states); a one-channel block on CPU (FSG's default slow-net)
        goes through :mod:`bnnopt.ssm.scalar_mamba`, fused and chunked. On CUDA
        with ``mamba_ssm`` installed it is ``forward(h)[:, -1]`` through the
        official kernel.
        """
        self._check_input(h)
        if h.shape[1] == 0 or use_kernel(h, self.use_cuda_kernel):
            return self.forward(h)[:, -1]
        if scalar_mamba.applies(self, h):      # one channel (FSG's default): fused, chunked
            return scalar_mamba.scalar_mamba_last(self, h)
        E, N, R = self.d_inner, self.d_state, self.dt_rank
        hT = h.permute(1, 2, 0).contiguous()                             # (L, d_model, b)
        w_in = self.in_proj.weight
        b_in = self.in_proj.bias
        x = _linear(w_in[:E], hT, None if b_in is None else b_in[:E])    # (L, E, b)
        z = _linear(w_in[E:], hT[-1:], None if b_in is None else b_in[E:])[0]   # (E, b)
        x = _ConvSiLU.apply(x, self.conv1d.weight, self.conv1d.bias)     # (L, E, b)
        w_x = self.x_proj.weight                                         # (R + 2N, E)
        dt, Bm = _linear(w_x[:R + N], x).split([R, N], dim=1)            # (L, R, b), (L, N, b)
        Cm = _linear(w_x[R + N:], x[-1:])[0]                             # (N, b)
        dt = _linear(self.dt_proj.weight, dt)                            # (L, E, b)
        A = -torch.exp(_at_least_fp32(self.A_log))
        y = selective_scan_last(x, dt, A, Bm, Cm, _at_least_fp32(self.D), z,
                                _at_least_fp32(self.dt_proj.bias), delta_softplus=True)  # (E, b)
        out = _linear(self.out_proj.weight, y[None], self.out_proj.bias)[0]   # (d_model, b)
        return out.t()
