"""Published numbers of the papers, stored as data, printed beside measured runs.

Each paper is one TOML file ``bnnopt/report/published/<paper>.toml`` (package
data, so an installed bnnopt has them)::

    title = "..."                       # the paper
    source = "fsg-aaai2025.txt"         # where the numbers were copied from

    [[row]]
    table = "1"                         # table (or figure) of the paper, as printed
    row = "ResNet-20 / SGD / FCGrad"    # the row's label
    model = "resnet20"                  # bnnopt names, to match run configs
    dataset = "cifar10"
    method = "fcgrad"
    optimizer = "sgd"                   # base optimizer (bnnopt name) or "" when the paper has none
    metric = "test_acc"                 # test_acc | train_acc | loss | fp_acc | seconds_per_epoch | ...
    value = 88.54                       # the number as printed
    std = 0.291                         # optional: the printed "± x"
    printed = "88.54 ± 0.291"           # optional: the cell exactly as printed
    match = { slow_net = "lstm" }       # optional: method_options a run must have to match
    note = "..."                        # optional

:func:`load_published` reads and checks one paper; :func:`matching_rows` finds
the rows of a run config (same model, dataset, method, optimizer and ``match``
options); :func:`published_table` renders one paper (or one of its tables).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

REQUIRED = ("table", "row", "model", "dataset", "method", "optimizer", "metric", "value")
OPTIONAL = ("std", "printed", "match", "note")
#: measured summary key that each published metric is compared with
METRIC_TO_SUMMARY = {"test_acc": "final_test_acc", "train_acc": "final_train_acc",
                     "loss": "final_train_loss", "seconds_per_epoch": "seconds_per_epoch"}


@dataclass(frozen=True)
class PublishedRow:
    """One published number (see the module docstring for the fields)."""

    paper: str
    table: str
    row: str
    model: str
    dataset: str
    method: str
    optimizer: str
    metric: str
    value: float
    std: float | None = None
    printed: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    def text(self) -> str:
        """The number as printed (or value ± std)."""
        if self.printed:
            return self.printed
        return f"{self.value:g}" + ("" if self.std is None else f" ± {self.std:g}")


def _directory():
    return resources.files("bnnopt.report").joinpath("published")


def papers() -> list[str]:
    """Names of the papers with a published-numbers file (sorted)."""
    return sorted(p.name[:-5] for p in _directory().iterdir() if p.name.endswith(".toml"))


def load_published(paper: str) -> list[PublishedRow]:
    """All rows of ``paper``'s file; ValueError naming the bad file/row/field."""
    names = papers()
    if paper not in names:
        raise ValueError(f"no published numbers for paper {paper!r}; valid: {', '.join(names)}")
    name = f"{paper}.toml"
    try:
        data = tomllib.loads(_directory().joinpath(name).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"malformed published file {name}: {err}") from None
    rows = []
    for i, raw in enumerate(data.get("row", [])):
        missing = [k for k in REQUIRED if k not in raw]
        unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
        if missing or unknown:
            bad = f"missing {missing[0]!r}" if missing else f"unknown field {unknown[0]!r}"
            raise ValueError(f"{name} row {i}: {bad}; fields: {', '.join(REQUIRED + OPTIONAL)}")
        value = raw["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} row {i}: value {value!r} is not a number")
        fields = {k: raw[k] for k in REQUIRED + OPTIONAL if k in raw}
        fields["table"] = str(fields["table"])
        fields["value"] = float(value)
        if "std" in fields:
            fields["std"] = float(fields["std"])
        if not isinstance(fields.get("match", {}), dict):
            raise ValueError(f"{name} row {i}: match must be a table of method options")
        rows.append(PublishedRow(paper=paper, **fields))
    return rows


def matching_rows(config: dict[str, Any], paper_names: list[str] | None = None,
                  metric: str | None = None) -> list[PublishedRow]:
    """Published rows for a run ``config`` (a RunConfig dict) across ``paper_names`` (all by default).

    A row matches when model, dataset and method are equal, the optimizer equals
    ``config["optim"]["name"]`` (a row with optimizer "" matches any), and every
    ``match`` key equals the run's method option of that name.
    """
    out = []
    options = config.get("method_options", {}) or {}
    optim = (config.get("optim") or {}).get("name")
    for paper in (papers() if paper_names is None else paper_names):
        for row in load_published(paper):
            if (row.model, row.dataset, row.method) != (config.get("model"), config.get("dataset"),
                                                       config.get("method")):
                continue
            if row.optimizer and row.optimizer != optim:
                continue
            if any(options.get(k) != v for k, v in row.match.items()):
                continue
            if metric is not None and row.metric != metric:
                continue
            out.append(row)
    return out


def published_table(paper: str, table: str | None = None) -> str:
    """Markdown table of ``paper``'s rows (only those of ``table`` when given)."""
    rows = load_published(paper)
    if table is not None:
        tables = sorted({r.table for r in rows})
        rows = [r for r in rows if r.table == str(table)]
        if not rows:
            raise ValueError(f"paper {paper!r} has no table {table!r}; valid: {', '.join(tables)}")
    lines = ["| table | row | model | dataset | method | optimizer | metric | published |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        method = r.method + "".join(f":{k}={v}" for k, v in sorted(r.match.items()))
        lines.append(f"| {r.table} | {r.row} | {r.model} | {r.dataset} | {method} | "
                     f"{r.optimizer or '-'} | {r.metric} | {r.text()} |")
    return "\n".join(lines) + "\n"


__all__ = ["PublishedRow", "load_published", "matching_rows", "papers", "published_table",
           "METRIC_TO_SUMMARY"]
