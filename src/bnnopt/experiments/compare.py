"""``bnnopt compare``: several methods x optimizers x seeds on one protocol.

Each arm is a *method spec* ``name[:key=value[:key=value...]]`` (options go to
``method_options``), optionally crossed with base optimizers and with a sweep of
one config key (``--sweep method_options.beta=0.1,0.3,0.5``). Every (arm, seed)
trains into ``OUT/<label>/s<seed>``; a finished run is reused, and an unfinished
one resumed, only when its resolved config equals the requested one (otherwise
it is trained again from scratch), so an interrupted comparison continues where
it stopped. "Resolved" includes every method option after the method's defaults,
presets and variants, as the installed code resolves them (stored in the run's
``argv.json``): a run made before a default changed is trained again, not reused.
Runs written before these options were stored are compared by their config alone.
``OUT`` is locked (:mod:`bnnopt.runs.lock`) while compare runs. At the end OUT gets
``report.md`` (mean +- std over seeds), ``report.json`` and ``curves.png``
(train loss and test accuracy per epoch, FSG Fig. 2 style).

Tuning (``--tune lr=0.01,0.05,0.1``, any RunConfig key, repeatable for a grid):
every arm gets the same grid and the same budget. Each grid point is trained with
the base seed s into ``OUT/tune/<label>/<point>/s<s>``; with ``tune_seeds`` = m > 1
(``--tune-seeds m``) with seeds s .. s+m-1, each with its own validation split. The
point with the highest *final validation* accuracy, averaged over those seeds, is
chosen (ties: lower mean validation loss, then the first listed); with ``tune_metric``
"loss" (``--tune-metric loss``, e.g. bits per character for a language model) the
point with the lowest mean final validation loss (ties: higher accuracy, then the
first listed). The test split plays no part. The chosen point is then trained with
fresh seeds s+m .. s+m+k-1 into ``OUT/<label>/s<seed>``, and only those runs are reported (mean +- std, and
each method's difference to the reference method with a 95 % Welch interval,
:mod:`bnnopt.report.stats`).
Tuning needs a validation split (``val_fraction`` > 0; compare's default 0.1).

``jobs`` > 1 (``--jobs N``) trains N runs at once in worker processes
(:mod:`bnnopt.experiments.pool`): every grid run is handed out first, an arm's seeds as
soon as its grid is chosen; the results equal those of one process at the same
thread count.

Under ``torchrun`` (``torchrun --nproc-per-node N -m bnnopt compare ...``) every run
trains with all N processes, one after the other; rank 0 decides which runs are
reused or resumed and broadcasts that (with the reused results), and alone locks
and writes the runs and the report.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bnnopt.experiments.run_one import (config_difference, option_difference,  # noqa: F401
                                        reuse_state, train_or_reuse)
from bnnopt.train.config import RunConfig, parse_literal
from bnnopt.runs.io import write_json, write_text


@dataclass
class Arm:
    label: str
    method: str
    method_options: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    context: str = ""  # the label without the method spec: optimizer and swept value


TUNE_ALIASES = {"lr": "optim.lr"}


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
        options[key.strip()] = parse_literal(value.strip())
    return name, options


def build_arms(methods: list[str], optimizers: list[str] | None = None,
               sweep: str | None = None) -> list[Arm]:
    """Cross method specs with optimizer specs and with the values of one swept key.

    An optimizer spec is ``name[:key=value...]`` with OptimConfig keys, e.g.
    ``sgd:lr=0.05`` or ``adam``.
    """
    if not methods:
        from bnnopt.registry import METHODS

        raise ValueError(f"--methods lists no method; give a comma list, valid methods: "
                         f"{', '.join(METHODS.names())}")
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
                arms.append(Arm(label, name, dict(options), overrides, label[len(spec):]))
    return arms


def parse_tune(specs: list[str] | None) -> list[tuple[str, list[str]]]:
    """``["lr=0.01,0.1", "optim.momentum=0.8,0.9"]`` -> ``[("optim.lr", [...]), ...]``.

    ``lr`` is short for ``optim.lr``; values stay strings (parsed by RunConfig.set).
    """
    grid: list[tuple[str, list[str]]] = []
    for spec in specs or []:
        if "=" not in spec:
            raise ValueError(f"malformed --tune {spec!r}; expected key=v1,v2,... e.g. lr=0.01,0.1")
        key, raw = spec.split("=", 1)
        key = TUNE_ALIASES.get(key.strip(), key.strip())
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not key or not values:
            raise ValueError(f"malformed --tune {spec!r}; expected key=v1,v2,... e.g. lr=0.01,0.1")
        if key in [k for k, _ in grid]:
            raise ValueError(f"--tune names {key!r} twice; give all its values in one list")
        grid.append((key, values))
    return grid


def grid_points(grid: list[tuple[str, list[str]]]) -> list[list[str]]:
    """The cartesian product of a tuning grid as lists of ``key=value`` overrides."""
    if not grid:
        return [[]]
    return [[f"{k}={v}" for (k, _), v in zip(grid, combo)]
            for combo in itertools.product(*(values for _, values in grid))]


def point_label(point: list[str]) -> str:
    """``["optim.lr=0.05"]`` -> ``"lr=0.05"``."""
    return ",".join(a.split("=", 1)[0].split(".")[-1] + "=" + a.split("=", 1)[1] for a in point)


TUNE_METRICS = ("acc", "loss")


def choose_setting(summaries: list[dict[str, Any]], metric: str = "acc") -> int:
    """Index of the grid point to keep, from validation only. ``metric`` "acc": highest
    final validation accuracy, ties broken by lower final validation loss; "loss":
    lowest final validation loss, ties broken by higher accuracy; then by grid order."""
    check_tune_metric(metric)
    _require_validation(summaries)
    if metric == "loss":
        return max(range(len(summaries)), key=lambda i: (
            -summaries[i]["final_val_loss"], summaries[i]["final_val_acc"], -i))
    return max(range(len(summaries)),
               key=lambda i: (summaries[i]["final_val_acc"], -summaries[i]["final_val_loss"], -i))


def check_tune_metric(metric: Any, what: str = "tune metric") -> str:
    """``metric`` if it is one of :data:`TUNE_METRICS`, else a one-line ValueError naming
    it as ``what``."""
    if metric not in TUNE_METRICS:
        raise ValueError(f"invalid {what} {metric!r}; valid: {', '.join(TUNE_METRICS)}")
    return metric


def _require_validation(summaries: list[dict[str, Any]]) -> None:
    if any("final_val_acc" not in s for s in summaries):
        raise ValueError("tuning needs a validation split; set val_fraction > 0")


def mean_validation(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One grid point's tuning runs (one summary per tuning seed) -> the mean final
    validation accuracy and loss over those seeds, with the per-seed accuracies."""
    _require_validation(per_seed)
    n = len(per_seed)
    return {"final_val_acc": sum(s["final_val_acc"] for s in per_seed) / n,
            "final_val_loss": sum(s["final_val_loss"] for s in per_seed) / n,
            "val_acc_per_seed": [s["final_val_acc"] for s in per_seed]}


def arm_config(base: RunConfig, arm: Arm, seed: int, point: list[str] | None = None) -> RunConfig:
    """The arm's config at ``seed``, with a tuning grid point's overrides applied last."""
    cfg = RunConfig.from_dict(base.to_dict())
    cfg.method = arm.method
    cfg.method_options = dict(arm.method_options)
    cfg.seed = seed
    for assignment in [*arm.overrides, *(point or [])]:
        cfg.set(assignment)
    return cfg.validate()


TrainFn = Callable[[RunConfig, Path], "tuple[dict[str, Any], list[dict[str, Any]]]"]


def run_compare(base: RunConfig, arms: list[Arm], seeds: int, out: str | Path, *,
                log: Callable[[str], None] = print, progress: bool = False,
                target_acc: float | None = None, tune: list[tuple[str, list[str]]] | None = None,
                reference: str | None = "ste", train: TrainFn | None = None,
                jobs: int = 1, threads: int | None = None,
                tune_seeds: int = 1, tune_metric: str = "acc") -> dict[str, Any]:
    """Train every (arm, seed) into ``out`` and write the report; return report.json's dict.

    ``tune``: a grid (:func:`parse_tune`) chosen per arm on validation (module
    docstring), each point trained with ``tune_seeds`` seeds and chosen on their mean
    validation accuracy (``tune_metric`` "acc") or loss ("loss"). ``reference``: method
    name the others are compared with.
    ``train(cfg, run_dir) -> (summary, metrics)`` defaults to training (or reusing) a run.
    ``jobs`` > 1: that many runs at once in worker processes with ``threads`` CPU
    threads each (:mod:`bnnopt.experiments.pool`; not with ``train`` or under torchrun).
    """
    from contextlib import nullcontext

    from bnnopt.train.distributed import current
    from bnnopt.runs.lock import RunLock

    with RunLock(out) if current().is_main else nullcontext():
        if current().is_main:  # temporaries of report.md / report.json orphaned by a kill
            from bnnopt.runs.io import remove_orphan_temps

            remove_orphan_temps(out)
        return _run_compare(base, arms, seeds, Path(out), log=log, progress=progress,
                            target_acc=target_acc, tune=tune, reference=reference, train=train,
                            jobs=jobs, threads=threads, tune_seeds=tune_seeds,
                            tune_metric=tune_metric)


def _run_compare(base, arms, seeds, out, *, log, progress, target_acc, tune, reference,
                 train, jobs=1, threads=None, tune_seeds=1, tune_metric="acc") -> dict[str, Any]:
    from bnnopt.report import aggregate, markdown_table, plot_curves
    from bnnopt.report.stats import reference_pairs, significance_markdown, significance_rows
    from bnnopt.report.tables import columns_for, group_runs
    from bnnopt.train.distributed import current
    from bnnopt.experiments.pool import RunPool

    out = Path(out)
    if jobs != 1 and current().enabled:
        raise ValueError(f"--jobs {jobs} under torchrun: every run already trains with all "
                         "processes; valid there: --jobs 1")
    if jobs != 1 and train is not None:
        raise ValueError(f"--jobs {jobs} trains in worker processes, which cannot call a given "
                         "train function; valid with train: --jobs 1")
    if train is None:
        def train(cfg, run_dir):
            return train_or_reuse(cfg, run_dir, log=log, progress=progress)
    from bnnopt.data.text import has_fixed_validation

    if tune and not base.val_fraction and not has_fixed_validation(base.dataset):
        raise ValueError("--tune chooses on the validation split, but val_fraction is 0; "
                         "valid: --val-fraction in (0, 1)")
    if tune_seeds < 1:
        raise ValueError(f"invalid --tune-seeds {tune_seeds}; must be >= 1")
    check_tune_metric(tune_metric)
    points = grid_points(tune or [])
    tuning_seeds = [base.seed + j for j in range(tune_seeds)] if tune else []
    first_seed = base.seed + len(tuning_seeds)  # the reported seeds are fresh
    final_seeds = [first_seed + i for i in range(seeds)]
    for arm in arms:  # validate every arm and grid point before training any
        for point in points:
            arm_config(base, arm, base.seed, point)
    runs, curves, tuning = [], {}, []
    with RunPool(jobs, train, threads=threads, device=base.device, log=log) as pool:
        # every grid run is handed out first; with jobs = 1 a run trains when its result is
        # read, so the order stays: an arm's grid, its choice, its seeds, the next arm
        grid = {arm.label: [[pool.submit(cfg, out / "tune" / _safe(arm.label)
                                         / _safe(point_label(point)) / f"s{cfg.seed}")
                             for seed in tuning_seeds
                             for cfg in [arm_config(base, arm, seed, point)]]
                            for point in points]
                for arm in arms}
        finals = []
        for arm in arms:
            chosen: list[str] = []
            if tune:
                results = [mean_validation([future.result()[0] for future in futures])
                           for futures in grid[arm.label]]
                chosen = points[choose_setting(results, tune_metric)]
                tuning.append({"label": arm.label, "chosen": point_label(chosen),
                               "points": [point_label(p) for p in points],
                               "seeds": tuning_seeds,
                               "val_acc": [r["final_val_acc"] for r in results],
                               "val_loss": [r["final_val_loss"] for r in results],
                               "val_acc_per_seed": [r["val_acc_per_seed"] for r in results]})
                log(f"[compare] {arm.label}: chose {point_label(chosen)} on validation")
            seeds_of_arm = []
            for seed in final_seeds:
                cfg = arm_config(base, arm, seed, chosen)
                run_dir = out / _safe(arm.label) / f"s{cfg.seed}"
                seeds_of_arm.append((arm, chosen, run_dir, pool.submit(cfg, run_dir)))
            if not pool.parallel:  # train them now: the sequential order
                for *_, future in seeds_of_arm:
                    future.result()
            finals += seeds_of_arm
        for arm, chosen, run_dir, future in finals:
            summary, metrics = future.result()
            summary = dict(summary, label=arm.label, run_dir=str(run_dir))
            if chosen:
                summary["chosen"] = point_label(chosen)
            if target_acc is not None:
                summary["epochs_to_target"] = next(
                    (r["epoch"] for r in metrics if r["test_acc"] >= target_acc), None)
            runs.append(summary)
            curves.setdefault(arm.label, []).append(metrics)

    if not current().is_main:
        return {}
    columns = columns_for(runs)
    rows = aggregate(runs, columns)
    title = f"protocol {base.protocol or base.dataset}: {base.model}, {seeds} seed(s)"
    table = markdown_table(rows, columns)
    plot = plot_curves(curves, out / "curves.png", title=title)
    own_optim = any(o.startswith("optim.") for arm in arms for o in arm.overrides)
    optim = "optimizer per arm" if own_optim else f"optimizer {base.optim}"
    text = (f"# bnnopt compare\n\n{title}, {base.epochs} epochs, batch {base.batch_size}, "
            f"{optim}, validation fraction {base.val_fraction:g}\n\n")
    if tune:
        text += tuning_markdown(tuning, tune, base, tune_metric) + "\n"
    text += f"{table}\n![curves]({plot.name})\n"
    significance = []
    if reference:
        groups = group_runs(runs)
        meta = {arm.label: (arm.method, arm.context) for arm in arms}
        significance = significance_rows(groups, reference_pairs(meta, reference))
        if significance:
            text += "\n" + significance_markdown(significance)
    if target_acc is not None:
        text += f"\nepochs to target: first epoch with test accuracy >= {target_acc}%.\n"
    write_text(out / "report.md", text)
    report = {"base_config": base.to_dict(), "runs": runs, "seeds": final_seeds,
              "rows": [{k: v for k, v in r.items()} for r in rows],
              "tuning": tuning, "tune_grid": [list(g) for g in tune or []],
              "tune_seeds": tuning_seeds, "tune_metric": tune_metric if tune else None,
              "reference": reference, "significance": significance}
    write_json(out / "report.json", report)
    return report


def tuning_markdown(tuning: list[dict[str, Any]], grid: list[tuple[str, list[str]]],
                    base: RunConfig, metric: str = "acc") -> str:
    """The grid, every point's final validation accuracy per arm, and the chosen point."""
    spelled = "; ".join(f"{k} in {{{', '.join(v)}}}" for k, v in grid)
    seeds = tuning[0]["seeds"]
    trained = (f"once with seed {seeds[0]}" if len(seeds) == 1 else
               f"with seeds {', '.join(map(str, seeds))} (each its own validation split)")
    mean = "" if len(seeds) == 1 else "mean "
    split = (f"{base.val_fraction:g} of the training set" if base.val_fraction
             else "the dataset's own validation split")
    rule = (f"{mean}final validation loss (ties: {mean}validation accuracy)" if metric == "loss"
            else f"{mean}final validation accuracy (ties: {mean}validation loss)")
    lines = [f"Tuning: grid {spelled}, each point trained {trained}; chosen by {rule} on "
             f"{split}; test accuracy below is from fresh seeds only.\n",
             "| method | " + " | ".join(tuning[0]["points"]) + " | chosen |",
             "|" + "---|" * (len(tuning[0]["points"]) + 2)]
    for t in tuning:
        cells = [f"{a:.2f} % ({l:.4f})" for a, l in zip(t["val_acc"], t["val_loss"])]
        lines.append(f"| {t['label']} | " + " | ".join(cells) + f" | {t['chosen']} |")
    return "\n".join(lines) + (f"\n\n({mean}validation accuracy ({mean}validation loss) at the "
                               "last epoch)\n")


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in label)
