"""A record in the model's input space: input checks and the stored preprocessing, applied once.

A raw record (an array, a :class:`~ecgmae.data.record.Record`, or a row of a prepared store) becomes a
:class:`Prepared` (the model's leads, rate and units) here; models only ever see windows of those
(:mod:`ecgmae.data.windows`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecgmae.data.record import Record, canonical_lead
from ecgmae.data.signal import PreprocessConfig, check_fs, map_leads, preprocess, resampled_length
from ecgmae.data.store_reader import Store
from ecgmae.errors import DataError
from ecgmae.utils import log


@dataclass
class Prepared:
    """One record in the model's input space.

    Attributes:
        name: record id (for messages and outputs).
        x: ``(len(cfg.leads), T)`` float32 after preprocessing, zero rows for absent leads and zero
            padding after ``valid``.
        present: ``(len(cfg.leads),)`` bool, which model leads the record really has.
        valid: samples of ``x`` that are real signal.
    """

    name: str
    x: np.ndarray
    present: np.ndarray
    valid: int


def check_leads(leads: Sequence[str] | None, n_rows: int, model_leads: Sequence[str], name: str) -> list[str]:
    """Canonical names of the ``n_rows`` rows of a signal (default: the model's leads, in order)."""
    if leads is None:
        if n_rows != len(model_leads):
            raise DataError(
                f"{name}: {n_rows} rows but the model's {len(model_leads)} leads are "
                f"{', '.join(model_leads)}; pass leads=[...] naming each row"
            )
        return list(model_leads)
    if isinstance(leads, str):
        leads = [n.strip() for n in leads.split(",")]
    leads = list(leads)
    if len(leads) != n_rows:
        raise DataError(f"{name}: {n_rows} rows but {len(leads)} lead names ({', '.join(map(str, leads))})")
    try:
        canon = [canonical_lead(n) for n in leads]
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None
    dup = sorted({n for n in canon if canon.count(n) > 1})
    if dup:
        raise DataError(f"{name}: lead(s) {', '.join(dup)} given twice (names {', '.join(map(str, leads))})")
    known = [n for n in canon if n in model_leads]
    if not known:
        raise DataError(
            f"{name}: none of its leads ({', '.join(canon)}) is one the model knows ({', '.join(model_leads)})"
        )
    extra = [n for n in canon if n not in model_leads]
    if extra:
        log.info(
            "%s: ignoring lead(s) %s (the model was trained on %s)", name, ", ".join(extra), ", ".join(model_leads)
        )
    return canon


def check_signal(signal: Any, name: str) -> np.ndarray:
    """A finite, non-empty float32 ``(leads, samples)`` array, or a DataError saying what is wrong."""
    try:
        x = np.asarray(signal, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: not a numeric array ({exc})") from None
    if x.ndim == 1:
        raise DataError(
            f"{name}: 1-D array of {x.shape[0]} samples; pass (leads, samples), e.g. signal[None] with leads=['II']"
        )
    if x.ndim != 2:
        raise DataError(f"{name}: expected a (leads, samples) array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{name}: no leads (shape {x.shape})")
    if x.shape[1] == 0:
        raise DataError(f"{name}: empty record (0 samples)")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)).tolist()
        raise DataError(
            f"{name}: {int(bad.sum())} NaN/inf sample(s) in row(s) {rows[:12]}; fill or drop them "
            "first (a lead that is entirely missing: leave its row out and name the others)"
        )
    return x


def prepare_signal(
    signal: Any, fs: Any, leads: Sequence[str] | None, cfg: PreprocessConfig, *, name: str = "signal"
) -> Prepared:
    """Check one raw record (mV, channel-first) and apply the stored preprocessing ``cfg`` to it.

    Raises:
        DataError: naming ``name`` and what is wrong (shape, lead names, rate, NaNs, empty record).
    """
    x = check_signal(signal, name)
    rate = check_fs(fs, cfg.fs, name)
    canon = check_leads(leads, x.shape[0], cfg.leads, name)
    try:
        out, present = preprocess(x, rate, canon, cfg)
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None
    valid = min(resampled_length(x.shape[1], rate, cfg.fs), out.shape[1])
    return Prepared(name, out, present, valid)


def prepare_record(cfg: PreprocessConfig, rec: Record) -> Prepared:
    """:func:`prepare_signal` of a :class:`~ecgmae.data.record.Record` (a picklable worker transform)."""
    return prepare_signal(rec.signal, rec.fs, rec.leads, cfg, name=rec.record)


def from_store(store: Store, i: int, leads: Sequence[str]) -> Prepared:
    """Record ``i`` of a prepared store (already preprocessed) mapped onto the model's ``leads``."""
    x = store.signal(i)
    mapped, have = map_leads(x, store.leads, leads)
    pres, _ = map_leads(store.present(i)[:, None].astype(np.float32), store.leads, leads)
    present = have & (pres[:, 0] > 0)
    return Prepared(str(store.index["record"].iloc[i]), mapped, present, store.valid_length(i))


# ------------------------------------------------------------------------------ API arguments
def _to_numpy(x: Any) -> Any:
    torch = sys.modules.get("torch")  # a tensor means torch is loaded; this module never imports it
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return x


def split_inputs(signal: Any, fs: Any, leads: Sequence[str] | None) -> tuple[list[tuple[str, Any, Any, Any]], bool]:
    """What the API's ``signal, fs, leads`` arguments hold: ``[(name, array, fs, leads), ...]``, and whether a
    single record was given."""
    if isinstance(signal, Record):
        return [_from_record(signal, fs, leads)], True
    if isinstance(signal, (list, tuple)):
        if not signal:
            raise DataError("no records given (empty list)")
        if all(isinstance(s, Record) or np.ndim(_to_numpy(s)) == 2 for s in signal):
            records = list(signal)
        else:
            records = None  # a nested list of numbers: one array
    else:
        signal = _to_numpy(signal)
        records = list(signal) if isinstance(signal, np.ndarray) and signal.ndim == 3 else None
    if records is None:
        if fs is None:
            raise DataError("fs is required: the sampling rate of the signal in Hz")
        return [("signal", _to_numpy(signal), fs, leads)], True
    n = len(records)
    rates = list(fs) if isinstance(fs, (list, tuple, np.ndarray)) else [fs] * n
    if len(rates) != n:
        raise DataError(f"{n} records but {len(rates)} sampling rates")
    out = []
    for i, (rec, rate) in enumerate(zip(records, rates, strict=True)):
        if isinstance(rec, Record):
            out.append(_from_record(rec, rate, leads))
        elif rate is None:
            raise DataError("fs is required: the sampling rate of the signals in Hz")
        else:
            out.append((f"record {i}", _to_numpy(rec), rate, leads))
    return out, False


def _from_record(rec: Record, fs: Any, leads: Sequence[str] | None) -> tuple[str, Any, Any, Any]:
    if fs is not None and abs(float(fs) - rec.fs) > 1e-6 * rec.fs:
        raise DataError(f"{rec.record}: fs={fs} given but the record says {rec.fs:g} Hz")
    if leads is not None:
        raise DataError(f"{rec.record}: a Record names its own leads; do not pass leads=")
    return rec.record, rec.signal, rec.fs, rec.leads
