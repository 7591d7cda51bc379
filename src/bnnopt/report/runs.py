"""``bnnopt report RUN_DIR...``: one table over finished (or interrupted) runs.

Runs that share a method, its options, the base optimizer and its learning rate
are one row (mean +- std over their seeds); any other setting that differs
between the runs given (epochs, model, data limits, optimizer settings, ...) is
added to the row's label, so runs of different settings are never averaged. Zig-zag statistics
(BLAQ Table 1: sign/level flips and maximum oscillation amplitude of tracked weights) appear when the runs recorded
them (``--zigzag N``). With a reference method (``--reference``, default ste),
a second table gives each other method's difference to it, per optimizer, with
a 95 % Welch interval over seeds (:mod:`bnnopt.report.stats`).

With ``--flip-plot FILE`` (:func:`flip_plots`) the per-layer flip rate per epoch of
each run that recorded one (``flip_rate`` in its metrics rows) is also drawn
(:func:`bnnopt.report.plots.plot_flip_rates`): to FILE for one such run, else to
``<FILE stem>-<run directory name><suffix>`` per run.

Damaged runs do not abort the table: a run whose ``config.json``, ``summary.json``
or ``metrics.jsonl`` cannot be read is skipped with a warning naming the file and
why (``warn``), and the others are reported. A run whose ``checkpoint.pt`` is
missing or empty (0 bytes) is reported but marked (``†`` after its label, and a
note under the table), since it cannot be evaluated, exported or resumed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

from bnnopt.report.tables import aggregate, columns_for, markdown_table
from bnnopt.runs.io import read_json, read_jsonl, write_text


# Config keys that never separate rows: the seed and where a run's files live.
NOT_SETTINGS = ("seed", "method", "method_options", "out", "progress", "data_root")


def run_label(config: dict[str, Any], vary: tuple[str, ...] = ()) -> str:
    """``method:opt=v[optimizer:lr=η]`` plus `` key=value`` for each key in ``vary``."""
    options = ":".join(f"{k}={v}" for k, v in sorted(config.get("method_options", {}).items()))
    label = config["method"] + (f":{options}" if options else "")
    optim = config.get("optim", {})
    lr = f":lr={optim['lr']:g}" if isinstance(optim.get("lr"), (int, float)) else ""
    label += f"[{optim.get('name', '?')}{lr}]"
    for key in vary:
        value = config.get(key)
        if key == "optim" and isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items())
                             if k not in ("name", "lr"))
        label += f" {key}={value}"
    return label


def varying_settings(configs: list[dict[str, Any]]) -> tuple[str, ...]:
    """The config keys (besides seed, method and paths) whose values differ across runs."""
    def value(config: dict[str, Any], key: str) -> str:
        v = config.get(key)
        if key == "optim" and isinstance(v, dict):  # name and lr are in every label already
            v = {k: x for k, x in v.items() if k not in ("name", "lr")}
        return json.dumps(v, sort_keys=True, default=str)

    keys = sorted({k for c in configs for k in c} - set(NOT_SETTINGS))
    return tuple(k for k in keys if len({value(c, k) for c in configs}) > 1)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """The summary of a run directory (recomputed from metrics.jsonl if unfinished)."""
    from bnnopt.train.config import RunConfig
    from bnnopt.train.trainer import summarize

    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{run_dir} is not a bnnopt run directory (no config.json)")
    config = read_json(config_file)
    if not isinstance(config, dict) or not isinstance(config.get("method"), str):
        raise ValueError(f"{config_file} is not a run config (no method); the file is damaged")
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        summary = read_json(summary_file)
        if not isinstance(summary, dict):
            raise ValueError(f"{summary_file} is not a run summary; the file is damaged")
        read_jsonl(run_dir / "metrics.jsonl")  # a damaged log is named, not silently kept
    else:
        summary = summarize(read_jsonl(run_dir / "metrics.jsonl"), RunConfig.from_dict(config))
        summary["unfinished"] = True
    summary["label"] = run_label(config)
    summary["config"] = config
    summary.setdefault("run_dir", str(run_dir))
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        summary["checkpoint_problem"] = "no checkpoint.pt"
    elif checkpoint.stat().st_size == 0:
        summary["checkpoint_problem"] = "checkpoint.pt is empty (0 bytes)"
    return summary


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_runs(run_dirs: list[str | Path], warn: Callable[[str], None] | None = None
              ) -> list[dict[str, Any]]:
    """:func:`load_run` of every directory; one that cannot be read is skipped with a
    ``warn`` naming the file (ValueError naming it when no directory can be read)."""
    warn = warn or _warn_stderr
    runs, problems = [], []
    for run_dir in run_dirs:
        try:
            runs.append(load_run(run_dir))
        except (OSError, ValueError, KeyError, TypeError) as err:
            if isinstance(err, OSError) and err.filename:
                reason = f"cannot read {err.filename} ({err.strerror or type(err).__name__})"
            else:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            problems.append((run_dir, reason))
    if not runs:  # nothing to report: one error naming the (first) damaged file
        raise ValueError(f"no run could be read: {problems[0][1]}" + (
            f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    for run_dir, reason in problems:
        warn(f"skipping {run_dir}: {reason}")
    return runs


def run_context(config: dict[str, Any], vary: tuple[str, ...] = ()) -> str:
    """What a method is compared *within*: the optimizer's name and the varying
    settings (not its learning rate, which tuning may choose per method)."""
    return run_label({**config, "method": "", "method_options": {},
                      "optim": {k: v for k, v in config.get("optim", {}).items() if k != "lr"}},
                     vary)


def report_runs(run_dirs: list[str | Path], out: str | Path | None = None,
                published: list[str] | None = None, reference: str | None = "ste",
                strict_reference: bool = False,
                warn: Callable[[str], None] | None = None) -> str:
    """Markdown table of the runs; with ``published`` (paper names, see
    :mod:`bnnopt.report.published`) the papers' numbers for each row's config follow it;
    with ``reference`` (a method name or spec) each other method's difference to it with a
    95 % interval over seeds (:mod:`bnnopt.report.stats`); ``strict_reference``: a
    reference that matches no run is a ValueError (else it is silently not compared).
    ``warn(message)``: told about each run skipped as unreadable (default: stderr)."""
    from bnnopt.report.stats import (check_reference, reference_pairs, significance_markdown,
                                     significance_rows)
    from bnnopt.report.tables import group_runs

    runs = load_runs(run_dirs, warn)
    vary = varying_settings([r["config"] for r in runs])
    for r in runs:
        r["label"] = run_label(r["config"], vary)
    marked = {r["label"] for r in runs if r.get("checkpoint_problem")}
    for r in runs:  # a row with a run that has no usable checkpoint is marked
        if r["label"] in marked:
            r["label"] += " †"
    columns = columns_for(runs)
    text = markdown_table(aggregate(runs, columns), columns)
    if marked:
        text += "\n† no usable checkpoint (cannot be evaluated, exported or resumed): " + "; ".join(
            f"{r['run_dir']} ({r['checkpoint_problem']})" for r in runs
            if r.get("checkpoint_problem")) + "\n"
    if published:
        text += _published_beside(runs, published)
    if reference:
        groups = group_runs(runs)
        meta = {label: (group[0]["config"]["method"], run_context(group[0]["config"], vary))
                for label, group in groups.items()}
        if strict_reference:
            check_reference(meta, reference)
        pairs = reference_pairs(meta, reference)
        if pairs:
            text += "\n" + significance_markdown(significance_rows(groups, pairs))
    zig = [(r["label"], _flat(r["zigzag"].get("last_k", r["zigzag"])))
           for r in runs if r.get("zigzag")]
    if zig:
        from bnnopt.diagnostics.zigzag import REPORT_KEYS

        keys = [k for k in REPORT_KEYS if k in zig[0][1]] or sorted(zig[0][1])
        text += ("\nzig-zag over the last epochs (tracked weights):\n\n| run | "
                 + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1) + "\n")
        for label, stats in zig:
            text += f"| {label} | " + " | ".join(_fmt(stats.get(k)) for k in keys) + " |\n"
    if out:
        write_text(out, text)
    return text


def flip_plots(run_dirs: list[str | Path], path: str | Path,
               warn: Callable[[str], None] | None = None) -> list[Path]:
    """Draw the per-layer flip rates of every run in ``run_dirs`` that recorded them.

    One such run: its plot is written to ``path``; several: one PNG per run, named
    ``<stem>-<run directory name><suffix>`` beside ``path`` (titled with the run's
    label). Runs without flip rates (float runs, older records) are skipped with a
    ``warn``; unreadable runs as in :func:`load_runs`. ValueError when no run has any.
    Returns the paths written.
    """
    from bnnopt.report.plots import plot_flip_rates

    warn = warn or _warn_stderr
    path = Path(path)
    found = []
    for run in load_runs(run_dirs, warn):
        metrics = read_jsonl(Path(run["run_dir"]) / "metrics.jsonl")
        if any(r.get("flip_rate") for r in metrics):
            found.append((run, metrics))
        else:
            warn(f"no flip-rate plot for {run['run_dir']}: its metrics rows have no flip_rate "
                 "(a float run, or recorded before flip rates were logged)")
    if not found:
        raise ValueError(f"--flip-plot {path}: none of the {len(run_dirs)} run(s) recorded flip "
                         "rates (a quantized run records them in metrics.jsonl)")
    written = []
    for run, metrics in found:
        out = path if len(found) == 1 else path.with_name(
            f"{path.stem}-{Path(run['run_dir']).name}{path.suffix or '.png'}")
        written.append(plot_flip_rates(metrics, out, title=run["label"]))
    return written


def _published_beside(runs: list[dict[str, Any]], paper_names: list[str]) -> str:
    """One line per (measured row, published number of the same config and metric)."""
    from bnnopt.report.published import METRIC_TO_SUMMARY, matching_rows

    lines = ["", f"published ({', '.join(paper_names)}) beside measured (mean over seeds):", "",
             "| run | paper | table | row | metric | published | measured |",
             "|---|---|---|---|---|---|---|"]
    seen: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        seen.setdefault(r["label"], []).append(r)
    found = False
    for label, group in seen.items():
        for row in matching_rows(group[0]["config"], paper_names):
            key = METRIC_TO_SUMMARY.get(row.metric)
            vals = [float(g[key]) for g in group if key and g.get(key) is not None]
            measured = f"{sum(vals) / len(vals):.2f}" if vals else "n/a"
            lines.append(f"| {label} | {row.paper} | {row.table} | {row.row} | {row.metric} | "
                         f"{row.text()} | {measured} |")
            found = True
    if not found:
        lines.append("| (no published row has these runs' model, dataset, method and optimizer) "
                     "| | | | | | |")
    return "\n".join(lines) + "\n"


def _flat(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if not isinstance(v, dict)}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
