"""Atomic file writes: a reader never sees a half-written file.

Every file bnnopt writes (checkpoints, configs, summaries, reports, plots) goes
through a temporary file in the same directory followed by ``os.replace``, which
is atomic on POSIX and Windows. Append-only logs (JSONL) are rewritten whole.
The temporary files are named ``.<name>.<random>.tmp``; ones left behind by a
kill during a write are removed by :func:`remove_orphan_temps` when the run
directory is next opened. Written files get the usual ``0666 & ~umask`` mode
(``mkstemp`` alone would make them 0600).

:func:`check_output_dir` validates an output location *before* any expensive
work: it must be a directory or not exist yet, every existing parent must be a
directory, and the nearest existing one must be writable (probed by creating a
file, which also catches read-only file systems).
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a directory")
    _check_parents(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except (AttributeError, OSError):  # pragma: no cover - no fchmod (Windows)
        pass
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """One JSON object per line; NaN / Infinity are refused (they are not JSON)."""
    lines = []
    for r in rows:
        try:
            lines.append(json.dumps(r, sort_keys=True, default=_jsonable, allow_nan=False) + "\n")
        except ValueError:
            bad = sorted(k for k, v in r.items() if isinstance(v, float) and not math.isfinite(v))
            raise ValueError(f"refusing to write non-finite values {bad} to {path}") from None
    write_text(path, "".join(lines))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


def remove_orphan_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.<random>.tmp`` files left in ``directory`` by a killed write.

    Call it only while holding the directory's lock (:mod:`bnnopt.runs.lock`), so
    no live writer's temporary file is removed. Returns the removed paths.
    """
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if _TEMP_RE.match(entry.name) and entry.is_file():
            try:
                entry.unlink()
            except FileNotFoundError:
                continue
            removed.append(entry)
    return removed


def _check_parents(directory: Path) -> None:
    """ValueError if the nearest existing ancestor of ``directory`` is not a directory."""
    probe = directory
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"cannot create {directory}: {probe} is a file, not a directory")


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Raise ValueError unless ``path`` is (or can be created as) a writable directory.

    Nothing is left behind: the probe file is removed and no directory is created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is an existing file, not a directory")
    probe_dir = path
    while not probe_dir.exists():
        parent = probe_dir.parent
        if parent == probe_dir:
            break
        probe_dir = parent
    if not probe_dir.is_dir():
        raise ValueError(f"{what} {path} cannot be created: {probe_dir} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe_dir, prefix=".bnnopt-probe."):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"{what} {path} is not writable: cannot create a file in {probe_dir} "
                         f"({reason})") from None
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
