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


def patient_split(store: Store, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
                  ) -> dict[str, np.ndarray]:
    """A fresh patient-aware split of a whole store: ``{"train": idx, "val": idx, "test": idx}``."""
    keys = group_keys(store.index["patient"].tolist(), store.index["record"].tolist())
    splits, _ = assign_splits(keys, fractions, seed)
    return {s: np.flatnonzero(splits == s) for s in SPLITS}


def _open(store: Store | str | Path) -> Store:
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
