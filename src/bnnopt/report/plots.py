"""Curves over epochs (mean over seeds with a +-1 std band), like FSG Fig. 2."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bnnopt.report.tables import mean_std
from bnnopt.runs.io import atomic_path


def plot_curves(curves: dict[str, list[list[dict[str, Any]]]], path: str | Path,
                keys: tuple[str, ...] = ("loss", "test_acc"), title: str = "") -> Path:
    """Plot per-epoch ``keys`` for each label; ``curves[label]`` = one metrics list per seed.

    Writes a PNG atomically and returns its path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"loss": "train loss", "test_acc": "test accuracy (%)", "train_acc":
             "train accuracy (%)", "test_loss": "test loss"}
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, runs in curves.items():
            n = min(len(r) for r in runs) if runs else 0
            if n == 0:
                continue
            xs = [runs[0][i]["epoch"] for i in range(n)]
            stats = [mean_std([float(r[i][key]) for r in runs]) for i in range(n)]
            mean = [m for m, _ in stats]
            std = [s for _, s in stats]
            ax.plot(xs, mean, label=label, marker="o", markersize=3)
            ax.fill_between(xs, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(names.get(key, key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save_png(fig, path)


def plot_flip_rates(metrics: list[dict[str, Any]], path: str | Path, title: str = "",
                    log_scale: bool = True) -> Path:
    """Plot the per-layer flip rate of one run: one line per quantized layer, x = epoch.

    ``metrics``: a run's metrics rows (``bnnopt.train.trainer.read_metrics``); each row's
    ``"flip_rate"`` maps layer name -> fraction of the layer's weights whose quantized
    level changed during that epoch (:mod:`bnnopt.diagnostics.flips`). With
    ``log_scale`` the y axis is logarithmic (rates of 0 are left out of the line).
    Writes a PNG atomically and returns its path; ValueError when no row has a flip rate.
    """
    rows = [r for r in metrics if r.get("flip_rate")]
    if not rows:
        raise ValueError("no metrics row has a 'flip_rate' (a float run, or a run recorded "
                         "before flip rates were logged); nothing to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers: list[str] = []
    for r in rows:
        layers.extend(name for name in r["flip_rate"] if name not in layers)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in layers:
        points = [(r["epoch"], float(r["flip_rate"][name])) for r in rows if name in r["flip_rate"]]
        if log_scale:
            points = [(x, y) for x, y in points if y > 0]
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], label=name, marker="o",
                    markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("flip rate (fraction of weights)")
    if log_scale:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(layers) > 8 else 1)
    if title:
        ax.set_title(title)
    return _save_png(fig, path)


def _save_png(fig, path) -> Path:
    """Lay out ``fig``, write it to ``path`` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
