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
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
