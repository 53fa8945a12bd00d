"""Repeated cross-validated linear probe for small labelled sets (tens to a few thousand records).

For each class separately, records are split by repeated stratified k-fold. Inside every training fold a
standardiser is fitted on the training rows only, ``C`` of an L2 logistic regression is chosen by an inner
stratified k-fold on those same rows (best mean inner AUROC; ties go to the smaller ``C``), the model is
refitted on the whole training fold with that ``C`` and scores the held-out rows. The AUROC of each repeat
is computed from the pooled out-of-fold scores. A held-out row's score therefore depends only on its own
features and the training rows (features and labels) of its fold: :func:`oof_scores` never sees the
held-out labels, and nothing is fitted on held-out features.

Only numpy and scikit-learn are used.

Example:
    >>> keep = frequent_classes(Y, names, min_count=7)
    >>> res = cv_probe(X, Y[:, keep], names=[names[k] for k in keep], folds=5, repeats=5)
    >>> res["macro"], res["macro_std"], res["per_class"]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from ecgmae.errors import DataError

__all__ = ["cv_probe", "frequent_classes", "oof_scores"]

MAX_ITER = 2000


def frequent_classes(Y: np.ndarray, names: Sequence[str], min_count: int) -> list[int]:
    """Columns of the 0/1 matrix ``Y`` with at least ``min_count`` positives and ``min_count`` negatives.

    ``names`` only has to match the columns (checked); the result is in column order.
    """
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[1] != len(names):
        raise DataError(f"labels: expected (records, {len(names)}) for {len(names)} class names, got {Y.shape}")
    pos = (Y > 0).sum(axis=0)
    return [k for k in range(Y.shape[1]) if pos[k] >= min_count and len(Y) - pos[k] >= min_count]


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    """L2 logistic regression with ``C = c`` on binary ``y`` (lbfgs: deterministic, no seed to set)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=MAX_ITER).fit(x, y)


def _choose_c(x: np.ndarray, y: np.ndarray, Cs: Sequence[float], inner_folds: int, seed: int) -> float:
    """``C`` with the best mean AUROC over an inner stratified k-fold of (already standardised) ``x``."""
    n_inner = min(inner_folds, int(y.sum()), int(len(y) - y.sum()))
    if len(Cs) == 1 or n_inner < 2:  # too few rows of a class to rank the grid: take its middle value
        return float(sorted(Cs)[(len(Cs) - 1) // 2])
    splits = list(StratifiedKFold(n_inner, shuffle=True, random_state=seed).split(x, y))
    scores = {}
    for c in sorted(Cs):
        scores[c] = float(
            np.mean([roc_auc_score(y[te], fit_logistic(x[tr], y[tr], c).decision_function(x[te])) for tr, te in splits])
        )
    return float(max(scores, key=lambda c: (scores[c], -c)))


def oof_scores(
    X: np.ndarray,
    y: np.ndarray,
    splits: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    Cs: Sequence[float] = (0.01, 0.1, 1.0),
    inner_folds: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold decision scores of one binary label for the given ``(train, test)`` index splits.

    Each fold: standardise with training-row statistics, choose ``C`` by inner CV on the training rows,
    refit, score the test rows. The test rows' labels are never read.

    Returns:
        ``(scores, chosen_Cs)``: float64 ``(len(y),)`` (NaN for rows in no test fold), one ``C`` per fold.
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y).astype(np.int64)
    out, chosen = np.full(len(y), np.nan), []
    for tr, te in splits:
        scaler = StandardScaler().fit(X[tr])
        x_tr = scaler.transform(X[tr])
        c = _choose_c(x_tr, y[tr], Cs, inner_folds, seed)
        out[te] = fit_logistic(x_tr, y[tr], c).decision_function(scaler.transform(X[te]))
        chosen.append(c)
    return out, chosen


def cv_probe(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    folds: int = 5,
    repeats: int = 5,
    Cs: Sequence[float] = (0.01, 0.1, 1.0),
    inner_folds: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-class repeated stratified k-fold logistic-regression probe of features ``X`` for labels ``Y``.

    Args:
        X: ``(records, features)``; non-finite values are an error.
        Y: ``(records, classes)`` 0/1 (a 1-D array is one class).
        names: class names (default ``"0"``, ``"1"``...).
        folds: outer folds; every class needs at least this many positives and negatives.
        repeats: independent reshuffles of the outer folds.
        Cs: inverse L2 strengths tried by the inner CV.
        inner_folds: folds of the inner CV (fewer when a training fold has fewer rows of a class).
        seed: fixes every split; the same inputs and seed give the same result.

    Returns:
        ``classes``, ``per_class`` (mean AUROC over repeats by class), ``macro`` (mean over repeats of the
        macro AUROC), ``macro_std`` (its standard deviation over repeats, ddof=1; 0 for one repeat),
        ``macro_by_repeat``, ``aurocs`` (``(repeats, classes)`` array), ``chosen_C`` (by class, one list
        per repeat), ``positives`` (by class) and the settings.

    Raises:
        DataError: bad shapes, non-finite features, or a class with fewer positives or negatives than folds.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    Y = (Y[:, None] if Y.ndim == 1 else Y).astype(np.int64)
    names = [str(k) for k in range(Y.shape[1])] if names is None else [str(n) for n in names]
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y) or len(names) != Y.shape[1]:
        raise DataError(f"probe: X {X.shape}, Y {Y.shape} and {len(names)} class names do not match")
    if not np.isfinite(X).all():
        raise DataError(f"probe: X holds {int((~np.isfinite(X)).sum())} non-finite values")
    if folds < 2 or repeats < 1 or not Cs:
        raise DataError(f"probe: need folds >= 2, repeats >= 1 and some Cs (got {folds}, {repeats}, {list(Cs)})")
    if not set(np.unique(Y)) <= {0, 1}:
        raise DataError("probe: Y must be 0/1")
    pos = Y.sum(axis=0)
    for k, name in enumerate(names):
        if min(pos[k], len(Y) - pos[k]) < folds:
            raise DataError(
                f"probe: class {name!r} has {pos[k]} positives and {len(Y) - pos[k]} negatives "
                f"among {len(Y)} records; {folds}-fold CV needs at least {folds} of each "
                f"(drop the class, e.g. with frequent_classes, or use fewer folds)"
            )
    rep_seeds = np.random.SeedSequence(seed).generate_state(repeats)
    aurocs = np.zeros((repeats, len(names)))
    chosen: dict[str, list[list[float]]] = {n: [] for n in names}
    for r, rs in enumerate(rep_seeds):
        for k, name in enumerate(names):
            y = Y[:, k]
            splits = StratifiedKFold(folds, shuffle=True, random_state=int(rs)).split(X, y)
            scores, cs = oof_scores(X, y, splits, Cs=Cs, inner_folds=inner_folds, seed=int(rs))
            aurocs[r, k] = roc_auc_score(y, scores)
            chosen[name].append(cs)
    macro = aurocs.mean(axis=1)
    return {
        "classes": names,
        "per_class": {n: float(a) for n, a in zip(names, aurocs.mean(axis=0), strict=True)},
        "macro": float(macro.mean()),
        "macro_std": float(macro.std(ddof=1)) if repeats > 1 else 0.0,
        "macro_by_repeat": macro.tolist(),
        "aurocs": aurocs,
        "chosen_C": chosen,
        "positives": {n: int(p) for n, p in zip(names, pos, strict=True)},
        "records": len(Y),
        "features": int(X.shape[1]),
        "folds": folds,
        "repeats": repeats,
        "Cs": [float(c) for c in Cs],
        "inner_folds": inner_folds,
        "seed": seed,
    }
