"""GE MUSE resting-ECG XML exports (root ``<RestingECG>``): the 10 s rhythm record, in mV.

A MUSE export holds two ``<Waveform>`` blocks: ``Median`` (one averaged beat) and ``Rhythm`` (the
recording); only ``Rhythm`` is read. Each ``<LeadData>`` carries one lead as base64 little-endian
int16 (``<WaveFormData>``) with ``<LeadAmplitudeUnitsPerBit>`` (usually 4.88) and
``<LeadAmplitudeUnits>`` (``MICROVOLTS``); the rate is ``<SampleBase>`` x 10^``<SampleExponent>``.
Carts usually store 8 leads (I, II, V1-V6); the limb leads they lack are derived by Einthoven's and
Goldberger's equations (III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2) and listed in
``meta["derived_leads"]``.

Kept in ``meta``: ``age`` (years), ``sex`` (``M``/``F``), ``statements`` (the cart's or the
over-reader's interpretation, one string per line, from ``<Diagnosis>``, else ``<OriginalDiagnosis>``)
and ``device`` (``<AcquisitionDevice>``). Nothing that identifies a patient or a visit is kept: not the
name, patient ID, date of birth, acquisition date and time, site, location, room, order or requisition
numbers, physicians (a statement line such as "Confirmed by ... on ..." is dropped), nor the free-text
reason for the test.

Safety: the XML is read by :func:`ecgmae.data.xmlsafe.parse_xml` (size bound, no entities, no external
references); every declared count is checked against ``MAX_RECORD_VALUES`` and against the length of
its base64 text before that text is decoded. Every refusal is one :class:`RecordError` line.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import numpy as np

from ecgmae.data.record import (
    LEADS_12,
    MAX_RECORD_VALUES,
    Record,
    RecordError,
    canonical_lead,
    make_record,
    rate_out_of_range,
    statement_lines,
)
from ecgmae.data.xmlsafe import local, parse_xml
from ecgmae.errors import DataError, clip

ROOT_TAG = "RestingECG"
# <LeadAmplitudeUnits> -> mV per unit
_UNITS = {"MICROVOLTS": 1e-3, "MICROVOLT": 1e-3, "UV": 1e-3, "MILLIVOLTS": 1.0, "MILLIVOLT": 1.0, "MV": 1.0}
_AGE_UNITS = {"YEARS": 1.0, "MONTHS": 1 / 12, "WEEKS": 7 / 365.25, "DAYS": 1 / 365.25, "HOURS": 1 / 8766}
_WS = re.compile(rb"\s+")
# A sign-off line names a physician and a date ("Confirmed by Smith, J. (1234) on 3/4/2021"): not kept.
# Limb leads a cart does not store, from the two it does (values in mV).
_DERIVED = {
    "III": lambda i, ii: ii - i,
    "aVR": lambda i, ii: -(i + ii) / 2,
    "aVL": lambda i, ii: i - ii / 2,
    "aVF": lambda i, ii: ii - i / 2,
}


def read_muse(path: str | Path) -> Record:
    """Read a GE MUSE XML export: the rhythm waveform, 12 leads (missing limb leads derived), in mV.

    Raises:
        RecordError: one line naming the file: unsafe or broken XML, not a MUSE export, no rhythm
            waveform, counts beyond the bounds or beyond the data, bad base64, unequal leads...
    """
    path = Path(path)
    return muse_record(parse_xml(path), path)


def muse_record(root: Element, path: Path) -> Record:
    """The :class:`Record` of a parsed MUSE document ``root`` read from ``path`` (see :func:`read_muse`)."""
    where = path.name
    if local(root.tag) != ROOT_TAG:
        raise RecordError(where, f"root element <{clip(local(root.tag), 60)}> is not a MUSE <{ROOT_TAG}>", "header")
    wave = _rhythm(root, where)
    fs = _rate(wave, where)
    leads = wave.findall("LeadData")
    if not leads:
        raise RecordError(where, "the Rhythm waveform has no <LeadData>", "empty")
    if len(leads) > len(LEADS_12) * 2:
        raise RecordError(where, f"{len(leads)} <LeadData> blocks: not a 12-lead ECG", "leads")
    signals: dict[str, np.ndarray] = {}
    names: list[str] = []
    for block in leads:
        name = (block.findtext("LeadID") or "").strip()
        if not name:
            raise RecordError(where, "a <LeadData> without <LeadID>", "leads")
        try:
            name = canonical_lead(name)
        except DataError:
            pass  # make_record drops it and lists it in meta["dropped_leads"]
        if name in signals:
            raise RecordError(where, f"lead {clip(name, 40)} appears twice", "leads")
        signals[name] = _lead(block, name, len(leads), where)
        names.append(name)
    lengths = {n: s.size for n, s in signals.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n} {k}" for n, k in lengths.items())
        raise RecordError(where, f"leads of unequal length ({clip(detail, 300)} samples)", "shape")
    derived = []
    if "I" in signals and "II" in signals:
        for name, formula in _DERIVED.items():
            if name not in signals:
                signals[name] = formula(signals["I"], signals["II"])
                derived.append(name)
    order = [n for n in LEADS_12 if n in signals] + [n for n in names if n not in LEADS_12]
    meta = _meta(root)
    if derived:
        meta["derived_leads"] = tuple(derived)
    signal = np.stack([signals[n] for n in order])
    return make_record(path.stem, signal, fs, order, where, meta=meta)


def _rhythm(root: Element, where: str) -> Element:
    waves = root.findall("Waveform")
    for wave in waves:
        if (wave.findtext("WaveformType") or "").strip().lower() == "rhythm":
            return wave
    kinds = ", ".join(clip((w.findtext("WaveformType") or "?").strip(), 30) for w in waves) or "none"
    raise RecordError(where, f"no Rhythm <Waveform> (waveforms: {kinds})", "empty")


def _number(text: str | None, what: str, where: str) -> float:
    try:
        value = float((text or "").strip())
    except ValueError:
        raise RecordError(where, f"{what} {clip(repr(text), 40)} is not a number", "header") from None
    if not math.isfinite(value):
        raise RecordError(where, f"{what} {clip(repr(text), 40)} is not finite", "header")
    return value


def _count(block: Element, tag: str, where: str, what: str) -> int | None:
    text = block.findtext(tag)
    if text is None:
        return None
    value = _number(text, f"{what}: <{tag}>", where)
    if value < 0 or value != int(value):
        raise RecordError(where, f"{what}: <{tag}> {clip(text.strip(), 40)} is not a count", "header")
    return int(value)


def _rate(wave: Element, where: str) -> float:
    base = _number(wave.findtext("SampleBase"), "<SampleBase>", where)
    exponent = _number(wave.findtext("SampleExponent") or "0", "<SampleExponent>", where)
    if base <= 0 or abs(exponent) > 6:
        raise RecordError(where, f"sampling rate {base:g} x 10^{exponent:g} Hz is not an ECG rate", "rate")
    fs = base * 10.0**exponent
    if problem := rate_out_of_range(fs):
        raise RecordError(where, f"{problem} (wrong <SampleBase>?)", "rate")
    return fs


def _lead(block: Element, name: str, n_leads: int, where: str) -> np.ndarray:
    """One lead in mV, every declared count checked before its base64 text is decoded."""
    what = f"lead {clip(name, 40)}"
    samples = _count(block, "LeadSampleCountTotal", where, what)
    nbytes = _count(block, "LeadByteCountTotal", where, what)
    size = _count(block, "LeadSampleSize", where, what) or 2
    if size != 2:
        raise RecordError(where, f"{what}: {size}-byte samples; MUSE stores 2-byte (int16) samples", "header")
    # With the derived limb leads a record holds at most 12 leads of this length.
    most = MAX_RECORD_VALUES // max(n_leads, len(LEADS_12))
    for count, unit in ((samples, "samples"), (None if nbytes is None else nbytes // size, "samples' worth of bytes")):
        if count is not None and count > most:
            raise RecordError(
                where, f"{what} declares {count} {unit}, more than the {most} a record may hold per lead", "length"
            )
    if samples is not None and nbytes is not None and nbytes != samples * size:
        raise RecordError(where, f"{what}: {nbytes} bytes declared for {samples} samples of {size} bytes", "header")
    raw = (block.findtext("WaveFormData") or "").encode("ascii", errors="replace")
    text = _WS.sub(b"", raw)
    decoded = len(text) // 4 * 3 - text[-2:].count(b"=")  # what b64decode would give, before it runs
    if len(text) % 4:
        raise RecordError(where, f"{what}: base64 text of {len(text)} characters is cut short", "truncated")
    expected = nbytes if nbytes is not None else (samples * size if samples is not None else None)
    if expected is not None and decoded != expected:
        short = "truncated: " if decoded < expected else ""
        raise RecordError(
            where, f"{what}: {short}declares {expected} bytes but its <WaveFormData> holds {decoded}", "truncated"
        )
    if decoded == 0:
        raise RecordError(where, f"{what}: no <WaveFormData>", "empty")
    if decoded % size:
        raise RecordError(where, f"{what}: {decoded} bytes is not a whole number of int16 samples", "truncated")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RecordError(where, f"{what}: invalid base64 in <WaveFormData> ({exc})", "unreadable") from None
    per_bit = _number(block.findtext("LeadAmplitudeUnitsPerBit"), f"{what}: <LeadAmplitudeUnitsPerBit>", where)
    if per_bit <= 0:
        raise RecordError(where, f"{what}: <LeadAmplitudeUnitsPerBit> {per_bit:g} is not positive", "units")
    unit = (block.findtext("LeadAmplitudeUnits") or "").strip().upper()
    if unit not in _UNITS:
        raise RecordError(
            where, f"{what}: <LeadAmplitudeUnits> {clip(repr(unit), 40)} is not MICROVOLTS or MILLIVOLTS", "units"
        )
    return np.frombuffer(data, "<i2").astype(np.float64) * (per_bit * _UNITS[unit])


def _statements(block: Element | None) -> tuple[str, ...]:
    """A diagnosis block's statements as lines: MUSE splits a line over several ``<DiagnosisStatement>``
    and marks its last one ``ENDSLINE``; a block without any flag has one statement per line."""
    if block is None:
        return ()
    items = [
        (" ".join((s.findtext("StmtText") or "").split()), [f.text or "" for f in s.findall("StmtFlag")])
        for s in block.findall("DiagnosisStatement")
    ]
    flagged = any(flags for _, flags in items)
    lines: list[str] = []
    current: list[str] = []
    for text, flags in items:
        if text:
            current.append(text)
        if not flagged or any(f.strip().upper() == "ENDSLINE" for f in flags):
            if current:
                lines.append(" ".join(current))
            current = []
    if current:
        lines.append(" ".join(current))
    return statement_lines(lines)


def _meta(root: Element) -> dict[str, Any]:
    """What the record keeps besides its signal: age, sex, statements, device (no identifiers)."""
    meta: dict[str, Any] = {"format": "muse"}
    demo = root.find("PatientDemographics")
    if demo is not None:
        try:
            age = float((demo.findtext("PatientAge") or "").strip())
            factor = _AGE_UNITS.get((demo.findtext("AgeUnits") or "YEARS").strip().upper())
            if factor is not None and math.isfinite(age) and 0 <= age * factor < 150:
                meta["age"] = round(age * factor, 3)
        except ValueError:
            pass
        sex = (demo.findtext("Gender") or "").strip().upper()
        if sex in ("MALE", "FEMALE", "M", "F"):
            meta["sex"] = sex[0]
    statements = _statements(root.find("Diagnosis")) or _statements(root.find("OriginalDiagnosis"))
    if statements:
        meta["statements"] = statements
    device = (root.findtext("TestDemographics/AcquisitionDevice") or "").strip()
    if device:
        meta["device"] = clip(device, 100)
    return meta
