"""EDF and EDF+ (continuous) recordings: the ECG channels of one file, read with ``edfio``.

The fixed-size header is read here first, in bounded memory: the signal count, every channel's label,
unit and samples per data record, and the number of data records are checked against the file's size
and against ``MAX_RECORD_VALUES`` before a sample is read. ``edfio`` then maps the data and reads only
the ECG channels (and only the window asked for, if any).

Kept: channels whose label is a standard lead (``ECG II``, ``II``, ``MLII``, ``ECG V1``...), which must
share one rate; others (``EDF Annotations``, SpO2, respiration...) are listed in ``meta["dropped_leads"]``.
``meta`` keeps sex, age (from the EDF+ birth and start dates, the dates themselves are not kept) and
the EDF+ equipment code; never the patient name, code or birth date, the hospital administration or
technician codes, nor plain EDF's free-text patient and recording fields.
"""

from __future__ import annotations

import datetime
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.record import MAX_RECORD_VALUES, Record, RecordError, canonical_lead, make_record, unit_scale
from ecgmae.data.safety import check_file
from ecgmae.errors import DataError, clip

ANNOTATIONS = "EDF Annotations"
_SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("unit", 8), ("pmin", 8), ("pmax", 8), ("dmin", 8),
                  ("dmax", 8), ("prefilter", 80), ("spr", 8), ("reserved", 32))  # fmt: skip


@dataclass
class EdfHeader:
    """What an EDF header says, as text fields per channel (``fields["label"][i]``...)."""

    version: str
    patient: str
    recording: str
    reserved: str
    records: int
    record_s: float
    header_bytes: int
    fields: dict[str, list[str]]


def _int(text: str, where: str, label: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise RecordError(where, f"header field {label} {clip(text.strip())!r} is not an integer", "header") from None


def _float(text: str, where: str, label: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RecordError(where, f"header field {label} {clip(text.strip())!r} is not a number", "header")
    return value


def read_header(path: Path, where: str, size: int) -> EdfHeader:
    """The header of the EDF file ``path`` (``size`` bytes), read in two bounded reads (at most 2.5 MB)."""
    with open(path, "rb") as fh:
        head = fh.read(256)
        if len(head) < 256:
            raise RecordError(where, f"{len(head)} bytes: shorter than an EDF header (256)", "truncated")
        text = head.decode("ascii", "replace")
        if head[:1] == b"\xff":
            raise RecordError(where, "a BDF (24-bit) file: only 16-bit EDF is read", "unreadable")
        ns = _int(text[252:256], where, "number of signals")  # 4 characters: at most 9999
        header_bytes = _int(text[184:192], where, "header bytes")
        if ns < 1 or header_bytes != 256 * (ns + 1):
            raise RecordError(where, f"{ns} signals with a header of {header_bytes} bytes: not an EDF header", "header")
        if size < header_bytes:
            raise RecordError(where, f"{size} bytes, less than its {header_bytes}-byte header", "truncated")
        body = fh.read(256 * ns).decode("ascii", "replace")
    fields: dict[str, list[str]] = {}
    pos = 0
    for name, width in _SIGNAL_FIELDS:
        fields[name] = [body[pos + i * width : pos + (i + 1) * width].strip() for i in range(ns)]
        pos += width * ns
    return EdfHeader(
        version=text[0:8],
        patient=text[8:88].strip(),
        recording=text[88:168].strip(),
        reserved=text[192:236].strip(),
        records=_int(text[236:244], where, "number of data records"),
        record_s=_float(text[244:252], where, "data record duration"),
        header_bytes=header_bytes,
        fields=fields,
    )


def _edfplus_date(text: str) -> datetime.date | None:
    try:
        return datetime.datetime.strptime(text.title(), "%d-%b-%Y").date()
    except ValueError:
        return None


def _meta(h: EdfHeader, dropped: list[str]) -> dict[str, Any]:
    plus = h.reserved.startswith("EDF+")
    meta: dict[str, Any] = {"format": "edf+" if plus else "edf"}
    if plus:  # subfields: code sex birthdate name | Startdate date admin-code technician equipment
        patient, recording = h.patient.split(), h.recording.split()
        if len(patient) > 1 and patient[1] in ("M", "F"):
            meta["sex"] = patient[1]
        born = _edfplus_date(patient[2]) if len(patient) > 2 else None
        start = _edfplus_date(recording[1]) if len(recording) > 1 and recording[0] == "Startdate" else None
        if born and start and born <= start:
            meta["age"] = start.year - born.year - ((start.month, start.day) < (born.month, born.day))
        if len(recording) > 4 and recording[0] == "Startdate" and recording[4] != "X":
            meta["device"] = clip(recording[4].replace("_", " "))
    if dropped:
        meta["dropped_leads"] = tuple(dropped)
    return meta


def _import_edfio() -> Any:
    try:
        import edfio
    except ImportError:
        raise DataError("reading EDF needs edfio: pip install 'ecgmae[edf]'") from None
    return edfio


def read_edf(path: Path, *, start_s: float | None = None, seconds: float | None = None) -> Record:
    """The ECG channels of one EDF/EDF+C file as a :class:`Record` in mV.

    Args:
        path: the ``.edf`` file.
        start_s: where to start reading, in seconds (default: the start).
        seconds: how much to read (default: to the end). A recording longer than ``MAX_RECORD_VALUES``
            allows (a 24-hour Holter) is refused unless a window that fits is asked for.

    Raises:
        RecordError: a header that is not EDF or disagrees with the file's size (a file cut short, or one
            declaring more data records than it holds), EDF+D or BDF, no ECG channel, ECG channels at
            different rates, a non-voltage unit or an uncalibrated channel, or more than
            ``MAX_RECORD_VALUES`` values.
    """
    path = Path(path)
    where = path.name
    size = check_file(path, where, "EDF file")
    h = read_header(path, where, size)
    if h.reserved.startswith("EDF+D"):
        raise RecordError(where, "EDF+D (discontinuous) recording: only continuous EDF/EDF+C is read", "unreadable")
    labels, spr = h.fields["label"], [_int(s, where, "samples per record") for s in h.fields["spr"]]
    record_bytes = 2 * sum(spr)
    if min(spr) < 0 or record_bytes == 0 or h.record_s <= 0:
        raise RecordError(
            where, f"data records of {h.record_s:g} s and {record_bytes} bytes: nothing to read", "header"
        )
    held, extra = divmod(size - h.header_bytes, record_bytes)
    records = held if h.records == -1 else h.records  # -1: still being written, count what is there
    if records < 0 or held < records:
        raise RecordError(
            where,
            f"header declares {h.records} data records of {record_bytes} bytes, the file holds {held}"
            + (f" and {extra} bytes" if extra else ""),
            "truncated",
        )
    keep, dropped = [], []
    for i, label in enumerate(labels):
        try:
            canonical_lead(label)
            keep.append(i)
        except DataError:
            dropped.append(clip(label or "(no label)", 40))
    if not keep:
        raise RecordError(where, f"no ECG channel among {clip(', '.join(map(repr, labels)))}", "leads")
    rates = {labels[i]: spr[i] / h.record_s for i in keep}
    if len(set(rates.values())) > 1:
        listed = ", ".join(f"{k} {v:g} Hz" for k, v in rates.items())
        raise RecordError(where, f"ECG channels have different rates: {clip(listed)}", "rate")
    fs = rates[labels[keep[0]]]
    scales = [unit_scale(h.fields["unit"][i], where) for i in keep]
    for i in keep:
        d = (
            _float(h.fields["dmin"][i], where, "digital minimum"),
            _float(h.fields["dmax"][i], where, "digital maximum"),
        )
        p = (
            _float(h.fields["pmin"][i], where, "physical minimum"),
            _float(h.fields["pmax"][i], where, "physical maximum"),
        )
        if d[0] >= d[1] or p[0] == p[1]:
            raise RecordError(where, f"channel {labels[i]!r}: digital {d[0]:g}..{d[1]:g}, physical {p[0]:g}..{p[1]:g}: "
                              "cannot be calibrated", "header")  # fmt: skip
    if not all(math.isfinite(v) for v in (start_s or 0.0, seconds or 0.0)):
        raise RecordError(where, f"window start_s={start_s}, seconds={seconds} is not a number", "empty")
    total = records * spr[keep[0]]
    first = round((start_s or 0.0) * fs)
    count = total - first if seconds is None else min(round(seconds * fs), total - first)
    if first < 0 or count <= 0:
        raise RecordError(
            where, f"window from {start_s or 0:g} s for {seconds} s: outside the {total / fs:g} s held", "empty"
        )
    if count * len(keep) > MAX_RECORD_VALUES:
        raise RecordError(
            where,
            f"{len(keep)} ECG channels of {count} samples: more than the {MAX_RECORD_VALUES} values a record may "
            "hold (read a window: start_s, seconds)",
            "size",
        )
    edfio = _import_edfio()
    ordinary = [i for i, label in enumerate(labels) if label != ANNOTATIONS]  # edfio's .signals skip annotations
    rows = []
    try:
        with warnings.catch_warnings():  # the checks above stand in for edfio's warnings
            warnings.simplefilter("ignore")
            edf = edfio.read_edf(path, lazy_load_data=True)
            for i, scale in zip(keep, scales, strict=True):
                sig = edf.signals[ordinary.index(i)]
                data = sig.get_data_slice(first / fs, (first + count) / fs)
                if sig.label != labels[i] or data.size != count:
                    raise RecordError(where, f"channel {labels[i]!r} reads as {data.size} samples, {count} expected")
                rows.append((data * scale).astype(np.float32))
    except (OSError, ValueError) as exc:
        raise RecordError(where, f"unreadable EDF ({type(exc).__name__}: {exc})") from None
    meta = _meta(h, dropped)
    if start_s is not None or seconds is not None:
        meta["window_s"] = (first / fs, count / fs)
    return make_record(path.stem, np.stack(rows), fs, [labels[i] for i in keep], where, meta=meta)
