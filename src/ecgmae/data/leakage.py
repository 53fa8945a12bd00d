"""Store-aware split checks: a fresh patient-aware split of a store, and the patient leakage check
between a pre-training store and a downstream split. The array work is in :mod:`ecgmae.data.splits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecgmae.data.splits import SPLITS, assign_splits, group_keys
from ecgmae.data.store_reader import Store
from ecgmae.errors import DataError


def patient_split(store: Store, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, np.ndarray]:
    """A fresh patient-aware split of a whole store: ``{"train": idx, "val": idx, "test": idx}``."""
    keys = group_keys(store.index["patient"].tolist(), store.index["record"].tolist())
    splits, _ = assign_splits(keys, fractions, seed)
    return {s: np.flatnonzero(splits == s) for s in SPLITS}


def _open(store: Store | str | Path) -> Store:
    return store if isinstance(store, Store) else Store.open(store)


def shared_patients(
    store_a: Store | str | Path,
    store_b: Store | str | Path,
    split_b: str = "test",
    splits_a: str | Sequence[str] | None = None,
) -> list[str]:
    """Patients (record ids where no patient id is known) of ``store_b``'s ``split_b`` that also appear in
    ``store_a``, or in its ``splits_a`` when given; sorted."""
    a, b = _open(store_a), _open(store_b)
    if isinstance(splits_a, str):
        splits_a = (splits_a,)
    idx_a = np.arange(len(a)) if splits_a is None else np.concatenate([a.split_indices(s) for s in splits_a])
    idx_b = b.split_indices(split_b)
    keys_a = set(group_keys(a.index["patient"].iloc[idx_a].tolist(), a.index["record"].iloc[idx_a].tolist()))
    keys_b = set(group_keys(b.index["patient"].iloc[idx_b].tolist(), b.index["record"].iloc[idx_b].tolist()))
    return sorted(keys_a & keys_b)


def check_no_leakage(
    store_a: Store | str | Path,
    store_b: Store | str | Path,
    split_b: str = "test",
    split_a: str | Sequence[str] | None = None,
) -> None:
    """Raise if a patient of ``store_b``'s ``split_b`` also appears in ``store_a`` (or its ``split_a``).

    Use it before fine-tuning on ``store_b`` an encoder pre-trained on ``store_a``. Records without a
    patient id are compared by record id. ``ecgmae finetune`` applies it (see :func:`pretraining_leakage`).

    Raises:
        DataError: listing (up to 10 of) the shared patients.
    """
    shared = shared_patients(store_a, store_b, split_b, split_a)
    if shared:
        a, b = _open(store_a), _open(store_b)
        where_a = a.path.name + (
            f" split(s) '{','.join([split_a] if isinstance(split_a, str) else split_a)}'" if split_a else ""
        )
        raise DataError(
            f"{len(shared)} patient(s) of {b.path.name} split '{split_b}' also appear in {where_a}: "
            f"{', '.join(shared[:10])}{' ...' if len(shared) > 10 else ''}"
        )


def pretraining_leakage(
    pretrain_store: str | None, pretrain_splits: Sequence[str] | None, store: Store, split: str = "test"
) -> dict[str, object]:
    """Whether patients of ``store``'s ``split`` were among an encoder's pre-training records.

    ``pretrain_store`` and ``pretrain_splits`` come from the encoder's header (``data.store``,
    ``train.config.splits``). Returns ``{"checked", "pretrain_store", "pretrain_splits", "shared_patients",
    "examples"}``; ``checked`` is False when the pre-training store is no longer there to compare with.
    """
    out: dict[str, object] = {
        "checked": False,
        "pretrain_store": pretrain_store,
        "pretrain_splits": list(pretrain_splits) if pretrain_splits else None,
        "split": split,
        "shared_patients": None,
        "examples": [],
    }
    if not pretrain_store or not (Path(pretrain_store) / "meta.json").is_file():
        return out
    try:
        shared = shared_patients(pretrain_store, store, split, tuple(pretrain_splits) if pretrain_splits else None)
    except DataError:
        return out  # a store that cannot be read any more (moved, damaged): not checkable, not an error here
    out.update(checked=True, shared_patients=len(shared), examples=shared[:10])
    return out
