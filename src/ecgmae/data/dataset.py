"""Torch datasets over a prepared store: seeded random crops for training, sliding windows for evaluation.

Every crop is a pure function of ``(seed, epoch, item)``, so results do not depend on the number of
data-loader workers or on which worker fetches an item. Items are dicts::

    x        FloatTensor (L, window)   the signal (zero-padded past the end of a short record)
    y        FloatTensor (K,)          multi-hot labels of the record
    present  BoolTensor (L,)           which leads the record really has
    index    int                       the record's position in the store
    valid    int                       samples of ``x`` that are real signal (the rest is padding)
    record   int                       (WindowDataset only) position in ``indices``, for aggregation
    start    int                       (WindowDataset only) first sample of the window
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ecgmae.data.leakage import check_no_leakage, patient_split
from ecgmae.data.record import canonical_lead
from ecgmae.data.store_reader import Store
from ecgmae.data.windows import pad_window, window_starts
from ecgmae.errors import DataError

__all__ = ["CropDataset", "WindowDataset", "check_no_leakage", "patient_split"]


def _lead_positions(store: Store, leads: Sequence[str] | None) -> np.ndarray | None:
    if leads is None:
        return None
    have = {name: i for i, name in enumerate(store.leads)}
    wanted = [canonical_lead(name) for name in leads]
    missing = [name for name in wanted if name not in have]
    if missing:
        raise DataError(f"{store.path}: lead(s) {', '.join(missing)} not in the store ({', '.join(store.leads)})")
    return np.array([have[name] for name in wanted], dtype=np.int64)


class _Base(Dataset):
    def __init__(self, store: Store, indices: Any, window: int, leads: Sequence[str] | None) -> None:
        if int(window) <= 0:
            raise DataError(f"window must be a positive number of samples, got {window}")
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(store)):
            raise DataError(f"{store.path}: indices outside 0..{len(store) - 1}")
        self.window = int(window)
        self.lead_idx = _lead_positions(store, leads)
        self.leads = store.leads if self.lead_idx is None else tuple(store.leads[i] for i in self.lead_idx)
        self._labels = torch.from_numpy(store.labels.astype(np.float32))

    def _item(self, rec: int, start: int) -> dict[str, Any]:
        x = self.store.signal(rec, start, start + self.window)
        present = self.store.present(rec)
        if self.lead_idx is not None:
            x, present = x[self.lead_idx], present[self.lead_idx]
        valid = max(0, min(self.store.valid_length(rec) - start, self.window))
        x = pad_window(x, self.window)  # window longer than the stored record: zeros after it
        return {
            "x": torch.from_numpy(x),
            "y": self._labels[rec].clone(),
            "present": torch.from_numpy(present),
            "index": rec,
            "valid": valid,
        }


def crop_start(slack: int, train: bool, key: Sequence[int]) -> int:
    """Start of a crop with ``slack`` spare samples: 0 without slack, centred for evaluation, else a
    uniform draw seeded by ``key`` (so a crop is a pure function of that key)."""
    if slack <= 0:
        return 0
    if not train:
        return slack // 2
    return int(np.random.default_rng(list(key)).integers(0, slack + 1))


class CropDataset(_Base):
    """One crop of ``window`` samples per record.

    Args:
        store: the prepared store.
        indices: store positions of the records to use (e.g. ``store.split_indices("train")``).
        window: crop length in samples.
        train: random crops (a new draw each epoch, see :meth:`set_epoch`); False: the centre crop.
        seed: seed of the random crops.
        leads: subset (and order) of the store's leads; None keeps them all.
    """

    def __init__(
        self, store: Store, indices: Any, window: int, *, train: bool, seed: int = 0, leads: Sequence[str] | None = None
    ) -> None:
        super().__init__(store, indices, window, leads)
        self.train, self.seed, self.epoch = bool(train), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new (but reproducible) crops: crop ``i`` of epoch ``e`` depends only on ``(seed, e, i)``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def start(self, i: int) -> int:
        """First sample of item ``i``'s crop (within the real signal whenever it is long enough)."""
        slack = self.store.valid_length(int(self.indices[i])) - self.window
        return crop_start(slack, self.train, [self.seed % 2**63, self.epoch, i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = i % len(self)
        return self._item(int(self.indices[i]), self.start(i))


class WindowDataset(_Base):
    """Deterministic sliding windows covering each record, for evaluation and prediction.

    The windows are :func:`ecgmae.data.windows.window_starts` (the API's and reconstruction's too): every
    ``stride`` samples, a last one aligned to the end of the real signal so that nothing is left out; a
    record shorter than ``window`` gives one zero-padded window. Each item
    carries ``record`` (its position in ``indices``) to aggregate window predictions per record.
    """

    def __init__(
        self, store: Store, indices: Any, window: int, stride: int, leads: Sequence[str] | None = None
    ) -> None:
        super().__init__(store, indices, window, leads)
        if int(stride) <= 0:
            raise DataError(f"stride must be a positive number of samples, got {stride}")
        self.stride = int(stride)
        pos, starts = [], []
        for p, rec in enumerate(self.indices):
            s = window_starts(store.valid_length(int(rec)), self.window, self.stride)
            pos.extend([p] * len(s))
            starts.extend(s)
        self._pos = np.asarray(pos, dtype=np.int64)
        self._starts = np.asarray(starts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._pos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        p, start = int(self._pos[i]), int(self._starts[i])
        item = self._item(int(self.indices[p]), start)
        item.update(record=p, start=start)
        return item
