"""``bnnopt report RUN_DIR...``: one table over finished (or interrupted) runs.

Runs that share a method, its options and the base optimizer are one row (mean
+- std over their seeds). Zig-zag statistics (BLAQ Table 1: sign/level flips and
maximum oscillation amplitude of tracked weights) appear when the runs recorded
them (``--zigzag N``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bnnopt.report.tables import aggregate, markdown_table
from bnnopt.train.io import read_jsonl, write_text


def run_label(config: dict[str, Any]) -> str:
    options = ":".join(f"{k}={v}" for k, v in sorted(config.get("method_options", {}).items()))
    label = config["method"] + (f":{options}" if options else "")
    return f"{label}[{config.get('optim', {}).get('name', '?')}]"


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """The summary of a run directory (recomputed from metrics.jsonl if unfinished)."""
    from bnnopt.train.config import RunConfig
    from bnnopt.train.trainer import summarize

    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{run_dir} is not a bnnopt run directory (no config.json)")
    config = json.loads(config_file.read_text())
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
    else:
        summary = summarize(read_jsonl(run_dir / "metrics.jsonl"), RunConfig.from_dict(config))
        summary["unfinished"] = True
    summary["label"] = run_label(config)
    return summary


def report_runs(run_dirs: list[str | Path], out: str | Path | None = None) -> str:
    runs = [load_run(d) for d in run_dirs]
    text = markdown_table(aggregate(runs))
    zig = [(r["label"], _flat(r["zigzag"].get("last_k", r["zigzag"])))
           for r in runs if r.get("zigzag")]
    if zig:
        keys = sorted(zig[0][1])
        text += ("\nzig-zag over the last epochs (tracked weights):\n\n| run | "
                 + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1) + "\n")
        for label, stats in zig:
            text += f"| {label} | " + " | ".join(_fmt(stats.get(k)) for k in keys) + " |\n"
    if out:
        write_text(out, text)
    return text


def _flat(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if not isinstance(v, dict)}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
