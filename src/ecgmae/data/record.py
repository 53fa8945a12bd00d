"""One ECG record in memory and the rules every reader applies to it.

A :class:`Record` is float32 ``(leads, samples)`` in mV with canonical lead names and an explicit
rate; :func:`make_record` is the one place a raw array becomes one (lead names, units, rate range,
NaN leads). :class:`RecordError` is how any reader says a record cannot be used. Pure numpy: this
module sits under every reader, source and store.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgmae.errors import DataError, clip, safe_name

LEADS_12: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_CANON = {name.lower(): name for name in LEADS_12}
# Holter/monitoring names (MIT-BIH "MLII") and the Brazilian/European "DI, DII, DIII" convention.
_ALIASES = {
    "mli": "I",
    "mlii": "II",
    "mliii": "III",
    "di": "I",
    "dii": "II",
    "diii": "III",
    "d1": "I",
    "d2": "II",
    "d3": "III",
    "ml1": "I",
    "ml2": "II",
    "ml3": "III",
}
# Physical unit -> factor to mV. A missing unit means mV (the WFDB default).
_UNITS = {"mv": 1.0, "": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nu": 1.0}
# Sampling rates a record may declare, in Hz: below 1 Hz or above 20 kHz a header is wrong, not an ECG.
FS_RANGE: tuple[float, float] = (1.0, 20000.0)
# Most values (samples x leads) one record may hold once read: 2^28 float32 values are 1 GiB.
MAX_RECORD_VALUES = 1 << 28


def rate_out_of_range(fs: float) -> str | None:
    """The one ``FS_RANGE`` check: a message when ``fs`` (a finite positive number) is not an ECG rate, else None."""
    if FS_RANGE[0] <= fs <= FS_RANGE[1]:
        return None
    return f"sampling rate {fs:g} Hz is outside {FS_RANGE[0]:g}-{FS_RANGE[1]:g} Hz: not an ECG rate"


# Interpretation statements a record keeps (``meta["statements"]``): at most this many lines of at most
# STATEMENT_MAX_CHARS each. A line that signs the reading off names a person and a date: never kept.
MAX_STATEMENTS = 64
STATEMENT_MAX_CHARS = 500
SIGN_OFF = re.compile(
    r"^\s*(confirmed|reviewed|edited|over-?read|interpreted|referred|electronically signed|signed)\b.*\bby\b", re.I
)


def statement_lines(lines: Iterable[str]) -> tuple[str, ...]:
    """The one rule for the interpretation statements every reader keeps: whitespace collapsed, empty lines,
    sign-offs ("Confirmed by Dr X on ...") and repeats dropped, each line escaped and cut to
    ``STATEMENT_MAX_CHARS``, at most ``MAX_STATEMENTS`` lines, in order."""
    kept: list[str] = []
    for raw in lines:
        line = " ".join(str(raw).split())
        if not line or SIGN_OFF.match(line):
            continue
        line = clip(line, STATEMENT_MAX_CHARS)
        if line not in kept:
            kept.append(line)
            if len(kept) == MAX_STATEMENTS:
                break
    return tuple(kept)


class RecordError(DataError):
    """A record cannot be used. ``kind`` groups problems for the skip summary (``truncated``...)."""

    def __init__(self, where: str, problem: str, kind: str = "unreadable") -> None:
        # One line whatever the file holds: the name escaped, text from the file cut short.
        super().__init__(f"{safe_name(where)}: {clip(problem, 600)}")
        self.where, self.problem, self.kind = where, problem, kind

    def __reduce__(self) -> tuple[Any, ...]:  # survive the trip back from a worker process
        return (RecordError, (self.where, self.problem, self.kind))


@dataclass
class Record:
    """One ECG: ``signal`` is float32 ``(L, T)`` in mV with ``leads`` canonical names, sampled at ``fs`` Hz."""

    record: str
    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    labels: tuple[str, ...] = ()
    patient: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def canonical_lead(name: str) -> str:
    """Canonical name of an ECG lead (``avr`` -> ``aVR``, ``MLII`` -> ``II``, ``" V1 "`` -> ``V1``).

    Raises:
        DataError: the name is not one of the 12 standard leads or a known alias.
    """
    found = _lookup_lead(str(name))
    if found is not None:
        return found
    raise DataError(
        f"unknown lead name {name!r}; expected one of {', '.join(LEADS_12)} (any case) or MLI/MLII/MLIII/DI/DII/DIII"
    )


@functools.lru_cache(maxsize=1024)  # every lead of every record asks: cached, and bounded against odd headers
def _lookup_lead(name: str) -> str | None:
    key = re.sub(r"\s+", "", name).lower()
    key = re.sub(r"^(ecg)?(lead)?", "", key) or key
    return _CANON.get(key, _ALIASES.get(key))


def unit_scale(unit: str, where: str) -> float:
    """Factor that turns values in ``unit`` into mV; raises RecordError for non-voltage units."""
    key = unit.strip().lower()
    if key not in _UNITS:
        raise RecordError(where, f"unit {unit!r} is not a voltage (expected mV, uV or V)", "units")
    return _UNITS[key]


def make_record(
    record: str,
    signal: Any,
    fs: float,
    names: Any,
    where: str,
    *,
    scale: float | np.ndarray = 1.0,
    meta: dict[str, Any] | None = None,
    labels: tuple[str, ...] = (),
    patient: str | None = None,
    copy: bool = True,
) -> Record:
    """Validate a raw ``(L, T)`` array and wrap it in a :class:`Record` with canonical lead names.

    Args:
        record: record id.
        signal: array ``(L, T)`` in any float/int dtype.
        fs: sampling rate in Hz.
        names: lead names as written in the file (any case, aliases allowed).
        where: file name for error messages.
        scale: factor (or per-lead factors) to mV.
        meta: extra information kept on the record.
        labels: label names.
        patient: patient id, when known.
        copy: False: a float32 ``signal`` whose rows are all kept may become the record's own (the caller
            made it for this record and keeps no reference).

    Raises:
        RecordError: no standard lead, duplicate leads, no samples, bad ``fs`` or partial NaNs.
    """
    meta = dict(meta or {})
    arr = np.asarray(signal)
    if arr.ndim != 2:
        raise RecordError(where, f"expected a 2-D (leads, samples) array, got shape {arr.shape}", "shape")
    names = [str(n) for n in names]
    if len(names) != arr.shape[0]:
        raise RecordError(where, f"{arr.shape[0]} signal rows but {len(names)} lead names", "shape")
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise RecordError(where, f"sampling rate {fs!r} is not a number", "header") from None
    if not math.isfinite(fs) or fs <= 0:
        raise RecordError(where, f"sampling rate {fs} Hz is not positive", "header")
    if problem := rate_out_of_range(fs):
        raise RecordError(where, f"{problem} (wrong header?)", "rate")
    if arr.shape[1] == 0:
        raise RecordError(where, "no samples", "empty")
    keep: list[int] = []
    canon: list[str] = []
    dropped: list[str] = []
    for i, name in enumerate(names):
        try:
            lead = canonical_lead(name)
        except DataError:
            dropped.append(name)
            continue
        if lead in canon:
            raise RecordError(
                where, f"lead {lead} appears twice ({names[keep[canon.index(lead)]]!r} and {name!r})", "leads"
            )
        keep.append(i)
        canon.append(lead)
    if not keep:
        raise RecordError(where, f"no standard ECG lead among {', '.join(map(repr, names)) or 'none'}", "leads")
    scale_arr = np.broadcast_to(np.asarray(scale, dtype=np.float64), (arr.shape[0],))
    whole = not copy and keep == list(range(arr.shape[0]))
    out = np.asarray(arr if whole else arr[keep], dtype=np.float32)
    if not np.all(scale_arr[keep] == 1.0):
        out = out * scale_arr[keep].astype(np.float32)[:, None]
    finite = np.isfinite(out)
    if not finite.all():
        bad_per_lead = (~finite).sum(axis=1)
        empty = bad_per_lead == out.shape[1]
        partial = (bad_per_lead > 0) & ~empty
        if partial.any():
            bad = ", ".join(f"{canon[i]} ({bad_per_lead[i]})" for i in np.flatnonzero(partial))
            raise RecordError(where, f"{int(bad_per_lead[partial].sum())} NaN/inf samples in lead(s) {bad}", "nan")
        if empty.all():
            raise RecordError(where, "every lead is entirely NaN", "nan")
        meta["nan_leads"] = tuple(canon[i] for i in np.flatnonzero(empty))
        out = out[~empty]
        canon = [c for c, e in zip(canon, empty, strict=True) if not e]
    if dropped:
        meta["dropped_leads"] = tuple(dropped)
    return Record(record, np.ascontiguousarray(out), fs, tuple(canon), tuple(labels), patient, meta)


def lead_positions(leads: Sequence[str]) -> list[int] | None:
    """Positions of ``leads`` among the canonical 12 (None if any is not one of them)."""
    lookup = {name.lower(): i for i, name in enumerate(LEADS_12)}
    pos = [lookup.get(str(lead).lower()) for lead in leads]
    found = [p for p in pos if p is not None]
    return found if len(found) == len(pos) else None
