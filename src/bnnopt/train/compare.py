"""``bnnopt compare``: several methods x optimizers x seeds on one protocol.

Each arm is a *method spec* ``name[:key=value[:key=value...]]`` (options go to
``method_options``), optionally crossed with base optimizers and with a sweep of
one config key (``--sweep method_options.beta=0.1,0.3,0.5``). Every (arm, seed)
trains into ``OUT/<label>/s<seed>``; a run whose summary.json exists is reused,
so an interrupted comparison continues where it stopped. At the end OUT gets
``report.md`` (mean +- std over seeds), ``report.json`` and ``curves.png``
(train loss and test accuracy per epoch, FSG Fig. 2 style).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bnnopt.train.config import RunConfig, _parse_literal
from bnnopt.train.io import write_json, write_text


@dataclass
class Arm:
    label: str
    method: str
    method_options: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"fsg:layout=per-weight:beta=0.5"`` -> ``("fsg", {"layout": "per-weight", "beta": 0.5})``."""
    name, *parts = spec.strip().split(":")
    if not name:
        raise ValueError(f"malformed method spec {spec!r}; expected name[:key=value...]")
    options = {}
    for part in parts:
        if "=" not in part:
            raise ValueError(f"malformed method option {part!r} in {spec!r}; expected key=value")
        key, value = part.split("=", 1)
        options[key.strip()] = _parse_literal(value.strip())
    return name, options


def build_arms(methods: list[str], optimizers: list[str] | None = None,
               sweep: str | None = None) -> list[Arm]:
    """Cross method specs with optimizer specs and with the values of one swept key.

    An optimizer spec is ``name[:key=value...]`` with OptimConfig keys, e.g.
    ``sgd:lr=0.05`` or ``adam``.
    """
    sweep_key, sweep_values = None, [None]
    if sweep:
        if "=" not in sweep:
            raise ValueError(f"malformed sweep {sweep!r}; expected key=v1,v2,...")
        sweep_key, raw = sweep.split("=", 1)
        sweep_values = [v for v in raw.split(",") if v.strip()]
        if not sweep_values:
            raise ValueError(f"sweep {sweep!r} lists no values")
    arms = []
    for spec in methods:
        name, options = parse_method_spec(spec)
        for opt in optimizers or [None]:
            for value in sweep_values:
                label = spec
                overrides = []
                if opt:
                    label += f"[{opt}]"
                    opt_name, opt_options = parse_method_spec(opt)
                    overrides.append(f"optim.name={opt_name}")
                    overrides += [f"optim.{k}={v!r}" for k, v in opt_options.items()]
                if sweep_key:
                    short = sweep_key.split(".")[-1]
                    label += f"[{short}={value}]"
                    overrides.append(f"{sweep_key}={value}")
                arms.append(Arm(label, name, dict(options), overrides))
    return arms


def arm_config(base: RunConfig, arm: Arm, seed: int) -> RunConfig:
    cfg = RunConfig.from_dict(base.to_dict())
    cfg.method = arm.method
    cfg.method_options = dict(arm.method_options)
    cfg.seed = seed
    for assignment in arm.overrides:
        cfg.set(assignment)
    return cfg.validate()


def run_compare(base: RunConfig, arms: list[Arm], seeds: int, out: str | Path, *,
                log: Callable[[str], None] = print, progress: bool = False,
                target_acc: float | None = None) -> dict[str, Any]:
    """Train every (arm, seed) into ``out`` and write the report; return report.json's dict."""
    from bnnopt.report import aggregate, markdown_table, plot_curves
    from bnnopt.train.trainer import Trainer, read_metrics

    out = Path(out)
    configs = [(arm, seed, arm_config(base, arm, base.seed + seed)) for arm in arms
               for seed in range(seeds)]  # validate every arm before training any
    runs, curves = [], {}
    for arm, seed, cfg in configs:
        run_dir = out / _safe(arm.label) / f"s{cfg.seed}"
        summary_file = run_dir / "summary.json"
        if summary_file.exists():
            log(f"[compare] reuse {run_dir}")
            summary = json.loads(summary_file.read_text())
        else:
            log(f"[compare] {arm.label} seed {cfg.seed} -> {run_dir}")
            if (run_dir / "checkpoint.pt").exists():
                trainer = Trainer.resume(run_dir, progress=progress, log=log)
            else:
                trainer = Trainer(cfg, run_dir, progress=progress, log=log)
            summary = trainer.run()
        metrics = read_metrics(run_dir)
        summary = dict(summary, label=arm.label, run_dir=str(run_dir))
        if target_acc is not None:
            summary["epochs_to_target"] = next(
                (r["epoch"] for r in metrics if r["test_acc"] >= target_acc), None)
        runs.append(summary)
        curves.setdefault(arm.label, []).append(metrics)
    rows = aggregate(runs)
    title = f"protocol {base.protocol or base.dataset}: {base.model}, {seeds} seed(s)"
    table = markdown_table(rows)
    plot = plot_curves(curves, out / "curves.png", title=title)
    text = (f"# bnnopt compare\n\n{title}, {base.epochs} epochs, batch {base.batch_size}, "
            f"optimizer {base.optim}\n\n{table}\n![curves]({plot.name})\n")
    if target_acc is not None:
        text += f"\nepochs to target: first epoch with test accuracy >= {target_acc}%.\n"
    write_text(out / "report.md", text)
    report = {"base_config": base.to_dict(), "runs": runs,
              "rows": [{k: v for k, v in r.items()} for r in rows]}
    write_json(out / "report.json", report)
    return report


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in label)
