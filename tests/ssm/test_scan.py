"""Selective scan: every fast path against the step-by-step reference (float64)."""
from __future__ import annotations

import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from bnnopt.ssm import scan
from bnnopt.ssm.scan import (linear_scan, mamba_ssm_available, selective_scan,
                               selective_scan_ref)

DT = torch.float64
# (method, tile_elems): whole-batch tiles, and tiny tiles that force splitting
# along batch, channels and length (state carried across length segments).
PATHS = [("loop", 1 << 20), ("chunked", 1 << 20), ("loop", 40), ("chunked", 90), ("auto", 1 << 20)]


def inputs(Bt, D, L, N, *, seed=0, with_D=True, with_z=True, with_bias=True, softplus=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, low=None):
        t = torch.rand(*shape, generator=g, dtype=DT) if low is not None else \
            torch.randn(*shape, generator=g, dtype=DT)
        t = t * scale + (low or 0.0)
        return t.requires_grad_()

    # without softplus, delta (+ bias) is kept positive so that exp(delta A) <= 1
    delta = r(Bt, D, L) if softplus else r(Bt, D, L, scale=0.5, low=0.05)
    return dict(u=r(Bt, D, L), delta=delta, A=r(D, N, scale=-2.0, low=-0.1),
                B=r(Bt, N, L), C=r(Bt, N, L),
                D=r(D) if with_D else None, z=r(Bt, D, L) if with_z else None,
                delta_bias=(r(D) if softplus else r(D, scale=0.2, low=0.0)) if with_bias else None)


def grads(out, args, seed=1):
    g = torch.Generator().manual_seed(seed)
    upstream = torch.randn(out.shape, generator=g, dtype=out.dtype)
    leaves = [v for v in args.values() if v is not None]
    return torch.autograd.grad(out, leaves, upstream)


@pytest.mark.parametrize("L", [1, 2, 7, 33, 200])
@pytest.mark.parametrize("method,tile", PATHS)
def test_fast_paths_match_reference(L, method, tile):
    for softplus, with_z, with_D, with_bias in [(True, True, True, True), (False, False, False, False),
                                                (True, False, True, False), (False, True, False, True)]:
        args = inputs(2, 3, L, 4, seed=L, softplus=softplus, with_z=with_z, with_D=with_D,
                      with_bias=with_bias)
        ref = selective_scan_ref(**args, delta_softplus=softplus)
        out = selective_scan(**args, delta_softplus=softplus, method=method, tile_elems=tile)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        for a, b in zip(grads(out, args), grads(ref, args)):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("L", [1, 7, 70])
def test_batch_inner_layout_and_strided_inputs(L):
    """Many short sequences (batch >= channels * N picks the batch-inner tile layout),
    inputs given as (batch, X, L) views of time-major (L, X, batch) memory as the
    Mamba block passes them."""
    args = inputs(24, 2, L, 3, seed=10 + L)
    tm = {k: None if v is None or v.dim() != 3 else
          v.detach().permute(2, 1, 0).contiguous().permute(2, 1, 0).requires_grad_()
          for k, v in args.items()}
    tm = {k: tm[k] if tm[k] is not None else args[k] for k in args}
    ref = selective_scan_ref(**args, delta_softplus=True)
    ref_grads = grads(ref, args)
    for method, tile in [("loop", 1 << 20), ("chunked", 1 << 20), ("loop", 100)]:
        out = selective_scan(**tm, delta_softplus=True, method=method, tile_elems=tile)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        for a, b in zip(grads(out, tm), ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_last_state_and_float32_dtype():
    args = inputs(2, 3, 9, 4, seed=3)
    ref, ref_last = selective_scan_ref(**args, delta_softplus=True, return_last_state=True)
    for method, tile in PATHS:
        out, last = selective_scan(**args, delta_softplus=True, return_last_state=True,
                                   method=method, tile_elems=tile)
        torch.testing.assert_close(last, ref_last.detach(), rtol=1e-10, atol=1e-10)
        assert not last.requires_grad
    args32 = {k: None if v is None else v.detach().float() for k, v in args.items()}
    out32 = selective_scan(**args32, delta_softplus=True)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref.detach(), rtol=1e-4, atol=1e-4)


def test_reference_is_the_recurrence():
    """Independent closed form for one channel and N = 1: y_t = sum_s e^{a sum dt} dt_s b_s u_s c_t."""
    args = inputs(1, 1, 5, 1, seed=4, with_D=False, with_z=False, with_bias=False, softplus=False)
    u, dt, a = args["u"][0, 0], args["delta"][0, 0], args["A"][0, 0]
    b, c = args["B"][0, 0], args["C"][0, 0]
    want = torch.stack([sum(torch.exp(a * dt[s + 1:t + 1].sum()) * dt[s] * b[s] * u[s]
                            for s in range(t + 1)) * c[t] for t in range(5)])
    torch.testing.assert_close(selective_scan_ref(**args)[0, 0], want)
    torch.testing.assert_close(selective_scan(**args)[0, 0], want)


def test_gradcheck_tiny():
    for method, tile in [("loop", 1 << 20), ("chunked", 24)]:
        args = inputs(2, 2, 5, 3, seed=5)
        keys = list(args)

        def f(*tensors, keys=keys, method=method, tile=tile):
            return selective_scan(**dict(zip(keys, tensors)), delta_softplus=True,
                                  method=method, tile_elems=tile)
        assert torch.autograd.gradcheck(f, tuple(args.values()))


@pytest.mark.parametrize("L", [1, 5, 30, 101])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_chunked_equals_loop(L, reverse):
    g = torch.Generator().manual_seed(L)
    a, b, h0 = torch.rand(L, 3, 2, generator=g, dtype=DT), torch.randn(L, 3, 2, generator=g, dtype=DT), \
        torch.randn(3, 2, generator=g, dtype=DT)
    want = torch.empty_like(b)
    prev = h0
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        prev = want[t] = a[t] * prev + b[t]
    for chunked in (False, True):
        got = linear_scan(a, b.clone(), h0, chunked=chunked, reverse=reverse)
        torch.testing.assert_close(got, want)


def test_long_sequence_is_stable_in_float32():
    """Strong decay over a long sequence: no overflow (no exp(-cumsum) tricks)."""
    g = torch.Generator().manual_seed(6)
    L = 3000
    u, delta = torch.randn(1, 2, L, generator=g), torch.full((1, 2, L), 2.0)
    A = torch.tensor([[-8.0, -1.0], [-0.5, -16.0]])
    B, C = torch.randn(1, 2, L, generator=g), torch.randn(1, 2, L, generator=g)
    out = selective_scan(u, delta, A, B, C, method="chunked")
    torch.testing.assert_close(out, selective_scan_ref(u, delta, A, B, C), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all()


def test_bad_arguments():
    args = {k: v.detach() if v is not None else None for k, v in inputs(2, 3, 4, 5).items()}
    with pytest.raises(ValueError, match="'fft'.*loop"):
        selective_scan(**args, method="fft")
    with pytest.raises(ValueError, match="B has shape"):
        selective_scan(**{**args, "B": args["B"][:, :2]})
    with pytest.raises(ValueError, match="tile_elems"):
        selective_scan(**args, tile_elems=0)
    if not mamba_ssm_available():
        with pytest.raises(ValueError, match="mamba_ssm"):
            selective_scan(**args, use_cuda_kernel=True)


@pytest.mark.skipif(not (torch.cuda.is_available() and mamba_ssm_available()),
                    reason="needs CUDA and the mamba_ssm package")
def test_cuda_kernel_dispatch_matches_pure_pytorch():
    args = {k: None if v is None else v.detach().float().cuda().requires_grad_()
            for k, v in inputs(2, 8, 64, 16, seed=7).items()}
    out_k = selective_scan(**args, delta_softplus=True, use_cuda_kernel=True)
    out_p = selective_scan(**args, delta_softplus=True, use_cuda_kernel=False)
    torch.testing.assert_close(out_k, out_p, rtol=1e-3, atol=1e-3)
    for a, b in zip(grads(out_k, args), grads(out_p, args)):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)


def test_softplus_bias_semantics():
    """delta_bias is added before the softplus (as mamba_ssm)."""
    args = inputs(1, 2, 3, 2, seed=8, with_z=False, with_D=False)
    shifted = dict(args, delta=args["delta"] + args["delta_bias"][None, :, None], delta_bias=None)
    pre = dict(shifted, delta=F.softplus(shifted["delta"]))
    torch.testing.assert_close(selective_scan(**args, delta_softplus=True),
                               selective_scan(**pre, delta_softplus=False))
    assert math.isfinite(float(selective_scan(**args, delta_softplus=True).detach().sum()))


# ------------------------------------------------- mamba_ssm dispatch, with a fake package

MAMBA_MODULES = ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.selective_scan_interface")


def install_fake_mamba_ssm(monkeypatch):
    """Put a fake mamba_ssm package in sys.modules; returns the list its kernel records into.

    Its ``selective_scan_fn`` has the signature of the real one, records the
    arguments by name (so a swapped positional argument lands under the wrong
    name) and returns what ``selective_scan_ref`` gives for them.
    """
    calls = []

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False):
        args = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                    delta_softplus=delta_softplus, return_last_state=return_last_state)
        result = selective_scan_ref(**args)
        calls.append((args, result))
        return result

    pkg, ops, iface = (types.ModuleType(name) for name in MAMBA_MODULES)
    pkg.__path__, ops.__path__ = [], []
    pkg.ops, ops.selective_scan_interface = ops, iface
    iface.selective_scan_fn = selective_scan_fn
    for module in (pkg, ops, iface):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return calls


def hide_mamba_ssm(monkeypatch):
    """Make every import of mamba_ssm fail (a None entry in sys.modules)."""
    for name in MAMBA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


def fake_cuda(monkeypatch):
    monkeypatch.setattr(scan, "_is_cuda", lambda u: True)


def kernel_inputs(with_optional=True, dtype=torch.float32):
    """Inputs as the kernel path sees them: the big tensors in ``dtype``, A, D and
    delta_bias in float64 (the dispatch must hand them over as float32)."""
    args = {k: None if v is None else v.detach()
            for k, v in inputs(2, 3, 5, 4, seed=11, with_D=with_optional, with_z=with_optional,
                               with_bias=with_optional).items()}
    return {k: v if v is None or k in ("A", "D", "delta_bias") else v.to(dtype)
            for k, v in args.items()}


def test_auto_dispatch_runs_pure_pytorch_on_cpu_tensors(monkeypatch):
    calls = install_fake_mamba_ssm(monkeypatch)
    assert mamba_ssm_available()                  # only the device keeps the kernel out
    args = {k: None if v is None else v.requires_grad_() for k, v in kernel_inputs().items()}
    out = selective_scan(**args, delta_softplus=True)
    assert calls == []
    assert type(out.grad_fn).__name__ == "_SelectiveScanFnBackward"
    torch.testing.assert_close(out, selective_scan_ref(**args, delta_softplus=True))


def test_auto_dispatch_picks_kernel_for_cuda_tensors_in_kernel_dtypes(monkeypatch):
    calls = install_fake_mamba_ssm(monkeypatch)
    fake_cuda(monkeypatch)
    selective_scan(**kernel_inputs(dtype=torch.float64), delta_softplus=True)
    assert calls == []                            # float64: not a kernel dtype
    selective_scan(**kernel_inputs(dtype=torch.float32), delta_softplus=True, use_cuda_kernel=False)
    assert calls == []
    out = selective_scan(**kernel_inputs(dtype=torch.float32), delta_softplus=True)
    assert len(calls) == 1 and out is calls[0][1]


@pytest.mark.parametrize("return_last_state", [False, True])
@pytest.mark.parametrize("with_optional", [True, False])
def test_kernel_gets_mamba_ssm_arguments_and_its_result_is_returned(monkeypatch, return_last_state,
                                                                    with_optional):
    calls = install_fake_mamba_ssm(monkeypatch)
    fake_cuda(monkeypatch)
    args = kernel_inputs(with_optional)
    result = selective_scan(**args, delta_softplus=True, return_last_state=return_last_state,
                            method="chunked", tile_elems=7, use_cuda_kernel=True)
    assert len(calls) == 1
    got, kernel_result = calls[0]
    for name in ("u", "delta", "B", "C", "z"):    # handed over as they are
        assert got[name] is args[name], name
    for name in ("A", "D", "delta_bias"):         # as float32, as the kernel wants them
        if args[name] is None:
            assert got[name] is None, name
        else:
            assert got[name].dtype == torch.float32, name
            assert torch.equal(got[name], args[name].float()), name
    assert got["delta_softplus"] is True and got["return_last_state"] is return_last_state
    assert result is kernel_result
    want = selective_scan_ref(**args, delta_softplus=True, return_last_state=True)
    if return_last_state:
        out, last = result
        torch.testing.assert_close(last, want[1])
    else:
        out = result
    torch.testing.assert_close(out, want[0])


@pytest.mark.parametrize("cuda,installed", [(False, False), (False, True), (True, False)])
def test_required_kernel_names_what_is_missing(monkeypatch, cuda, installed):
    calls = install_fake_mamba_ssm(monkeypatch) if installed else []
    if not installed:
        hide_mamba_ssm(monkeypatch)
    if cuda:
        fake_cuda(monkeypatch)
    with pytest.raises(ValueError, match="use_cuda_kernel=True needs") as err:
        selective_scan(**kernel_inputs(), use_cuda_kernel=True)
    message = str(err.value)
    assert ("CUDA tensors (u is on cpu)" in message) == (not cuda)
    assert ("the mamba_ssm package" in message) == (not installed)
    assert calls == []


@pytest.mark.parametrize("broken", ["absent", "no kernel", "extension fails"])
def test_mamba_ssm_available_is_false_when_the_import_fails(monkeypatch, broken):
    install_fake_mamba_ssm(monkeypatch)
    assert mamba_ssm_available()
    iface = sys.modules[MAMBA_MODULES[-1]]
    if broken == "absent":
        hide_mamba_ssm(monkeypatch)
    elif broken == "no kernel":
        del iface.selective_scan_fn
    else:                                         # not an ImportError: a broken CUDA library
        def load_extension(name):
            raise OSError("selective_scan_cuda.so: undefined symbol")
        del iface.selective_scan_fn
        iface.__getattr__ = load_extension
    assert not mamba_ssm_available()
