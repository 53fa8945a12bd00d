"""HL7 annotated ECG (aECG, root ``{urn:hl7-org:v3}AnnotatedECG``), the FDA's exchange format.

The waveforms are the rhythm series: ``component/series`` (code ``RHYTHM``) -> ``component/sequenceSet``
-> ``component/sequence``. One sequence is the time axis (``TIME_ABSOLUTE`` or ``TIME_RELATIVE``, whose
``increment`` gives the rate); each other is a lead (code ``MDC_ECG_LEAD_I``...) whose value (``SLIST_PQ``)
holds ``origin`` and ``scale`` with their units and ``digits``, integers separated by spaces: the lead is
``origin + scale * digits``. Representative beats and sequences that are not standard leads are not read.

Kept in ``meta``: age, sex, the device (model and manufacturer) and interpretation statements. Never
kept: names, subject and document IDs, birth times, sites, investigators or any other identifier.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.numtext import count_numbers, finite_number, parse_numbers
from ecgmae.data.record import MAX_RECORD_VALUES, Record, RecordError, make_record, statement_lines, unit_scale
from ecgmae.data.xmlsafe import local, parse_xml
from ecgmae.errors import clip

LEAD_PREFIX = "MDC_ECG_LEAD_"
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_AGE_UNITS = {"a": 1.0, "mo": 1 / 12, "wk": 7 / 365.25, "d": 1 / 365.25}


def _attr(el: ET.Element | None, name: str) -> str:
    """Attribute ``name`` of ``el`` whatever its namespace (``xsi:type``), '' when absent."""
    if el is None:
        return ""
    return next((v for k, v in el.attrib.items() if local(k) == name), "")


def _rhythm_set(root: ET.Element, where: str) -> ET.Element:
    """The first sequenceSet of the rhythm series (of the first series when none says RHYTHM)."""
    series = [s for s in root.iterfind("component/series")]
    rhythm = [s for s in series if _attr(s.find("code"), "code") == "RHYTHM"] or series[:1]
    seq_set = rhythm[0].find("component/sequenceSet") if rhythm else None
    if seq_set is None:
        raise RecordError(where, "no rhythm series (component/series/component/sequenceSet)", "empty")
    return seq_set


def _rate(seq: ET.Element, where: str) -> float:
    inc = seq.find("value/increment")
    unit = _attr(inc, "unit").strip() or "s"
    if inc is None or unit not in _TIME_UNITS:
        raise RecordError(where, f"time sequence has no increment in s or ms (unit {clip(unit)!r})", "header")
    step = finite_number(_attr(inc, "value"), where, "time increment") * _TIME_UNITS[unit]
    if step <= 0:
        raise RecordError(where, f"time increment {step:g} s is not positive", "header")
    return 1.0 / step


def _lead(value: ET.Element, where: str, name: str, limit: int) -> np.ndarray:
    """One lead in mV: ``origin + scale * digits``, the digits counted before they are parsed."""
    origin, scale = value.find("origin"), value.find("scale")
    if scale is None:
        raise RecordError(where, f"lead {name} has no scale", "header")
    mv = finite_number(_attr(scale, "value"), where, f"lead {name} scale") * unit_scale(_attr(scale, "unit"), where)
    base = 0.0
    if origin is not None:
        base = finite_number(_attr(origin, "value") or "0", where, f"lead {name} origin")
        base *= unit_scale(_attr(origin, "unit") or _attr(scale, "unit"), where)
    digits = parse_numbers(value.findtext("digits") or "", where, f"lead {name} digits", limit=limit)
    return base + mv * digits


def _meta(root: ET.Element) -> dict[str, Any]:
    meta: dict[str, Any] = {"format": "aecg"}
    for obs in root.iter("relatedObservation"):  # LOINC 21612-7: reported age
        value = obs.find("value")
        unit = _attr(value, "unit").strip()
        if _attr(obs.find("code"), "code") == "21612-7" and _attr(value, "value") and unit in _AGE_UNITS:
            try:
                age = float(_attr(value, "value")) * _AGE_UNITS[unit]
            except ValueError:
                continue
            if 0 <= age < 150:
                meta["age"] = round(age, 2)
                break
    gender = next(root.iter("administrativeGenderCode"), None)
    if _attr(gender, "code").strip().upper() in ("M", "F"):
        meta["sex"] = _attr(gender, "code").strip().upper()
    device = next(root.iter("manufacturedSeriesDevice"), None)
    if device is not None:  # model and manufacturer; the device's <id> (a serial number) is not kept
        org = next(root.iter("manufacturerOrganization"), None)
        parts = [device.findtext("manufacturerModelName"), org.findtext("name") if org is not None else None]
        text = " ".join(p.strip() for p in parts if p and p.strip())
        if text:
            meta["device"] = clip(text)
    statements = statement_lines(
        ann.findtext("value") or ""
        for ann in root.iter("annotation")
        if _attr(ann.find("code"), "code").startswith("MDC_ECG_INTERPRETATION") and ann.find("value") is not None
    )
    if statements:
        meta["statements"] = statements
    return meta


def read_aecg(path: Path) -> Record:
    """One HL7 aECG file's rhythm waveforms as a :class:`Record` in mV.

    ``meta`` keeps age, sex, device and interpretation statements, never names, IDs, birth times or other
    identifiers; sequences that are not standard leads are listed in ``meta["dropped_leads"]``.

    Raises:
        RecordError: unsafe or broken XML, no rhythm series or time increment, digits that are not numbers,
            more than ``MAX_RECORD_VALUES`` values, or leads of different lengths.
    """
    path = Path(path)
    return aecg_record(parse_xml(path), path)


def aecg_record(root: ET.Element, path: Path) -> Record:
    """The :class:`Record` of a parsed aECG document ``root`` read from ``path`` (see :func:`read_aecg`)."""
    where = path.name
    for el in root.iter():  # aECG is all in the urn:hl7-org:v3 namespace: match on local names
        el.tag = local(el.tag)
    if root.tag != "AnnotatedECG":
        raise RecordError(where, f"root element <{clip(root.tag)}> is not an HL7 <AnnotatedECG>", "unreadable")
    fs: float | None = None
    names: list[str] = []
    values: list[ET.Element] = []
    dropped: list[str] = []
    for seq in _rhythm_set(root, where).iterfind("component/sequence"):
        code = _attr(seq.find("code"), "code").strip()
        value = seq.find("value")
        if code.startswith("TIME_") and fs is None:
            fs = _rate(seq, where)
        elif code.startswith(LEAD_PREFIX) and value is not None:
            names.append(code[len(LEAD_PREFIX) :])
            values.append(value)
        else:
            dropped.append(clip(code or "(no code)", 40))
    if fs is None:
        raise RecordError(where, "no time sequence (TIME_ABSOLUTE or TIME_RELATIVE): sampling rate unknown", "header")
    if not values:
        raise RecordError(where, "no lead sequence (MDC_ECG_LEAD_...) in the rhythm series", "leads")
    counts = [count_numbers(v.findtext("digits") or "") for v in values]
    if len(set(counts)) > 1:
        listed = ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True))
        raise RecordError(where, f"leads differ in length: {clip(listed)}", "shape")
    if counts[0] * len(values) > MAX_RECORD_VALUES:
        raise RecordError(
            where,
            f"{len(values)} leads of {counts[0]} samples: more than the {MAX_RECORD_VALUES} values a record may hold",
            "size",
        )
    signal = np.stack([_lead(v, where, n, counts[0]) for n, v in zip(names, values, strict=True)])
    rec = make_record(path.stem, signal, fs, [clip(n, 40) for n in names], where, meta=_meta(root))
    if dropped:
        rec.meta["dropped_leads"] = tuple(dropped) + rec.meta.get("dropped_leads", ())
    return rec
