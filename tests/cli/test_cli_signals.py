"""The CLI as a scheduler and a shell treat it, in real processes: SIGTERM to ``train``
and to ``compare --jobs 2`` (no process survives, no lock remains, the resumed result
equals an uninterrupted run), a file-size limit during a checkpoint write, and a
reader that closes the pipe."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bnnopt.cli.main import main
from bnnopt.train.checkpoint import load_checkpoint

SRC = Path(__file__).resolve().parents[2] / "src"
SLOW = Path(__file__).with_name("slow_bnnopt.py")
TINY = ["--model", "mlp", "--dataset", "digits", "--set", "model_options.hidden=16",
        "--train-limit", "128", "--test-limit", "64", "--device", "cpu",
        "--set", "augment=false", "--threads", "1", "--batch-size", "64"]

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32",
                                reason="POSIX signals")


def _env(marks: Path | None = None, slow: float = 0.0, slow_from: int = 0) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", BNNOPT_TEST_SLOW=str(slow), BNNOPT_TEST_SLOW_FROM=str(slow_from))
    env.pop("BNNOPT_TEST_MARKS", None)
    if marks is not None:
        marks.mkdir(exist_ok=True)
        env["BNNOPT_TEST_MARKS"] = str(marks)
    return env


def _start(argv: list[str], marks: Path, slow: float, cwd: Path,
           slow_from: int = 0) -> subprocess.Popen:
    """``bnnopt argv`` that pauses ``slow`` seconds at the start of every epoch from
    ``slow_from`` on (the epoch the test signals in)."""
    return subprocess.Popen([sys.executable, str(SLOW), *argv], env=_env(marks, slow, slow_from), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended early ({proc.returncode}): {out[-500:]} {err[-1500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run to reach the epoch")
        time.sleep(0.05)


def _marks(marks: Path, epoch: int) -> list[str]:
    return [p.name for p in marks.iterdir() if p.name.endswith(f"-{epoch}")]


def _session_survivors(sid: int) -> list[str]:
    """Live (not zombie) processes of session ``sid``, as 'pid cmdline'."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            state, session = fields[0], int(fields[3])
            if session == sid and state != "Z":
                found.append(f"{entry.name} {(entry / 'cmdline').read_bytes()[:120]!r}")
        except (OSError, ValueError, IndexError):
            continue
    return found


def _no_survivor(sid: int, grace: float = 10.0) -> list[str]:
    deadline = time.monotonic() + grace
    while (left := _session_survivors(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _same_model(a: Path, b: Path) -> None:
    ma, mb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert ma.keys() == mb.keys()
    for key in ma:
        assert torch.equal(ma[key], mb[key]), key


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_to_train_keeps_checkpoint_prints_resume_and_resumes_exactly(tmp_path):
    argv = ["train", *TINY, "--method", "ste", "--epochs", "3"]
    assert main([*argv, "--out", str(tmp_path / "full")]) == 0
    marks, run = tmp_path / "marks", tmp_path / "killed"
    proc = _start([*argv, "--out", str(run)], marks, slow=30.0, cwd=tmp_path, slow_from=1)
    _wait_for(lambda: _marks(marks, 1), proc)  # epoch 1 finished and saved; epoch 2 sleeping
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert f"stopped by SIGTERM; continue with: bnnopt train --resume {run}" in err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert not (run / ".lock").exists() and not list(run.glob(".*.tmp"))
    assert load_checkpoint(run)["epoch"] == 0 and not (run / "summary.json").exists()
    assert not _no_survivor(proc.pid)
    assert main(["train", "--resume", str(run)]) == 0
    _same_model(run, tmp_path / "full")
    assert (json.loads((run / "summary.json").read_text())["final_test_acc"]
            == json.loads((tmp_path / "full" / "summary.json").read_text())["final_test_acc"])


def test_sigterm_before_the_first_checkpoint_leaves_nothing(tmp_path):
    marks, run = tmp_path / "marks", tmp_path / "run"
    proc = _start(["train", *TINY, "--method", "ste", "--epochs", "2", "--out", str(run)],
                  marks, slow=30.0, cwd=tmp_path)
    _wait_for(lambda: _marks(marks, 0), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "no epoch had finished, so there is nothing to resume" in err and err.count("\n") == 1
    assert not run.exists(), list(run.iterdir())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_to_compare_jobs_2_stops_every_worker_and_resumes_exactly(tmp_path):
    argv = ["compare", *TINY, "--methods", "ste,fp", "--epochs", "3", "--reference", "none"]
    marks, out = tmp_path / "marks", tmp_path / "cmp"
    proc = _start([*argv, "--jobs", "2", "--out", str(out)], marks, slow=30.0, cwd=tmp_path,
                  slow_from=1)
    # both workers have saved epoch 1 of their run and sleep at the start of epoch 2
    _wait_for(lambda: len(_marks(marks, 1)) == 2, proc, timeout=240)
    workers = {int(name.split("-")[0]) for name in _marks(marks, 1)}
    assert len(workers) == 2 and proc.pid not in workers
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM; run the same command again to continue" in err
    assert "Traceback" not in err, err
    assert not _no_survivor(proc.pid), "a process of the comparison outlived it"
    assert not list(out.rglob(".lock")) and not list(out.rglob(".*.tmp"))
    for run in (out / "ste" / "s0", out / "fp" / "s0"):
        assert load_checkpoint(run)["epoch"] == 0 and not (run / "summary.json").exists()

    rerun = subprocess.run([sys.executable, "-m", "bnnopt", *argv, "--jobs", "2",
                            "--out", str(out)], env=_env(), cwd=tmp_path, capture_output=True,
                           text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert main([*argv, "--out", str(tmp_path / "ref")]) == 0  # uninterrupted, sequential
    resumed = json.loads((out / "report.json").read_text())["runs"]
    reference = json.loads((tmp_path / "ref" / "report.json").read_text())["runs"]
    for a, b in zip(resumed, reference):
        assert a["label"] == b["label"] and a["final_test_acc"] == b["final_test_acc"]
    for label in ("ste", "fp"):
        _same_model(out / label / "s0", tmp_path / "ref" / label / "s0")


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="no RLIMIT_FSIZE")
def test_file_size_limit_during_a_checkpoint_write_is_one_line(tmp_path):
    """The same path as a full disk: one line naming the file and the cause, exit 1, the
    previous checkpoint intact (byte for byte), no temporary file, no lock."""
    run = tmp_path / "run"
    assert main(["train", *TINY, "--method", "ste", "--epochs", "1", "--out", str(run)]) == 0
    ckpt = run / "checkpoint.pt"
    before = ckpt.read_bytes()
    # the next checkpoint holds one more metrics row: it cannot fit in the old one's size
    proc = subprocess.run([sys.executable, "-m", "bnnopt", "train", "--resume", str(run),
                           "--epochs", "2"], env=_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, preexec_fn=_limit_file_size(len(before)))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"bnnopt: error: cannot write {ckpt}: File too large" in proc.stderr
    assert f"continue with: bnnopt train --resume {run}" in proc.stderr
    assert ckpt.read_bytes() == before
    assert not list(run.glob(".*.tmp")) and not (run / ".lock").exists()


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="no RLIMIT_FSIZE")
def test_file_size_limit_on_the_first_checkpoint_leaves_nothing(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bnnopt", "train", *TINY, "--method", "ste",
                           "--epochs", "1", "--out", str(run)], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_file_size(4096))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "File too large" in proc.stderr
    assert "nothing to resume" in proc.stderr
    assert not run.exists()


def test_closed_stdout_ends_list_quietly_and_train_trains_on(tmp_path):
    """``bnnopt list | head -1`` and ``bnnopt train ... | head -2``: no BrokenPipeError;
    train finishes its run (the records are in the run directory)."""
    env = _env()
    lister = subprocess.run(f"{sys.executable} -m bnnopt list | head -1", shell=True, env=env,
                            capture_output=True, text=True, timeout=120)
    assert lister.stdout.count("\n") == 1 and lister.stderr == "", lister.stderr
    run = tmp_path / "run"
    argv = " ".join([sys.executable, "-m", "bnnopt", "train", *TINY, "--method", "ste",
                     "--epochs", "4", "--out", str(run)])
    piped = subprocess.run(f"set -o pipefail; {argv} | head -2", shell=True, env=env,
                           executable="/bin/bash", capture_output=True, text=True, timeout=180)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and piped.stdout.count("\n") == 2
    assert json.loads((run / "summary.json").read_text())["epochs"] == 4


def test_overwrite_replaces_a_run_only_when_asked(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", *TINY, "--method", "ste", "--epochs", "1", "--out", str(run)]
    assert main(argv) == 0
    first = (run / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    assert "already holds a run; use --resume" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == first
    assert main([*argv, "--overwrite", "--seed", "1"]) == 0
    assert load_checkpoint(run)["config"]["seed"] == 1


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_to_sequential_compare_releases_every_lock(tmp_path):
    """compare without --jobs: the run in training stops with its checkpoint, the
    comparison's and the run's locks are released, exit 143, nothing outlives it."""
    marks, out = tmp_path / "marks", tmp_path / "cmp"
    proc = _start(["compare", *TINY, "--methods", "ste", "--epochs", "2", "--reference", "none",
                   "--out", str(out)], marks, slow=30.0, cwd=tmp_path, slow_from=1)
    _wait_for(lambda: _marks(marks, 1), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM; run the same command again" in err and "Traceback" not in err
    assert not list(out.rglob(".lock")) and not _no_survivor(proc.pid)
    assert load_checkpoint(out / "ste" / "s0")["epoch"] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_compare_workers_stop_when_the_parent_is_killed(tmp_path):
    """SIGKILL to ``compare --jobs 2`` (no chance to forward anything): the kernel
    SIGTERMs the workers, which stop their runs, release their locks and exit."""
    marks, out = tmp_path / "marks", tmp_path / "cmp"
    proc = _start(["compare", *TINY, "--methods", "ste,fp", "--epochs", "3", "--jobs", "2",
                   "--reference", "none", "--out", str(out)], marks, slow=30.0, cwd=tmp_path,
                  slow_from=1)
    _wait_for(lambda: len(_marks(marks, 1)) == 2, proc, timeout=240)
    proc.kill()
    proc.communicate(timeout=60)
    assert not _no_survivor(proc.pid, grace=30.0), "a worker outlived the killed comparison"
    run_locks = [p for p in out.rglob(".lock") if p.parent != out]
    assert not run_locks  # the comparison's own lock dies with it (stale: taken over later)
    for run in (out / "ste" / "s0", out / "fp" / "s0"):
        assert load_checkpoint(run)["epoch"] == 0
