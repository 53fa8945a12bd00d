"""Patient-aware splits and label subsets of plain arrays (ids, labels, indices): no store, no torch.

The checks that open stores (a fresh split of a store, the leakage check between two stores) sit
above this, in :mod:`ecgmae.data.leakage`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ecgmae.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")


def valid_fractions(fractions: Sequence[float]) -> bool:
    """Three finite train/val/test fractions >= 0 that sum to 1 (the one rule behind ``prepare --split``)."""
    fr = [float(v) for v in fractions]
    return len(fr) == 3 and all(math.isfinite(v) and v >= 0 for v in fr) and abs(sum(fr) - 1) <= 1e-6


def assign_splits(
    groups: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, n_folds: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split where all records of a group (patient) land in the same split and fold.

    Groups are shuffled, then laid end to end by record count; a group's split and fold are decided
    by where its middle falls, so split sizes match ``fractions`` as closely as whole groups allow.
    With the default 80/10/10, folds 1-8 are exactly the train split, 9 val and 10 test (the PTB-XL
    convention).

    Args:
        groups: one group key per record (patient id, or the record id when the patient is unknown).
        fractions: train, val, test shares (normalised to sum 1).
        seed: random seed.
        n_folds: number of folds to assign as well.

    Returns:
        ``(split names (N,) object array, folds (N,) int array in 1..n_folds)``.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise DataError(f"split fractions must be three non-negative numbers, got {list(fractions)}")
    bounds = np.cumsum(fr / fr.sum())
    counts = Counter(groups)
    unique = sorted(counts)
    order = np.random.default_rng(seed).permutation(len(unique))
    total = max(len(groups), 1)
    split_of, fold_of = {}, {}
    cum = 0
    for j in order:
        g = unique[j]
        mid = (cum + counts[g] / 2) / total
        split_of[g] = SPLITS[min(int(np.searchsorted(bounds, mid, side="right")), 2)]
        fold_of[g] = min(int(mid * n_folds) + 1, n_folds)
        cum += counts[g]
    splits = np.array([split_of[g] for g in groups], dtype=object)
    folds = np.array([fold_of[g] for g in groups], dtype=np.int64)
    return splits, folds


def group_keys(patients: Sequence[str | None], records: Sequence[str]) -> list[str]:
    """Leakage/split key per record: the patient id, or ``record:<id>`` when the patient is unknown."""
    return [str(p) if p not in (None, "") else f"record:{r}" for p, r in zip(patients, records, strict=True)]


def fill_splits(
    patients: Sequence[str | None],
    records: Sequence[str],
    splits: Sequence[str | None],
    folds: Sequence[int | None],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[list[str], list[int]]:
    """Keep the splits a source gave; draw a patient-aware one (and folds) for records without.

    Returns:
        ``(split per record, fold per record)``; fold 0 means "no fold known" for a given split.
    """
    splits, folds = list(splits), list(folds)
    if any(not s for s in splits):
        drawn, drawn_folds = assign_splits(group_keys(patients, records), fractions, seed)
        for i, s in enumerate(splits):
            if not s:
                splits[i] = str(drawn[i])
                folds[i] = int(drawn_folds[i]) if folds[i] is None else folds[i]
    return [str(s) for s in splits], [int(f) if f is not None else 0 for f in folds]


def label_subset(labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of ``indices``, topped up so every class present keeps one positive.

    Args:
        labels: (N, K) multi-hot labels of the whole store.
        indices: candidate record indices (the training split).
        fraction: in (0, 1]; 1 returns ``indices`` unchanged.
        seed: subset seed (different seeds give different subsets).

    Returns:
        Sorted record indices.
    """
    indices = np.asarray(indices)
    if fraction >= 1.0:
        return indices
    rng = np.random.default_rng([seed, 7919])
    n = max(1, int(round(fraction * len(indices))))
    chosen = set(rng.choice(indices, size=n, replace=False).tolist())
    sub = labels[indices]
    for k in range(labels.shape[1]):
        pos = indices[sub[:, k] > 0]
        if len(pos) and not any(i in chosen for i in pos.tolist()):
            chosen.add(int(rng.choice(pos)))
    return np.array(sorted(chosen), dtype=np.int64)


def select_classes(all_names: Sequence[str], labels: np.ndarray, wanted: Sequence[str]) -> list[int]:
    """Column indices of ``wanted`` classes (all classes with a positive when empty)."""
    if not wanted:
        return [k for k in range(len(all_names)) if labels[:, k].any()]
    lookup = {n.lower(): i for i, n in enumerate(all_names)}
    missing = [w for w in wanted if w.lower() not in lookup]
    if missing:
        raise DataError(f"unknown class(es) {', '.join(missing)}; the store has {', '.join(all_names)}")
    return [lookup[w.lower()] for w in wanted]
