"""Run-directory lock: atomic, refuses a live holder (naming it), takes over a dead one."""
import json
import os
import socket
import subprocess
import sys

import pytest

from bnnopt.runs.lock import LOCK_NAME, RunLock, pid_alive, read_lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_holds_pid_and_host_and_is_released(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        holder = read_lock(tmp_path / "run" / LOCK_NAME)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert lock.held
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    assert not (tmp_path / "run").exists()  # it created the directory, which stayed empty


def test_second_holder_is_refused_with_the_holders_name(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / LOCK_NAME).write_text(json.dumps(
            {"pid": live.pid, "host": socket.gethostname(), "started": "then"}))
        with pytest.raises(ValueError, match=f"in use by process {live.pid} on host "
                                             f"{socket.gethostname()}"):
            RunLock(tmp_path / "run").acquire()
        assert read_lock(tmp_path / "run" / LOCK_NAME)["pid"] == live.pid  # untouched
    finally:
        live.kill()
        live.wait()


def test_same_process_twice_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ValueError, match="in use by process"):
            RunLock(tmp_path).acquire()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    pid = _dead_pid()
    assert not pid_alive(pid)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with RunLock(tmp_path) as lock:
        assert lock.took_over["pid"] == pid
        assert read_lock(tmp_path / LOCK_NAME)["pid"] == os.getpid()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(ValueError, match="on host elsewhere.example"):
        RunLock(tmp_path).acquire()


def test_non_zero_rank_does_not_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with RunLock(tmp_path) as lock:
        assert not lock.enabled and not (tmp_path / LOCK_NAME).exists()


def test_two_concurrent_trainings_on_one_out(tmp_path, capsys):
    """A real second process on a locked --out exits 2 naming the holder and writes
    nothing; once the holder is dead its stale lock is taken over."""
    from pathlib import Path

    from bnnopt.cli.main import main

    src = str(Path(__file__).resolve().parents[2] / "src")
    run = tmp_path / "run"
    run.mkdir()
    argv = ["train", "--model", "mlp", "--dataset", "digits", "--set", "model_options.hidden=16",
            "--epochs", "1", "--train-limit", "128", "--test-limit", "32", "--device", "cpu",
            "--out", str(run)]
    # a live process holding the lock, as a running `bnnopt train` does
    holder = subprocess.Popen([sys.executable, "-c",
                               "import json, os, socket, sys, time;"
                               "open(sys.argv[1], 'w').write(json.dumps({'pid': os.getpid(),"
                               " 'host': socket.gethostname(), 'started': 'now'}));"
                               "print('ok', flush=True); time.sleep(60)", str(run / LOCK_NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        proc = subprocess.run([sys.executable, "-m", "bnnopt", *argv, "--threads", "1"],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHONPATH=src))
        assert proc.returncode == 2, proc.stderr
        assert f"in use by process {holder.pid} on host {socket.gethostname()}" in proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()
    assert main(argv) == 0  # the holder died without releasing: stale lock taken over
    assert "took over the stale lock of process" in capsys.readouterr().out
    assert not (run / LOCK_NAME).exists() and (run / "summary.json").exists()
