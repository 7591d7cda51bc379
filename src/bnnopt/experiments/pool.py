"""Run a comparison's independent trainings in parallel worker processes (``compare --jobs N``).

A comparison is many small, independent runs (arms x grid points x seeds); on a
machine with many cores or several GPUs, N of them at once finish far sooner
than one run using everything (a ResNet-20 at batch 128 does not fill a GPU or
16 cores). ``RunPool(jobs, ...)`` hands out runs to N processes (``spawn``, so
no state leaks from the parent); each run trains, resumes or is reused exactly
as in a sequential ``compare`` (:func:`bnnopt.experiments.compare._train_or_reuse`)
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
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

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
            counter = multiprocessing.get_context("spawn").Value("i", 0)
            self._executor = ProcessPoolExecutor(
                max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(counter, threads, gpus))
            where = f", GPUs {','.join(gpus)} shared round robin" if len(gpus) > 1 else ""
            log(f"[compare] {jobs} worker processes, {threads} thread(s) each{where}")

    def submit(self, cfg, run_dir: Path):
        if not self.parallel:
            return _Lazy(lambda: self.train(cfg, run_dir))
        return self._executor.submit(_train_in_worker, cfg.to_dict(), str(run_dir))

    def close(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None

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


def _init_worker(counter, threads: int, gpus: list[str]) -> None:
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if len(gpus) > 1:  # before CUDA starts in this process: "cuda" is then this one GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = worker_gpu(slot, gpus)
    import torch

    torch.set_num_threads(threads)


def _train_in_worker(config: dict[str, Any], run_dir: str):
    from bnnopt.experiments.compare import _train_or_reuse
    from bnnopt.train.config import RunConfig

    cfg = RunConfig.from_dict(config)
    label = Path(run_dir).parent.name

    def log(message: str) -> None:
        print(message if message.startswith("[compare]") else f"[{label} s{cfg.seed}] {message}",
              flush=True)

    return _train_or_reuse(cfg, Path(run_dir), log=log)
