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
