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

A write that fails part-way (no space left, a file-size limit, permission lost
mid-run) raises :class:`WriteError`: one line naming the destination and the
cause (``cannot write runs/x/checkpoint.pt: File too large``); the destination
keeps its previous content and the temporary file is removed. Checkpoints are
serialised in memory first and written with plain ``write`` calls, so the cause
is the operating system's (``torch.save`` straight to a file reports only an
``iostream error``), and the file is flushed to disk (``fsync``) before the
rename, so a crash right after a save never leaves an empty checkpoint.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class WriteError(OSError):
    """Writing ``filename`` failed (disk full, file-size limit, permission lost ...).

    ``errno`` / ``strerror`` are the operating system's; ``str()`` is one line.
    """

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror or 'write failed'}"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched; an
    ``OSError`` while writing or renaming becomes a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a directory")
    _check_parents(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise WriteError(err.errno, err.strerror or str(err), str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except (AttributeError, OSError):  # pragma: no cover - no fchmod (Windows)
        pass
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(err.errno, err.strerror or str(err), str(path)) from None
    finally:
        try:
            tmp_path.unlink()
        except FileNotFoundError:
            pass


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
    """The rows of a JSONL file ([] if it does not exist); ValueError naming the file
    and line for a line that is not JSON."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            raise ValueError(f"{path} line {number} is not JSON ({err.msg}); the file is "
                             "damaged") from None
    return rows


def read_json(path: str | os.PathLike) -> Any:
    """``json.loads`` of a file; ValueError naming the file when it is not JSON."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except ValueError as err:
        what = "empty" if not text.strip() else f"not JSON ({err.msg}, line {err.lineno})"
        raise ValueError(f"{path} is {what}; the file is damaged") from None


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically and durably (module docstring); WriteError on failure."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())


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


def jsonable(obj: Any) -> Any:
    """``default=`` of ``json.dumps`` for bnnopt records: paths, tensors, sets, numpy scalars."""
    return _jsonable(obj)


def _jsonable(obj: Any) -> Any:
    import sys

    torch = sys.modules.get("torch")  # without torch imported, nothing here is a tensor
    if isinstance(obj, Path):
        return str(obj)
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
