"""Multi-label ECG classification metrics in the form the PTB-XL literature reports them.

Macro AUROC over classes that have both positives and negatives, per-class AUROC, macro F1 at a
threshold, Fmax (Strodthoff et al. 2020: sample-centred precision/recall, best threshold), and
bootstrap 95 % confidence intervals by resampling records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata


def auroc_per_class(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AUROC of each column of ``p`` against binary ``y``; NaN where a class lacks positives or negatives.

    Args:
        y: (N, K) binary labels.
        p: (N, K) scores.

    Returns:
        (K,) float64 AUROCs (rank formula, ties averaged: identical to ``sklearn.metrics.roc_auc_score``).
    """
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    ranks = rankdata(p, axis=0)  # (N, K)
    n_pos = y.sum(axis=0).astype(np.float64)
    n_neg = y.shape[0] - n_pos
    rank_sum = np.where(y, ranks, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean AUROC over classes with both positives and negatives (NaN if there are none)."""
    auc = auroc_per_class(y, p)
    return float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")


def macro_f1(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """Macro F1 of ``p >= threshold`` over classes with at least one positive label or prediction."""
    y = np.asarray(y, dtype=bool)
    pred = np.asarray(p) >= threshold
    tp = (y & pred).sum(axis=0)
    fp = (~y & pred).sum(axis=0)
    fn = (y & ~pred).sum(axis=0)
    denom = 2 * tp + fp + fn
    valid = denom > 0
    if not valid.any():
        return float("nan")
    return float(np.mean(2 * tp[valid] / denom[valid]))


def fmax(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray | None = None) -> float:
    """Sample-centred maximum F1 over thresholds (Strodthoff et al. 2020, after CAFA).

    Precision is averaged over samples with at least one prediction at the threshold, recall over all
    samples with at least one positive label.
    """
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    if thresholds is None:
        thresholds = np.linspace(0.0, 1.0, 101)
    has_label = y.any(axis=1)
    if not has_label.any():
        return float("nan")
    best = 0.0
    for t in thresholds:
        pred = p >= t
        n_pred = pred.sum(axis=1)
        tp = (pred & y).sum(axis=1)
        covered = n_pred > 0
        if not covered.any():
            continue
        prec = np.mean(tp[covered] / n_pred[covered])
        rec = np.mean(tp[has_label] / y[has_label].sum(axis=1))
        if prec + rec > 0:
            best = max(best, 2 * prec * rec / (prec + rec))
    return float(best)


def bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    metric: Any = macro_auroc,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``metric(y, p)`` resampling records with replacement."""
    rng = np.random.default_rng(seed)
    n = len(y)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = metric(y[idx], p[idx])
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def classification_report(
    y: np.ndarray,
    p: np.ndarray,
    label_names: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """All metrics in one JSON-ready dict: macro AUROC with its 95 % CI, per-class AUROC, F1, Fmax."""
    y = np.asarray(y)
    p = np.asarray(p)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in shape")
    per_class = auroc_per_class(y, p)
    lo, hi = bootstrap_ci(y, p, macro_auroc, n_boot=n_boot, seed=seed) if n_boot > 0 else (np.nan, np.nan)
    f_lo, f_hi = (
        bootstrap_ci(y, p, fmax, n_boot=max(n_boot // 5, 0), seed=seed)
        if n_boot > 0
        else (
            np.nan,
            np.nan,
        )
    )
    return {
        "n_records": int(len(y)),
        "macro_auroc": macro_auroc(y, p),
        "macro_auroc_ci95": [lo, hi],
        "macro_f1": macro_f1(y, p, threshold),
        "f1_threshold": threshold,
        "fmax": fmax(y, p),
        "fmax_ci95": [f_lo, f_hi],
        "per_class_auroc": {
            name: (None if not np.isfinite(a) else float(a)) for name, a in zip(label_names, per_class, strict=True)
        },
        "positives": {name: int(c) for name, c in zip(label_names, np.asarray(y, bool).sum(axis=0), strict=True)},
        "bootstrap": {"n": n_boot, "seed": seed},
    }
