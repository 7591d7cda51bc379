"""compare --jobs: runs in worker processes give the sequential comparison's results."""
import json

import pytest
import torch

from bnnopt.experiments.compare import build_arms, parse_tune, run_compare
from bnnopt.train.config import RunConfig
from bnnopt.experiments.pool import RunPool, default_threads, worker_gpu


def base() -> RunConfig:
    return RunConfig(model="mlp", dataset="digits", epochs=1, batch_size=64,
                     model_options={"hidden": 16}, optim={"name": "adam", "lr": 3e-3},
                     augment=False, device="cpu", train_limit=256, test_limit=64,
                     val_fraction=0.25)


def _summaries(out):
    report = json.loads((out / "report.json").read_text())
    keys = ("label", "seed", "final_test_acc", "final_train_loss", "final_val_acc", "chosen")
    runs = sorted((tuple(r.get(k) for k in keys) for r in report["runs"]), key=str)
    return runs, report["tuning"]


def test_two_workers_give_the_sequential_results(tmp_path):
    arms, tune = build_arms(["ste", "irnet"]), parse_tune(["lr=0.001,0.01"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: same arithmetic, same results
    try:
        run_compare(base(), arms, 1, tmp_path / "seq", tune=tune, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    logs = []
    run_compare(base(), arms, 1, tmp_path / "par", tune=tune, log=logs.append, jobs=2, threads=1)
    assert any("2 worker processes, 1 thread(s) each" in m for m in logs)
    seq, par = _summaries(tmp_path / "seq"), _summaries(tmp_path / "par")
    assert len(seq[0]) == 2 and seq == par
    assert (tmp_path / "par" / "tune" / "ste" / "lr=0.01" / "s0" / "summary.json").is_file()
    assert not (tmp_path / "par" / ".lock").exists()

    logs.clear()  # a second parallel call reuses every finished run
    run_compare(base(), arms, 1, tmp_path / "par", tune=tune, log=logs.append, jobs=2, threads=1)
    assert not any("seed" in m and "->" in m for m in logs)


def test_jobs_one_keeps_the_sequential_order(tmp_path):
    order = []

    def train(cfg, run_dir):
        order.append(run_dir.relative_to(tmp_path).as_posix())
        return {"final_test_acc": 1.0, "final_train_loss": 0.0, "final_val_acc": float(
            cfg.optim["lr"] == 0.01), "final_val_loss": 0.0, "epochs": 1}, []

    run_compare(base(), build_arms(["ste", "fp"]), 1, tmp_path, tune=parse_tune(["lr=0.001,0.01"]),
                log=lambda m: None, train=train, reference=None)
    assert order == ["tune/ste/lr=0.001/s0", "tune/ste/lr=0.01/s0", "ste/s1",
                     "tune/fp/lr=0.001/s0", "tune/fp/lr=0.01/s0", "fp/s1"]


def test_pool_arguments():
    assert default_threads(4, cpus=16) == 4 and default_threads(3, cpus=2) == 1
    assert [worker_gpu(k, ["0", "2", "5"]) for k in range(5)] == ["0", "2", "5", "0", "2"]
    with pytest.raises(ValueError, match="invalid --jobs 0"):
        RunPool(0, train=None)
    with pytest.raises(ValueError, match="--jobs 2"):
        run_compare(base(), build_arms(["ste"]), 1, "unused", jobs=2, train=lambda c, d: None)


def test_a_worker_error_reaches_the_caller(tmp_path):
    """A run that fails in a worker (here: its directory is locked by this live process)
    fails the comparison with the worker's one-line error."""
    import os
    import socket

    from bnnopt.runs.lock import LOCK_NAME

    run_dir = tmp_path / "ste" / "s0"
    run_dir.mkdir(parents=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(ValueError, match="in use by process"):
        run_compare(base(), build_arms(["ste"]), 1, tmp_path, log=lambda m: None, jobs=2,
                    threads=1)
    assert not (tmp_path / "report.md").exists()


def test_a_run_held_by_a_live_process_is_refused_before_its_state_is_read(tmp_path, monkeypatch):
    """The run directory's lock comes first: a comparison started beside a live one
    neither reads nor trains into the runs that one holds."""
    import socket
    import subprocess
    import sys

    from bnnopt.experiments import run_one

    run = tmp_path / "ste" / "s0"
    run.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "earlier"}
        (run / ".lock").write_text(json.dumps(lock))

        def read_before_lock(*args, **kwargs):
            raise AssertionError("the run's state was read before its lock was taken")

        monkeypatch.setattr(run_one, "reuse_state", read_before_lock)
        cfg = base().update({"method": "ste"})
        with pytest.raises(ValueError, match=f"in use by process {holder.pid}"):
            run_one.train_or_reuse(cfg, run, log=lambda msg: None)
        assert json.loads((run / ".lock").read_text()) == lock  # the holder's lock is untouched
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_pool_stops_its_workers_when_left_by_an_exception(tmp_path):
    """Leaving the pool by an exception (SIGTERM arrives in the parent as one) sends
    SIGTERM to every worker and waits: no worker process is left."""
    import os
    import time

    pool = RunPool(2, train=None, threads=1, log=lambda msg: None)
    futures = [pool._executor.submit(time.sleep, 60) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(pool.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = pool.worker_pids()
    assert len(pids) == 2
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with pool:
            raise KeyboardInterrupt
    assert time.monotonic() - start < 30  # not the 60 s the idle sleeps would take
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert all(f.done() for f in futures)
