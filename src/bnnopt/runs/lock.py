"""One writer per run directory: an atomically created lock file.

``RunLock(run_dir)`` creates ``run_dir/.lock`` with ``O_CREAT | O_EXCL`` (atomic
on POSIX and Windows local file systems) and writes ``{"pid", "host", "started"}``
into it. A second process asking for the same directory is refused with a
``ValueError`` naming the holder. A lock left behind by a process that died
(same host, PID no longer alive) is *stale*: it is removed and taken over. A
lock from another host cannot be checked and is never taken over (delete the
file by hand when that host's process is known to be gone).

The lock is released (file removed) when the ``with`` block ends, by
:meth:`RunLock.release`, or at interpreter exit; a directory the lock created
and that is still empty then is removed too. :func:`held_lock` finds the lock this
process already holds on a directory, so a caller that locked a run directory
before reading its state can let the code it calls write there. Under ``torchrun`` only the
process of global rank 0 writes the run directory, so only rank 0 locks it
(:func:`is_main_process`); the other ranks get a no-op lock.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed (torchrun) job."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    except Exception:  # noqa: BLE001 - torch.distributed missing or broken: single process
        pass
    return os.environ.get("RANK", "0") in ("", "0")


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (signal 0 probe)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def read_lock(path: str | os.PathLike) -> dict[str, Any] | None:
    """The holder recorded in a lock file, or None if it is unreadable/half-written."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_HELD: dict[str, "RunLock"] = {}  # resolved run directory -> the lock this process holds


def _key(run_dir: str | os.PathLike) -> str:
    return str(Path(run_dir).resolve())


def held_lock(run_dir: str | os.PathLike) -> "RunLock | None":
    """The :class:`RunLock` this process holds on ``run_dir``, or None."""
    return _HELD.get(_key(run_dir))


class RunLock:
    """Exclusive lock of ``run_dir`` (created if missing). Use as a context manager."""

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.enabled = is_main_process() if enabled is None else enabled
        self.held = False
        self.created_dir = False
        self.took_over: dict[str, Any] | None = None

    def acquire(self) -> "RunLock":
        if not self.enabled or self.held:
            return self
        if not self.run_dir.is_dir():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.created_dir = True
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.path)
                if not self._stale(holder):
                    raise ValueError(self._busy_message(holder)) from None
                self.took_over = holder
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self.held = True
            _HELD[_key(self.run_dir)] = self
            atexit.register(self.release)
            return self
        raise ValueError(f"could not lock run directory {self.run_dir}: {self.path} keeps "
                         "reappearing; another process is starting there")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if _HELD.get(_key(self.run_dir)) is self:
            del _HELD[_key(self.run_dir)]
        holder = read_lock(self.path)
        if holder is None or (holder.get("pid") == os.getpid()
                              and holder.get("host") == socket.gethostname()):
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        if self.created_dir:  # nothing was written: leave no empty directory behind
            try:
                self.run_dir.rmdir()
            except OSError:
                pass
        try:
            atexit.unregister(self.release)
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- helpers --------------------------------------------------------------------
    def _stale(self, holder: dict[str, Any] | None) -> bool:
        if holder is None:
            # Unreadable: either being written this instant, or left half-written by a
            # kill. Give a writer a moment, then treat an old unreadable file as stale.
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return True
            return age > 5.0
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return True
        if pid == os.getpid():
            return False  # this process holds it through another RunLock object
        return not pid_alive(pid)

    def _busy_message(self, holder: dict[str, Any] | None) -> str:
        if holder is None:
            who = "another process (lock file being written)"
        else:
            who = (f"process {holder.get('pid')} on host {holder.get('host')} "
                   f"(since {holder.get('started')})")
        return (f"run directory {self.run_dir} is in use by {who}; wait for it to finish, "
                f"use another --out, or delete {self.path} if that process is gone")
