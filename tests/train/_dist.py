"""Helpers for the multi-process tests: launch torchrun, compare nested states."""
import os
import subprocess
import sys
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[2] / "src"


def torchrun_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(args: list[str], nproc: int = 2, timeout: float = 240, **kwargs):
    """``python -m torch.distributed.run --standalone --nproc-per-node N ARGS`` (CompletedProcess)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, env=torchrun_env(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def leaves(obj, prefix=""):
    """(path, tensor-or-value) pairs of a nested dict/list state."""
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from leaves(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def max_difference(a, b) -> tuple[float, str]:
    """Largest max|a - b| / max(1, max|b|) over the tensors of two nested states of the
    same structure (absolute for values up to 1, relative beyond)."""
    la, lb = dict(leaves(a)), dict(leaves(b))
    assert la.keys() == lb.keys(), sorted(set(la) ^ set(lb))[:5]
    worst, where = 0.0, ""
    for key, va in la.items():
        vb = lb[key]
        if isinstance(va, torch.Tensor):
            assert va.shape == vb.shape, key
            if va.numel() == 0:
                continue
            d = (va.double() - vb.double()).abs().max().item()
            d /= max(1.0, vb.double().abs().max().item())
        elif isinstance(va, float):
            d = abs(va - vb) / max(1.0, abs(vb))
        else:
            d = 0.0 if va == vb else float("inf")
        if d > worst:
            worst, where = d, key
    return worst, where


def identical(a, b) -> bool:
    return max_difference(a, b)[0] == 0.0
