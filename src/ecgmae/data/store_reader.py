"""A prepared corpus on disk: its layout and :class:`Store`, the reader (``prepare_store`` in
:mod:`ecgmae.data.store` writes one; import ``Store`` from there).

Layout of ``STORE/``::

    signals.npy   (total_samples, leads) float16 | int16 | float32, every record's preprocessed signal
                  one after the other along time (memory-mapped when read)
    index.csv     one row per record: record, patient, source, split, fold, offset, length, valid,
                  scale, labels (;-separated), present (one 0/1 character per lead), age, sex, file
    labels.npy    (N, K) uint8 multi-hot, columns = meta["label_names"]
    meta.json     fs, leads, units, "preprocessing" dict, label names, counts, versions, fingerprint
    skipped.csv   record, file, kind, message for every record that was not prepared

``length`` is the stored length (at least ``seconds * fs``: short records are zero-padded), ``valid``
the part that is real signal. int16 values are ``value * scale`` (``scale`` per record). The store is
built in ``STORE.tmp-*`` and renamed into place, so a crash never leaves a half store, and preparing
the same inputs with the same options again is a no-op (the fingerprint in meta.json matches).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.signal import PreprocessConfig
from ecgmae.data.splits import SPLITS
from ecgmae.errors import DataError
from ecgmae.utils import unescape_table

STORE_FORMAT = 1
SIGNALS, INDEX, LABELS, META, SKIPPED = "signals.npy", "index.csv", "labels.npy", "meta.json", "skipped.csv"
_NPY_HEADER = 256  # bytes reserved for the .npy header so the file can be written in one stream


class Store:
    """Read access to a prepared store; cheap to pickle (the memmap is reopened in each process)."""

    def __init__(self, path: Path, meta: dict[str, Any], index: Any, labels: np.ndarray) -> None:
        self.path, self.meta, self.index, self.labels = Path(path), meta, index, labels
        self._offsets = index["offset"].to_numpy(np.int64)
        self._lengths = index["length"].to_numpy(np.int64)
        self._valid = index["valid"].to_numpy(np.int64)
        self._scale = index["scale"].to_numpy(np.float32)
        n_leads = len(meta["leads"])
        present = np.array([list(p) for p in index["present"]], dtype="U1").reshape(len(index), n_leads)
        self._present = present == "1"
        self._int16 = meta["dtype"] == "int16"
        self._signals: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open ``path``; DataError when it is not a complete store of this format."""
        import pandas as pd

        path = Path(path)
        try:
            meta = json.loads((path / META).read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: not a prepared store (no {META}); run `ecgmae prepare`") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path / META}: unreadable ({exc})") from None
        if meta.get("format") != STORE_FORMAT:
            raise DataError(
                f"{path}: store format {meta.get('format')!r}, this ecgmae reads {STORE_FORMAT}; prepare it again"
            )
        try:
            index = unescape_table(pd.read_csv(path / INDEX, dtype=str, keep_default_na=False))
            labels = np.load(path / LABELS)
            signals = np.load(path / SIGNALS, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: damaged store ({exc})") from None
        for col in ("fold", "offset", "length", "valid"):
            index[col] = index[col].astype(np.int64)
        index["scale"] = index["scale"].astype(np.float64)
        index["age"] = pd.to_numeric(index["age"], errors="coerce")
        n, k = len(index), len(meta["label_names"])
        if labels.shape != (n, k):
            raise DataError(f"{path}: labels.npy has shape {labels.shape}, expected ({n}, {k})")
        end = int((index["offset"] + index["length"]).max()) if n else 0
        if signals.ndim != 2 or signals.shape[1] != len(meta["leads"]) or signals.shape[0] < end:
            raise DataError(f"{path}: signals.npy has shape {signals.shape}, index needs ({end}, {len(meta['leads'])})")
        return cls(path, meta, index, labels)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_signals"] = None
        return state

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, records={len(self)}, fs={self.fs:g}, leads={len(self.leads)})"

    @property
    def fs(self) -> float:
        """Sampling rate of the stored signals."""
        return float(self.meta["fs"])

    @property
    def leads(self) -> tuple[str, ...]:
        """Lead order of every stored signal."""
        return tuple(self.meta["leads"])

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of the label matrix columns."""
        return tuple(self.meta["label_names"])

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing the signals went through (apply it to new records at inference)."""
        return PreprocessConfig.from_dict(self.meta["preprocessing"], where=f"{self.path / META}: preprocessing")

    def _array(self) -> np.ndarray:
        if self._signals is None:
            self._signals = np.load(self.path / SIGNALS, mmap_mode="r")
        return self._signals

    def length(self, i: int) -> int:
        """Stored samples of record ``i`` (including padding)."""
        return int(self._lengths[i])

    def valid_length(self, i: int) -> int:
        """Samples of record ``i`` that are real signal (the rest is zero padding)."""
        return int(self._valid[i])

    def signal(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Record ``i`` (or samples ``start:stop`` of it) as float32 ``(L, n)``; only that slice is read."""
        n = int(self._lengths[i])
        stop = n if stop is None else max(0, min(int(stop), n))
        start = max(0, min(int(start), stop))
        off = int(self._offsets[i])
        block = self._array()[off + start : off + stop]
        out = np.ascontiguousarray(block.T, dtype=np.float32)
        if self._int16:
            out *= self._scale[i]
        return out

    def present(self, i: int) -> np.ndarray:
        """Which of :attr:`leads` record ``i`` really has, ``(L,)`` bool."""
        return self._present[i].copy()

    def all_present(self, indices: Any = None) -> bool:
        """True when every record (of ``indices``, or the whole store) has every lead."""
        present = self._present if indices is None else self._present[np.asarray(indices, dtype=np.int64)]
        return bool(present.all())

    def split_indices(self, split: str) -> np.ndarray:
        """Positions of the records in ``split`` (train, val or test)."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.index["split"].to_numpy() == split)
