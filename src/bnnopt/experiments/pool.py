"""Run a comparison's independent trainings in parallel worker processes (``compare --jobs N``).

A comparison is many small, independent runs (arms x grid points x seeds); on a
machine with many cores or several GPUs, N of them at once finish far sooner
than one run using everything (a ResNet-20 at batch 128 does not fill a GPU or
16 cores). ``RunPool(jobs, ...)`` hands out runs to N processes (``spawn``, so
no state leaks from the parent); each run trains, resumes or is reused exactly
as in a sequential ``compare`` (:func:`bnnopt.experiments.run_one.train_or_reuse`)
and locks its own run directory, so the results equal a sequential comparison's
at the same thread count.

Worker k (k = 0 .. N-1, in start order) gets:

* ``threads`` torch CPU threads (default: ``os.cpu_count() // N``, at least 1);
* with G > 1 visible GPUs and a CUDA device requested (``auto``/``cuda``), the
  single GPU ``k mod G`` (``CUDA_VISIBLE_DEVICES`` set before CUDA starts), so
  ``cuda`` in the run's config means that GPU.

``jobs = 1`` runs everything in this process, lazily: a run trains when its
result is first asked for, which keeps the sequential order of a comparison
(each arm's grid, its choice, its seeds, then the next arm).

Stopping: no worker outlives the pool. When the pool is left by an exception
(SIGTERM or Ctrl-C in the parent arrive as one, :mod:`bnnopt.runs.process`, as
does a failed run), it sends SIGTERM to every worker and waits for them. A worker
treats SIGTERM / SIGINT as an interruption: the run it trains stops, keeps its last
checkpoint and releases its lock, and the worker exits at once (it never starts
another run); an idle worker just exits. Each worker also asks the kernel
(Linux ``PR_SET_PDEATHSIG``) for SIGTERM when the parent dies, even by SIGKILL, so
a killed comparison leaves no orphan training on. A closed standard output does
not stop a worker (:func:`bnnopt.runs.process.tolerate_closed_stdout`).
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from bnnopt.runs.process import exit_status, stop_on_signals, tolerate_closed_stdout

__all__ = ["RunPool", "default_threads", "worker_gpu"]


def default_threads(jobs: int, cpus: int | None = None) -> int:
    """CPU threads per worker when ``--threads`` is not given: the cores split evenly."""
    if cpus is None:
        cpus = os.cpu_count() or 1
    return max(1, cpus // jobs)


def worker_gpu(slot: int, visible: list[str]) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` entry of worker ``slot`` among ``visible`` GPUs (round robin)."""
    return visible[slot % len(visible)]


class _Lazy:
    """A future whose work runs on the first ``result()`` call (``jobs = 1``)."""

    def __init__(self, fn: Callable[[], Any]):
        self._fn, self._done, self._value = fn, False, None

    def result(self) -> Any:
        if not self._done:
            self._value, self._done = self._fn(), True
        return self._value


class RunPool:
    """``submit(cfg, run_dir)`` -> a future of ``(summary, metrics)``; see the module docstring.

    ``train(cfg, run_dir)`` is the in-process trainer used when ``jobs == 1``.
    ``device``: the comparison's device name (decides whether GPUs are shared out).
    """

    def __init__(self, jobs: int, train: Callable, *, threads: int | None = None,
                 device: str = "auto", log: Callable[[str], None] = print):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"invalid --jobs {jobs!r}; must be an integer >= 1")
        self.jobs, self.train, self.log = jobs, train, log
        self.parallel = jobs > 1
        self._executor = None
        if self.parallel:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            threads = default_threads(jobs) if threads is None else threads
            gpus = _visible_gpus() if device in ("auto", "cuda") else []
            spawn = multiprocessing.get_context("spawn")
            counter = spawn.Value("i", 0)
            self._pids = spawn.Array("i", jobs)  # each worker's PID, by start order
            self._executor = ProcessPoolExecutor(
                max_workers=jobs, mp_context=spawn, initializer=_init_worker,
                initargs=(counter, self._pids, threads, gpus))
            where = f", GPUs {','.join(gpus)} shared round robin" if len(gpus) > 1 else ""
            log(f"[compare] {jobs} worker processes, {threads} thread(s) each{where}")

    def submit(self, cfg, run_dir: Path):
        if not self.parallel:
            return _Lazy(lambda: self.train(cfg, run_dir))
        return self._executor.submit(_train_in_worker, cfg.to_dict(), str(run_dir))

    def close(self, cancel: bool = False) -> None:
        """Wait for the workers to exit; ``cancel``: drop queued runs and SIGTERM the
        running ones first (each keeps its last checkpoint and releases its lock)."""
        if self._executor is None:
            return
        if cancel:
            self.stop_workers()
        self._executor.shutdown(wait=True, cancel_futures=cancel)
        self._executor = None

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes started so far."""
        if not self.parallel:
            return []
        return [pid for pid in self._pids[:] if pid > 0]

    def stop_workers(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to every worker that is still running."""
        for pid in self.worker_pids():
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def __enter__(self) -> "RunPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries ([] without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [d.strip() for d in env.split(",") if d.strip()][:torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


_TRAINING = False  # in a worker: whether a run is being trained right now


def _init_worker(counter, pids, threads: int, gpus: list[str]) -> None:
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if slot < len(pids):
        pids[slot] = os.getpid()
    _exit_with_parent()
    stop_on_signals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP), on_signal=_idle_exit)
    tolerate_closed_stdout()
    if len(gpus) > 1:  # before CUDA starts in this process: "cuda" is then this one GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = worker_gpu(slot, gpus)
    import torch

    torch.set_num_threads(threads)


def _exit_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this worker when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(128 + signal.SIGTERM)


def _idle_exit(signum: int) -> None:
    """A worker stopped between runs exits at once (nothing to clean up)."""
    if not _TRAINING:
        _flush()
        os._exit(128 + signum)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def _train_in_worker(config: dict[str, Any], run_dir: str):
    global _TRAINING
    from bnnopt.experiments.run_one import train_or_reuse
    from bnnopt.train.config import RunConfig

    cfg = RunConfig.from_dict(config)
    label = Path(run_dir).parent.name

    def log(message: str) -> None:
        print(message if message.startswith("[compare]") else f"[{label} s{cfg.seed}] {message}",
              flush=True)

    try:
        _TRAINING = True
        return train_or_reuse(cfg, Path(run_dir), log=log)
    except KeyboardInterrupt as err:
        # the run released its lock and kept its checkpoint; never start another run
        _flush()
        os._exit(exit_status(err))
    finally:
        _TRAINING = False
