"""One run of a comparison: train it, resume it, or reuse it when it is finished.

:func:`train_or_reuse` is what ``bnnopt compare`` does for every (arm, seed) and
grid point, in its own process (``--jobs 1``) or in a worker process
(:mod:`bnnopt.experiments.pool`). It locks the run directory *first*
(:func:`bnnopt.runs.rundir.open_run_dir`) and only then reads the state there, so a
second comparison started on the same output while a live process trains a run
is refused (``ValueError`` naming the holder) instead of training into it too.

A run is reused when finished, resumed when it has a checkpoint, and only when
its resolved config equals the requested one (:func:`reuse_state`): the stored
``config.json`` / checkpoint config and the method options resolved at the time
(``argv.json``) against what the installed code resolves now. Otherwise it is
trained again from scratch in the same place.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from bnnopt.runs.io import read_json
from bnnopt.runs.rundir import clear_run, open_run_dir
from bnnopt.train.config import RunConfig

__all__ = ["train_or_reuse", "reuse_state", "config_difference", "option_difference"]


def train_or_reuse(cfg: RunConfig, run_dir: Path, *, log: Callable[[str], None] = print,
                   progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train ``cfg`` into ``run_dir``, resume it, or reuse it when finished.

    Returns ``(summary, metrics)``. Under torchrun rank 0 locks the directory, decides
    and shares the reused results; a refused lock is raised on every rank.
    """
    from bnnopt.train.distributed import current
    from bnnopt.train.trainer import Trainer, read_metrics

    run_dir = Path(run_dir)
    dist = current()
    lock, state = None, None
    if dist.is_main:
        try:
            lock = open_run_dir(run_dir, log=log)
            state = reuse_state(run_dir, cfg)
        except ValueError as err:
            state = err
    state = dist.broadcast_object(state)
    try:
        if isinstance(state, ValueError):
            raise state
        if state == "finished":
            log(f"[compare] reuse {run_dir}")
            found = None
            if dist.is_main:
                found = read_json(run_dir / "summary.json"), read_metrics(run_dir)
            return dist.broadcast_object(found)
        if state.startswith("stale"):
            log(f"[compare] {run_dir} holds a run of another config ({state[7:]}); "
                "training it again")
            if dist.is_main:
                clear_run(run_dir)
            dist.barrier()
        log(f"[compare] {cfg.method} seed {cfg.seed} -> {run_dir}")
        if state == "partial":
            trainer = Trainer.resume(run_dir, progress=progress, log=log)
        else:
            trainer = Trainer(cfg, run_dir, progress=progress, log=log)
        summary = trainer.run()
        return summary, (read_metrics(run_dir) if dist.is_main else list(trainer.metrics))
    finally:
        if lock is not None:
            lock.release()


def _normal(config: dict[str, Any]) -> dict[str, Any]:
    from bnnopt.runs.io import jsonable

    return json.loads(json.dumps(config, sort_keys=True, default=jsonable))


def config_difference(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``["epochs 1 -> 3", "optim.lr 0.003 -> 0.0001", ...]`` between two config dicts."""
    stored, wanted = _normal(stored), _normal(wanted)
    diffs = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                      if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key} {a!r} -> {b!r}")
    return diffs


def reuse_state(run_dir: Path, cfg: RunConfig) -> str:
    """``"finished"`` (summary + equal config), ``"partial"`` (checkpoint of an equal
    config), ``"new"`` (nothing there) or ``"stale: <differences>"``.

    Read it only while holding the directory's lock (:func:`train_or_reuse` does)."""
    from bnnopt.train.checkpoint import load_checkpoint

    wanted = cfg.to_dict()
    if (run_dir / "summary.json").exists():
        try:
            stored = read_json(run_dir / "config.json")
            read_json(run_dir / "summary.json")
        except OSError:
            return "stale: config.json missing or unreadable"
        except ValueError as err:
            return f"stale: {err}"
        diffs = config_difference(stored, wanted) or option_difference(run_dir, cfg)
        return "finished" if not diffs else "stale: " + ", ".join(diffs[:4])
    if (run_dir / "checkpoint.pt").exists():
        try:
            stored = load_checkpoint(run_dir)["config"]
        except ValueError as err:
            return f"stale: {err}"
        diffs = config_difference(stored, wanted) or option_difference(run_dir, cfg)
        return "partial" if not diffs else "stale: " + ", ".join(diffs[:4])
    return "new"


def option_difference(run_dir: Path, cfg: RunConfig) -> list[str]:
    """``["method option fast_form 'concat' -> 'product'", ...]``: the run's stored
    resolved method options (``argv.json``) against what ``cfg`` resolves to now;
    [] when equal or when the run predates the stored options. An option the run
    predates (the method's ``added_options``) counts as the value it ran with."""
    from bnnopt.registry import METHODS

    try:
        stored = json.loads((run_dir / "argv.json").read_text(encoding="utf-8"))["method_options"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    cls = METHODS.get(cfg.method)
    now = _normal(cls(**cfg.method_options).resolved_options())
    stored = _normal(stored)
    added = _normal(cls.added_options)  # a key the run predates: it ran as that value
    stored = {**{k: v for k, v in added.items() if k in now}, **stored}
    return [f"method option {key} {stored.get(key)!r} -> {now.get(key)!r}"
            for key in sorted(set(stored) | set(now)) if stored.get(key) != now.get(key)]
