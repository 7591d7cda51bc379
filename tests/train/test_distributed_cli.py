"""``bnnopt`` under torchrun, end to end: one rank killed mid-epoch -> every process
exits non-zero, torchrun names the dead rank, and ``--resume`` under torchrun ends
with the weights of an uninterrupted 2-rank run, bit for bit; ``compare`` trains its
arms with both processes and rank 0 alone writes the report."""
import json
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

spec = importlib.util.spec_from_file_location("bnnopt_test_dist", Path(__file__).with_name("_dist.py"))
_dist = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_dist)

ARGS = ["-m", "bnnopt", "train", "--model", "mlp", "--dataset", "digits", "--method", "fcgrad",
        "--set", "model_options.hidden=64", "--epochs", "3", "--batch-size", "16",
        "--train-limit", "480",
        "--device", "cpu", "--set", "augment=false", "--lr", "0.01", "--test-limit", "200",
        "--dist-timeout", "30"]


def _children(pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes that torchrun ``pid`` started."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            ppid = int(re.search(r"PPid:\s+(\d+)", status).group(1))
            if ppid != pid:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, AttributeError):
            continue
        for item in env:
            if item.startswith(b"RANK="):
                ranks[int(item[5:])] = int(entry.name)
    return ranks


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_one_rank_then_resume_is_exact(tmp_path):
    full = _dist.torchrun([*ARGS, "--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           *ARGS, "--out", str(killed_dir)]
    proc = subprocess.Popen(cmd, env=_dist.torchrun_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (killed_dir / "checkpoint.pt").exists():  # epoch 1 finished: now in epoch 2
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint appeared"
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert set(workers) == {0, 1}, workers
        os.kill(workers[1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert not _alive(workers[0])
    assert re.search(r"rank\s*:\s*1\b", out), out[-2000:]  # torchrun's failure summary
    assert not (killed_dir / "summary.json").exists()

    resumed = _dist.torchrun(["-m", "bnnopt", "train", "--resume", str(killed_dir)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(killed_dir / "checkpoint.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["loss"] for r in a["metrics"]] == [r["loss"] for r in b["metrics"]]


def test_compare_under_torchrun(tmp_path):
    out = tmp_path / "cmp"
    proc = _dist.torchrun(["-m", "bnnopt", "compare", "--model", "mlp", "--dataset", "digits",
                           "--set", "model_options.hidden=32", "--epochs", "1",
                           "--batch-size", "32", "--train-limit", "256", "--test-limit", "128",
                           "--device", "cpu", "--set", "augment=false", "--methods", "fp,ste",
                           "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("# bnnopt compare") == 1  # printed by rank 0 only
    report = json.loads((out / "report.json").read_text())
    assert sorted(r["method"] for r in report["runs"]) == ["fp", "ste"]
    argv = json.loads((out / "ste" / "s0" / "argv.json").read_text())
    assert argv["world_size"] == 2


def test_sync_bn_train_under_torchrun_exits_cleanly(tmp_path):
    """``train --sync-bn`` with BatchNorm under torchrun: both ranks leave the process
    group in order (barrier, collect, destroy), so the job exits 0 with no C++ abort at
    interpreter exit; bench/repeat_syncbn.py repeats the full protocol run."""
    out = tmp_path / "run"
    proc = _dist.torchrun(["-m", "bnnopt", "train", "--protocol", "digits", "--method", "ste",
                           "--set", "model_options.hidden=32", "--epochs", "2",
                           "--batch-size", "64", "--train-limit", "512", "--test-limit", "128",
                           "--sync-bn", "--device", "cpu", "--out", str(out)])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-2000:]
    assert "terminate called" not in text and "Traceback" not in text, text[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert json.loads((out / "argv.json").read_text())["world_size"] == 2
    assert not (out / ".lock").exists()
