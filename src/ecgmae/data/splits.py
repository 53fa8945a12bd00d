"""Patient-aware splits and the leakage check between a pre-training store and a downstream test split.

No torch here: ``dataset.py`` re-exports these for training code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ecgmae.errors import DataError

if TYPE_CHECKING:
    from ecgmae.data.store import Store

SPLITS: tuple[str, ...] = ("train", "val", "test")


def assign_splits(groups: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                  n_folds: int = 10) -> tuple[np.ndarray, np.ndarray]:
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


def fill_splits(patients: Sequence[str | None], records: Sequence[str], splits: Sequence[str | None],
                folds: Sequence[int | None], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
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


def patient_split(store: Store, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
                  ) -> dict[str, np.ndarray]:
    """A fresh patient-aware split of a whole store: ``{"train": idx, "val": idx, "test": idx}``."""
    keys = group_keys(store.index["patient"].tolist(), store.index["record"].tolist())
    splits, _ = assign_splits(keys, fractions, seed)
    return {s: np.flatnonzero(splits == s) for s in SPLITS}


def _open(store: Store | str | Path) -> Store:
    from ecgmae.data.store import Store

    return store if isinstance(store, Store) else Store.open(store)


def check_no_leakage(store_a: Store | str | Path, store_b: Store | str | Path, split_b: str = "test",
                     split_a: str | None = None) -> None:
    """Raise if a patient of ``store_b``'s ``split_b`` also appears in ``store_a`` (or its ``split_a``).

    Use it before fine-tuning on ``store_b`` an encoder pre-trained on ``store_a``. Records without a
    patient id are compared by record id.

    Raises:
        DataError: listing (up to 10 of) the shared patients.
    """
    a, b = _open(store_a), _open(store_b)
    idx_a = np.arange(len(a)) if split_a is None else a.split_indices(split_a)
    idx_b = b.split_indices(split_b)
    keys_a = set(group_keys(a.index["patient"].iloc[idx_a].tolist(), a.index["record"].iloc[idx_a].tolist()))
    keys_b = set(group_keys(b.index["patient"].iloc[idx_b].tolist(), b.index["record"].iloc[idx_b].tolist()))
    shared = sorted(keys_a & keys_b)
    if shared:
        where_a = a.path.name + (f" split '{split_a}'" if split_a else "")
        raise DataError(f"{len(shared)} patient(s) of {b.path.name} split '{split_b}' also appear in {where_a}: "
                        f"{', '.join(shared[:10])}{' ...' if len(shared) > 10 else ''}")
