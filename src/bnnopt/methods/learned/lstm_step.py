"""One LSTM time step over a very large batch, computed in cache-sized row chunks.

MetaQuant's LSTMFC runs a one-layer LSTM with input size 1 for ONE time step per
training iteration, with every weight element of the network as a batch row
(N ~ 270k for ResNet-20) and hidden size H (100). ``torch.nn.LSTM`` then builds
(N, 4H) gate tensors (~430 MB each in float32) and keeps several of them for
backward: the step is memory-bound and dominates LSTMFC's cost on a CPU.

This module computes the same function with PyTorch's gate order (i, f, g, o):

    a   = x w_ihᵀ + h₀ W_hhᵀ + b_ih + b_hh                    (N, 4H)
    i, f, o = σ(a_i), σ(a_f), σ(a_o);   g = tanh(a_g)          (N, H) each
    c   = f ⊙ c₀ + i ⊙ g                                       (N, H)
    h   = o ⊙ tanh(c)                                          (N, H)
    out = h w_fcᵀ + b_fc                                       (N,)

row chunk by row chunk, and its backward RECOMPUTES each chunk's gates instead of
storing them (nothing of size (N, 4H) is ever kept). With upstream gradient δ (N,)
on ``out`` only (the new state is returned detached, as MetaQuant truncates
back-propagation through time at one step):

    ∂h = δ w_fc;  ∂o = ∂h ⊙ tanh(c);  ∂c = ∂h ⊙ o ⊙ (1 - tanh²c)
    ∂i = ∂c ⊙ g;  ∂f = ∂c ⊙ c₀;  ∂g = ∂c ⊙ i
    ∂a = [∂i·i(1-i), ∂f·f(1-f), ∂g·(1-g²), ∂o·o(1-o)]          (N, 4H)
    ∂W_hh = ∂aᵀ h₀,  ∂w_ih = ∂aᵀ x,  ∂b_ih = ∂b_hh = Σ_n ∂a,  ∂w_fc = δᵀ h,  ∂b_fc = Σ δ
    ∂x = ∂a w_ih,  ∂h₀ = ∂a W_hh,  ∂c₀ = ∂c ⊙ f                (only when asked for)

Values and gradients equal ``nn.LSTM`` + ``nn.Linear`` up to rounding
(tests/methods/learned/test_lstm_step.py checks this in float64).
"""
from __future__ import annotations

import torch
from torch import Tensor

# Rows per chunk: keeps one chunk's (rows, 4H) gate block around a megabyte for H = 100.
DEFAULT_CHUNK_ELEMS = 1 << 18


def _rows_per_chunk(hidden: int, chunk_elems: int) -> int:
    return max(1, chunk_elems // (4 * hidden))


def _gates(x, h0, c0, w_ih, w_hh, bias, out=None):
    """Activated gates (i, f, g, o) (written to ``out`` when given) and the new cell
    state of one chunk."""
    if out is None:
        a = torch.addmm(bias, h0, w_hh.t())
    else:                                  # in place: addmm's out= path goes through a copy
        a = out.copy_(bias.expand_as(out)).addmm_(h0, w_hh.t())
    a.addcmul_(x.unsqueeze(1), w_ih.t())  # input size 1: x w_ihᵀ is an outer product
    H = w_hh.shape[1]
    a[:, :2 * H].sigmoid_()
    a[:, 2 * H:3 * H].tanh_()
    a[:, 3 * H:].sigmoid_()
    i, f, g, o = a.split(H, dim=1)
    c = torch.addcmul(i * g, f, c0)
    return a, (i, f, g, o), c


class _LSTMStepFC(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_fc, b_fc, chunk_elems, save):
        N, H = x.shape[0], w_hh.shape[1]
        bias = b_ih + b_hh
        h = x.new_empty(N, H)
        c = x.new_empty(N, H)
        out = x.new_empty(N)
        # save: keep the activated gates and tanh(c) for backward (N x 5H values)
        gates = x.new_empty(N, 4 * H) if save else None
        tanh_c = x.new_empty(N, H) if save else None
        rows = _rows_per_chunk(H, chunk_elems)
        for s in range(0, N, rows):
            e = min(N, s + rows)
            _, (_, _, _, o), cc = _gates(x[s:e], h0[s:e], c0[s:e], w_ih, w_hh, bias,
                                         out=None if gates is None else gates[s:e])
            c[s:e] = cc
            tc = cc.tanh() if tanh_c is None else torch.tanh(cc, out=tanh_c[s:e])
            hh = torch.mul(o, tc, out=h[s:e])
            torch.addmv(b_fc, hh, w_fc[0], out=out[s:e])
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_fc, gates, tanh_c)
        ctx.rows = rows
        ctx.mark_non_differentiable(h, c)
        ctx.set_materialize_grads(False)   # no zero-filled (N, H) gradients for h, c
        return out, h, c

    @staticmethod
    def backward(ctx, dout, _dh, _dc):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_fc, gates, tanh_c = ctx.saved_tensors
        need = ctx.needs_input_grad
        if dout is None:                   # out unused: nothing flows back
            return (None,) * 11
        N, H = x.shape[0], w_hh.shape[1]
        bias = b_ih + b_hh
        dW_hh = torch.zeros_like(w_hh)
        dw_ih = torch.zeros_like(w_ih)
        db = torch.zeros_like(b_ih)
        dw_fc = torch.zeros_like(w_fc)
        dx = torch.empty_like(x) if need[0] else None
        dh0 = torch.empty_like(h0) if need[1] else None
        dc0 = torch.empty_like(c0) if need[2] else None
        for s in range(0, N, ctx.rows):
            e = min(N, s + ctx.rows)
            d = dout[s:e]
            if gates is None:                     # recompute the chunk's gates (one GEMM)
                a, (i, f, g, o), c = _gates(x[s:e], h0[s:e], c0[s:e], w_ih, w_hh, bias)
                tc = c.tanh()
            else:
                a, tc = gates[s:e], tanh_c[s:e]
                i, f, g, o = a.split(H, dim=1)
            dh = d.unsqueeze(1) * w_fc           # (rows, H)
            dw_fc.addmm_(d.unsqueeze(0), o * tc)  # δᵀ h
            dcell = dh * o * (1 - tc * tc)
            da = torch.empty_like(a)
            di, df, dg, do = da.split(H, dim=1)
            torch.mul(dcell * g, i * (1 - i), out=di)
            torch.mul(dcell * c0[s:e], f * (1 - f), out=df)
            torch.mul(dcell * i, 1 - g * g, out=dg)
            torch.mul(dh * tc, o * (1 - o), out=do)
            dW_hh.addmm_(da.t(), h0[s:e])
            dw_ih.addmm_(da.t(), x[s:e].unsqueeze(1))
            db += da.sum(0)
            if dx is not None:
                torch.mv(da, w_ih[:, 0], out=dx[s:e])
            if dh0 is not None:
                torch.mm(da, w_hh, out=dh0[s:e])
            if dc0 is not None:
                torch.mul(dcell, f, out=dc0[s:e])
        db_ih = db if need[5] else None
        db_hh = db.clone() if need[6] else None
        return (dx, dh0, dc0, dw_ih if need[3] else None, dW_hh if need[4] else None,
                db_ih, db_hh, dw_fc if need[7] else None, dout.sum().reshape(1) if need[8] else None,
                None, None)


def lstm_step_fc(x: Tensor, state: tuple[Tensor, Tensor] | None, lstm: torch.nn.LSTM,
                 fc: torch.nn.Linear, chunk_elems: int = DEFAULT_CHUNK_ELEMS,
                 save_gates: bool = False):
    """One step of ``lstm`` (1 layer, input size 1) then ``fc`` (H -> 1), chunked.

    ``save_gates``: keep the activated gates and tanh(c) (N x 5H values) for
    backward instead of recomputing them there (saves one (N x H) x (H x 4H) GEMM
    and the gate nonlinearities per step, at N·5H·4 bytes: 540 MB for ResNet-20).

    x (N,); state ((1, N, H), (1, N, H)) or None for zeros. Returns
    (out (N,), (h (1, N, H), c (1, N, H))); the new state carries no gradient.
    """
    if lstm.num_layers != 1 or lstm.input_size != 1 or lstm.bidirectional or not lstm.bias:
        raise ValueError("lstm_step_fc needs a 1-layer, unidirectional LSTM with input size 1 "
                         f"and biases; got {lstm}")
    if fc.out_features != 1 or fc.bias is None:
        raise ValueError(f"lstm_step_fc needs a Linear(H, 1) read-out with bias; got {fc}")
    N, H = x.numel(), lstm.hidden_size
    if state is None:
        h0 = x.new_zeros(N, H)
        c0 = x.new_zeros(N, H)
    else:
        h0, c0 = (s.reshape(N, H) for s in state)
    out, h, c = _LSTMStepFC.apply(x.reshape(N), h0, c0, lstm.weight_ih_l0, lstm.weight_hh_l0,
                                  lstm.bias_ih_l0, lstm.bias_hh_l0, fc.weight, fc.bias,
                                  chunk_elems, bool(save_gates))
    return out, (h.unsqueeze(0), c.unsqueeze(0))
