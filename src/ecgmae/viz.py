"""Matplotlib figures: training curves and masked-autoencoder reconstructions. Headless backend, atomic saves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgmae.utils import atomic_path

if TYPE_CHECKING:
    from ecgmae.api import Reconstruction

# The usual 12-lead print: 3 rows x 4 columns, each column 1/4 of the strip (2.5 s of a 10 s record).
CLINICAL_LAYOUT: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temp file + rename) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _pyplot().close(fig)
    return path


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
    for i, (f, name) in enumerate(zip(frames, labels, strict=True)):
        color = f"C{i % 10}"  # one colour per run across all panels
        if "train/loss_step" in f.columns:
            d = f.dropna(subset=["train/loss_step"])
            ax_tr.plot(d["step"], d["train/loss_step"], label=name, lw=1, color=color)
        if "val/loss" in f.columns:
            d = f.dropna(subset=["val/loss"])
            ax_va.plot(d["step"], d["val/loss"], marker="o", ms=3, label=name, color=color)
        if has_auc and "val/auroc" in f.columns:
            d = f.dropna(subset=["val/auroc"])
            axes[0, 2].plot(d["step"], d["val/auroc"], marker="o", ms=3, label=name, color=color)
    ax_tr.set(title="training loss", xlabel="step")
    ax_va.set(title="validation loss", xlabel="step")
    if has_auc:
        axes[0, 2].set(title="validation macro AUROC", xlabel="step")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the True stretches of a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _ecg_paper(ax: Any, seconds: float, lo: float, hi: float) -> None:
    """Light ECG-paper grid: 0.2 s x 0.5 mV major lines, 0.04 s x 0.1 mV minor ones."""
    ax.set_xticks(np.arange(0, seconds + 1e-9, 0.2), minor=False)
    ax.set_yticks(np.arange(np.floor(lo * 2) / 2, hi + 1e-9, 0.5), minor=False)
    ax.set_xticks(np.arange(0, seconds + 1e-9, 0.04), minor=True)
    ax.set_yticks(np.arange(np.floor(lo * 10) / 10, hi + 1e-9, 0.1), minor=True)
    ax.grid(which="major", color="#f4a6a6", lw=0.5)
    ax.grid(which="minor", color="#fbe0e0", lw=0.3)
    ax.tick_params(labelbottom=False, labelleft=False, length=0, which="both")
    ax.set_xlim(0, seconds)
    ax.set_ylim(lo, hi)


def _masked_only(rec: Reconstruction, i: int, i0: int, i1: int) -> np.ndarray:
    """Lead ``i``'s reconstruction on its masked samples, NaN (a gap in the line) elsewhere."""
    return np.where(rec.mask[i, i0:i1], rec.reconstruction[i, i0:i1], np.nan)


def _strip(
    ax: Any, rec: Reconstruction, parts: Sequence[tuple[str, float, float]], a0: int, show_visible: bool
) -> None:
    """Draw ``(lead, t0, t1)`` parts (seconds on the strip) of ``rec`` from sample ``a0`` on one axis."""
    fs, row_of = rec.fs, {name: i for i, name in enumerate(rec.leads)}
    for lead, t0, t1 in parts:
        i0, i1 = a0 + round(t0 * fs), min(a0 + round(t1 * fs), rec.original.shape[1])
        i = row_of.get(lead)
        ax.text(t0 + 0.04, 0.97, lead, transform=ax.get_xaxis_transform(), va="top", fontsize=8, weight="bold")
        if t0 > 0:
            ax.axvline(t0, color="0.3", lw=0.6)
        if i is None or not rec.present[i] or i1 <= i0:
            ax.text(
                (t0 + t1) / 2, 0.5, "absent", transform=ax.get_xaxis_transform(), ha="center", color="0.4", fontsize=8
            )
            continue
        t = t0 + np.arange(i1 - i0) / fs
        for s, e in _runs(rec.mask[i, i0:i1]):
            ax.axvspan(t[s], t[e - 1] + 1 / fs, color="#9ecae1", alpha=0.45, lw=0)
        ax.plot(t, rec.original[i, i0:i1], color="black", lw=0.7)
        shown = rec.reconstruction[i, i0:i1] if show_visible else _masked_only(rec, i, i0, i1)
        ax.plot(t, shown, color="#d62728", lw=0.7, alpha=0.9)


def plot_reconstruction(
    rec: Reconstruction,
    out: str | Path,
    *,
    start: float = 0.0,
    seconds: float = 10.0,
    rhythm: str | None = "II",
    title: str | None = None,
    show_visible: bool = False,
) -> Path:
    """The reconstruction over the original in the usual 12-lead layout, masked spans shaded.

    Three rows of four leads (I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6), each lead showing a quarter
    of the strip, on ECG paper (0.2 s x 0.5 mV), plus an optional full-length rhythm strip.

    Args:
        rec: from :meth:`ecgmae.api.Model.reconstruct`.
        out: PNG path, written atomically.
        start: first second shown.
        seconds: length of the strip (shorter records show what they have).
        rhythm: lead of the rhythm strip under the grid (None: no strip; if absent, the first present lead).
        title: figure title (default: record, mask ratio and masked RMSE).
        show_visible: also draw the decoder's output over visible spans (not trained there: the loss
            only scores masked patches, so it is usually noise).
    """
    plt = _pyplot()
    a0 = max(0, min(int(round(start * rec.fs)), rec.original.shape[1] - 1))
    dur = min(seconds, (rec.original.shape[1] - a0) / rec.fs)
    if rhythm is not None and rhythm not in [n for n, p in zip(rec.leads, rec.present, strict=True) if p]:
        rhythm = next((n for n, p in zip(rec.leads, rec.present, strict=True) if p), None)
    rows = [[(lead, c * dur / 4, (c + 1) * dur / 4) for c, lead in enumerate(row)] for row in CLINICAL_LAYOUT]
    if rhythm is not None:
        rows.append([(rhythm, 0.0, dur)])
    a1 = a0 + round(dur * rec.fs)
    shown = np.ones_like(rec.mask[:, a0:a1]) if show_visible else rec.mask[:, a0:a1]
    keep = rec.present[:, None] & shown
    seg = np.concatenate([rec.original[rec.present, a0:a1].ravel(), rec.reconstruction[:, a0:a1][keep].ravel()])
    lo, hi = np.percentile(seg, [0.1, 99.9]) if seg.size else (-1.0, 1.0)
    pad = 0.15 * max(hi - lo, 0.5)
    lo, hi = float(lo - pad), float(hi + pad)
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(8.0, 1.25 * dur + 1), 1.55 * len(rows) + 0.6), squeeze=False)
    for ax, parts in zip(axes[:, 0], rows, strict=True):
        _ecg_paper(ax, dur, lo, hi)
        _strip(ax, rec, parts, a0, show_visible)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], color="black", lw=1, label="original"),
        Line2D(
            [], [], color="#d62728", lw=1, label="reconstruction" if show_visible else "reconstruction (masked spans)"
        ),
        Patch(color="#9ecae1", alpha=0.6, label="masked (hidden from the encoder)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    rmse = rec.masked_rmse()
    fig.suptitle(
        title
        or f"{rec.name}: {rec.mask_ratio:.0%} of patches masked, masked RMSE {rmse:.3f} mV "
        f"({rec.fs:g} Hz, {start:g}-{start + dur:g} s; grid 0.2 s x 0.5 mV)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return save_figure(fig, out, dpi=120)
