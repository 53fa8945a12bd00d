"""Matplotlib figures: training curves (and, later, reconstructions). Headless backend, atomic saves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ecgmae.utils import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run: str | Path):
    """The Lightning CSV log of a run directory as a DataFrame (``metrics.csv`` or ``logs/metrics.csv``)."""
    import pandas as pd

    run = Path(run)
    for p in (run / "metrics.csv", run / "logs" / "metrics.csv"):
        if p.exists():
            return pd.read_csv(p)
    raise FileNotFoundError(f"{run}: no metrics.csv (is it a training run directory?)")


def plot_curves(runs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Training and validation loss (and validation AUROC where logged) per step for each run.

    Args:
        runs: run directories holding ``metrics.csv``.
        out: PNG path, written atomically.
        labels: legend names (default: the directory names).
    """
    plt = _pyplot()
    frames = [read_metrics(r) for r in runs]
    labels = list(labels) if labels else [Path(r).name for r in runs]
    has_auc = any("val/auroc" in f.columns for f in frames)
    ncol = 2 + int(has_auc)
    fig, axes = plt.subplots(1, ncol, figsize=(5 * ncol, 3.6), squeeze=False)
    ax_tr, ax_va = axes[0, 0], axes[0, 1]
    for f, name in zip(frames, labels, strict=True):
        if "train/loss_step" in f.columns:
            d = f.dropna(subset=["train/loss_step"])
            ax_tr.plot(d["step"], d["train/loss_step"], label=name, lw=1)
        if "val/loss" in f.columns:
            d = f.dropna(subset=["val/loss"])
            ax_va.plot(d["step"], d["val/loss"], marker="o", ms=3, label=name)
        if has_auc and "val/auroc" in f.columns:
            d = f.dropna(subset=["val/auroc"])
            axes[0, 2].plot(d["step"], d["val/auroc"], marker="o", ms=3, label=name)
    ax_tr.set(title="training loss", xlabel="step")
    ax_va.set(title="validation loss", xlabel="step")
    if has_auc:
        axes[0, 2].set(title="validation macro AUROC", xlabel="step")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
