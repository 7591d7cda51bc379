"""Run-directory housekeeping used by the Trainer (kept out of its loop).

- :func:`open_run_dir`: create the directory, take its lock (:mod:`bnnopt.runs.lock`)
  and remove temporary files orphaned by a kill during a write. When this process
  already holds the lock (a caller locked the directory *before* reading its state,
  as ``bnnopt train --resume`` and ``compare`` do), the held lock is borrowed.
- :func:`clear_run`: remove a run's records so it can be trained again in place
  (only while holding its lock).
- :func:`record_argv`: ``argv.json`` keeps the first command line of the run and
  appends one entry per resume (``"resumes": [{"argv", "git", "time"}, ...]``).
- :func:`check_finite`: a non-finite training loss stops the run with a
  :class:`NonFiniteLossError` naming the epoch and step.
- :func:`resume_dir`: the run directory given to ``--resume`` (not a checkpoint file).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from bnnopt.runs.io import remove_orphan_temps, write_json
from bnnopt.runs.lock import RunLock, held_lock

ARGV_NAME = "argv.json"
RUN_FILES = ("summary.json", "checkpoint.pt", "metrics.jsonl", "config.json", "argv.json")


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite; the run stopped before saving it."""


class _BorrowedLock:
    """The lock an outer caller of this process holds: releasing it is the caller's job."""

    def __init__(self, lock: RunLock):
        self.enabled, self.took_over, self.held = lock.enabled, None, True

    def release(self) -> None:
        pass


def open_run_dir(run_dir: str | Path, log=None) -> RunLock:
    """Create ``run_dir``, lock it (ValueError if another live process holds it) and
    delete orphaned ``.*.tmp`` files. Returns the held lock (release it when done);
    when this process holds the lock already, a handle whose release does nothing."""
    run_dir = Path(run_dir)
    held = held_lock(run_dir)
    if held is not None:
        return _BorrowedLock(held)  # type: ignore[return-value]
    lock = RunLock(run_dir).acquire()  # creates run_dir, and removes it again if left empty
    run_dir.mkdir(parents=True, exist_ok=True)
    if lock.took_over is not None and log is not None:
        log(f"took over the stale lock of process {lock.took_over.get('pid')} "
            f"(no longer running) in {run_dir}")
    if lock.enabled:
        removed = remove_orphan_temps(run_dir)
        if removed and log is not None:
            log(f"removed {len(removed)} orphaned temporary file(s) from {run_dir}: "
                f"{', '.join(p.name for p in removed[:3])}")
    return lock


def record_argv(run_dir: str | Path, argv: list[str], git: str | None, extra: dict[str, Any],
                resumed: bool) -> None:
    """Write ``argv.json``: the original command, then one appended entry per resume."""
    path = Path(run_dir) / ARGV_NAME
    old = None
    if resumed and path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
    entry = {"argv": list(argv), "git": git, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if isinstance(old, dict) and "argv" in old:
        data = dict(old)
        data["resumes"] = list(old.get("resumes", [])) + [entry]
    else:
        data = {**entry, **extra}
        if resumed:  # the original argv.json is gone: record what is known
            data["resumes"] = [entry]
            data["argv"] = None
    write_json(path, data)


def check_finite(loss: float, epoch: int, step: int, steps: int, run_dir: Path,
                 last_saved_epoch: int | None, lr: float) -> None:
    """Raise NonFiniteLossError if ``loss`` is NaN or infinite (epoch, step 1-based in text)."""
    if math.isfinite(loss):
        return
    raise NonFiniteLossError(
        f"training loss is {loss} at epoch {epoch + 1}, step {step + 1}/{steps} "
        f"(learning rate {lr:.3g}); stopped, {_kept(run_dir, last_saved_epoch)}; "
        "try a lower --lr")


def _kept(run_dir: Path, last_saved_epoch: int | None) -> str:
    """What a stopped run leaves: the last finished epoch's checkpoint, or none."""
    if last_saved_epoch is not None and last_saved_epoch >= 0:
        return f"the checkpoint of epoch {last_saved_epoch + 1} in {run_dir} is kept"
    return "no epoch had finished, so no checkpoint was written"


def check_finite_row(row: dict[str, Any], run_dir: Path, last_saved_epoch: int | None) -> None:
    """A metrics row must be all finite numbers before it is saved (JSON has no NaN)."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise NonFiniteLossError(
            f"epoch {row.get('epoch')} produced non-finite {', '.join(bad)} "
            f"({', '.join(f'{k}={row[k]}' for k in bad)}); stopped, "
            f"{_kept(run_dir, last_saved_epoch)}; try a lower --lr")


def resume_dir(path: str | Path) -> Path:
    """Validate the argument of ``--resume``: an existing run directory."""
    path = Path(path)
    if path.is_file():
        hint = path.parent if path.name == "checkpoint.pt" else "the run directory"
        raise ValueError(f"--resume takes a run directory, not the file {path}; "
                         f"use --resume {hint}")
    if not path.is_dir():
        raise ValueError(f"--resume {path}: no such run directory")
    if not (path / "checkpoint.pt").is_file():
        raise ValueError(f"--resume {path}: no checkpoint.pt there (no epoch finished, or not "
                         "a run directory); start it again with bnnopt train --out")
    return path


def clear_run(run_dir: str | Path) -> None:
    """Remove a run's records (:data:`RUN_FILES`) so it can be trained again in place."""
    for name in RUN_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)
