"""Tables over run summaries: mean +- std over seeds, grouped by label.

A *label* names one arm of a comparison (e.g. ``fsg[adam]``); every run of that
arm with a different seed contributes one sample. std is the sample standard
deviation (n - 1); with a single seed it is reported as 0.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Iterable

COLUMNS = (
    ("final_test_acc", "final test acc (%)", 2),
    ("best_test_acc", "best test acc (%)", 2),
    ("final_train_loss", "final train loss", 4),
    ("seconds_per_epoch", "s/epoch", 1),
)


VAL_COLUMNS = (
    ("final_val_acc", "final val acc (%)", 2),
    ("selected_test_acc", "test acc at best val epoch (%)", 2),
)


#: process CPU seconds per epoch, all threads (runs recorded before it existed lack it)
CPU_COLUMN = ("cpu_seconds_per_epoch", "CPU s/epoch", 1)

#: language-model runs: bits per character = cross-entropy / ln 2 (lower is better)
BPC_COLUMNS = (
    ("best_val_bpc", "best val bits/char", 3),
    ("final_test_bpc", "final test bits/char", 3),
)


def columns_for(runs: Iterable[dict[str, Any]]) -> tuple:
    """COLUMNS, preceded by the validation columns when any run has a validation split
    and by bits per character when any run is a language model, followed by CPU s/epoch
    when any run recorded it."""
    runs = list(runs)
    columns = (*VAL_COLUMNS, *COLUMNS) if any("final_val_acc" in r for r in runs) else COLUMNS
    if any("final_test_bpc" in r for r in runs):
        columns = (*BPC_COLUMNS, *columns)
    return (*columns, CPU_COLUMN) if any("cpu_seconds_per_epoch" in r for r in runs) else columns


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def group_runs(runs: Iterable[dict[str, Any]]) -> "OrderedDict[str, list[dict[str, Any]]]":
    """Group run summaries by their ``label`` (first appearance order)."""
    groups: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    for run in runs:
        groups.setdefault(run.get("label") or run.get("method", "?"), []).append(run)
    return groups


def aggregate(runs: Iterable[dict[str, Any]], columns=COLUMNS) -> list[dict[str, Any]]:
    """One row per label: ``{label, seeds, <key>: (mean, std), ...}``."""
    rows = []
    for label, group in group_runs(runs).items():
        row: dict[str, Any] = {"label": label, "seeds": len(group)}
        for key, _, _ in columns:
            vals = [float(r[key]) for r in group if r.get(key) is not None]
            row[key] = mean_std(vals)
        # zig-zag records (bnnopt.diagnostics.zigzag): statistics over the last K epochs
        extra = [r["zigzag"].get("last_k", r["zigzag"]) for r in group if r.get("zigzag")]
        if extra:
            row["flips"] = mean_std([float(z["flips"]) for z in extra])
            row["amplitude"] = mean_std([float(z["max_amplitude"]) for z in extra])
        reach = [r.get("epochs_to_target") for r in group if "epochs_to_target" in r]
        if reach:
            row["epochs_to_target"] = reach
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], columns=COLUMNS) -> str:
    """Render aggregated rows as a GitHub-flavoured markdown table."""
    cols = list(columns)
    if any("flips" in r for r in rows):
        cols += [("flips", "sign flips", 1), ("amplitude", "max amplitude", 4)]
    header = ["method", "seeds"] + [title for _, title, _ in cols]
    with_reach = any("epochs_to_target" in r for r in rows)
    if with_reach:
        header.append("epochs to target")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"], str(row["seeds"])]
        for key, _, digits in cols:
            mean, std = row.get(key, (math.nan, math.nan))
            cells.append("n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}")
        if with_reach:
            reach = row.get("epochs_to_target")
            cells.append("n/a" if reach is None else
                         ", ".join("never" if r is None else str(r) for r in reach))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
