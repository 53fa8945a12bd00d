"""Philips Sierra ECG XML (``<restingecgdata>``, versions 1.03 and 1.04): one resting ECG per file.

The waveforms are ``<parsedwaveforms>``: all samples of lead 1, then lead 2..., as Base64 16-bit
little-endian integers, XLI-compressed (:mod:`ecgmae.data.xli`) or not, or as "Plain" text. XLI stores
leads III, aVR, aVL and aVF as residuals of I and II; they are rebuilt here as the public readers do.

Kept in ``meta``: age (in years), sex, the device (model and software, not its serial number) and the
interpretation statements. Never kept: names, patient IDs, birth dates, order numbers, operators,
clinicians, institutions or any other identifier.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.numtext import finite_number, parse_numbers
from ecgmae.data.record import LEADS_12, MAX_RECORD_VALUES, Record, RecordError, make_record, statement_lines
from ecgmae.data.xli import XliError, decode_xli
from ecgmae.data.xmlsafe import local, parse_xml
from ecgmae.errors import clip

VERSIONS = ("1.03", "1.04", "1.04.01", "1.04.02")
MAX_LEADS = 64
_AGE_UNITS = {"years": 1.0, "months": 1 / 12, "weeks": 7 / 365.25, "days": 1 / 365.25}
_SEX = {"male": "M", "female": "F"}


def _number(text: str | None, where: str, label: str) -> float | None:
    """``text`` as a finite number, None when absent or empty."""
    if text is None or not text.strip():
        return None
    return finite_number(text, where, label)


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v is not None and v.strip()), None)


def _leads(wave: ET.Element, signal: ET.Element | None, where: str) -> list[str]:
    count = _number(wave.get("numberofleads"), where, "numberofleads")
    labels = (wave.get("leadlabels") or "").split()
    if not labels:  # 1.03 files may name the acquisition instead of the leads
        acquisition = (signal.findtext("acquisitiontype") if signal is not None else None) or ""
        if acquisition.strip() not in ("STD-12", "10-WIRE"):
            raise RecordError(
                where, f"no leadlabels and acquisition type {clip(acquisition)!r}: leads unknown", "leads"
            )
        labels = list(LEADS_12)
    n = len(labels) if count is None else count
    if not (n == int(n) and 1 <= n <= min(MAX_LEADS, len(labels))):
        raise RecordError(where, f"numberofleads {n:g} with {len(labels)} lead labels (at most {MAX_LEADS})", "leads")
    return labels[: int(n)]


def _samples(fs: float, wave: ET.Element, where: str) -> int:
    duration = _number(wave.get("durationperchannel"), where, "durationperchannel")
    if duration is None or duration <= 0:
        raise RecordError(where, f"durationperchannel {wave.get('durationperchannel')!r} is not a duration", "header")
    samples = duration * fs / 1000.0
    if samples < 1 or abs(samples - round(samples)) > 1e-6 * samples:
        raise RecordError(where, f"{duration:g} ms at {fs:g} Hz is not a whole number of samples", "header")
    return int(round(samples))


def _base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise RecordError(where, f"waveform Base64 is broken or cut short ({exc})", "truncated") from None


def _uncompressed(data: bytes, leads: int, samples: int, where: str) -> np.ndarray:
    per_lead = 2 * samples
    if len(data) < leads * per_lead:
        raise RecordError(
            where,
            f"waveforms hold {len(data)} bytes, {leads} leads of {samples} samples need {leads * per_lead}",
            "truncated",
        )
    if len(data) % per_lead:
        raise RecordError(where, f"waveforms hold {len(data)} bytes: not whole leads of {samples} samples", "shape")
    return np.frombuffer(data, "<i2", count=leads * samples).reshape(leads, samples).astype(np.int64)


def _rebuild_limb_leads(x: np.ndarray, labels: list[str], where: str) -> None:
    """XLI keeps III, aVR, aVL and aVF as residuals: rebuild them in place from I and II."""
    if [lab.lower() for lab in labels[:6]] != [lab.lower() for lab in LEADS_12[:6]]:
        raise RecordError(
            where, f"XLI leads {clip(' '.join(labels))}: only I II III aVR aVL aVF first is read", "leads"
        )
    i, ii = x[0], x[1]
    x[2] = ii - i - x[2]
    x[3] = -x[3] - (i + ii) // 2
    x[4] = (i - x[2]) // 2 - x[4]
    x[5] = (ii + x[2]) // 2 - x[5]


def _waveforms(wave: ET.Element, labels: list[str], samples: int, where: str) -> np.ndarray:
    encoding = (wave.get("dataencoding") or "").strip()
    method = (wave.get("compression") or wave.get("compressmethod") or "").strip()
    compressed = bool(method) and (wave.get("compressflag") or "True").strip().lower() != "false"
    text = wave.text or ""
    if encoding == "Plain":
        if compressed:
            raise RecordError(where, f"Plain waveforms marked compressed ({clip(method)})", "unreadable")
        values = parse_numbers(text, where, "waveforms", limit=MAX_RECORD_VALUES)
        if values.size != len(labels) * samples:
            raise RecordError(
                where,
                f"waveforms hold {values.size} values, {len(labels)} leads of {samples} samples need "
                f"{len(labels) * samples}",
                "shape",
            )
        return values.reshape(len(labels), samples)
    if encoding != "Base64":
        raise RecordError(where, f"waveform encoding {clip(encoding)!r}: only Base64 and Plain are read", "unreadable")
    data = _base64(text, where)
    if not compressed:
        return _uncompressed(data, len(labels), samples, where)
    if method != "XLI":
        raise RecordError(where, f"waveform compression {clip(method)!r}: only XLI is read", "unreadable")
    try:
        x = decode_xli(data, len(labels), samples)
    except XliError as exc:
        raise RecordError(where, f"XLI waveforms: {exc}", "truncated" if exc.truncated else "unreadable") from None
    _rebuild_limb_leads(x, labels, where)
    return x


def _meta(root: ET.Element, version: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"format": "sierra", "version": version}
    patient = root.find("patient/generalpatientdata")
    if patient is not None:
        for unit, factor in _AGE_UNITS.items():  # <dateofbirth> is an identifier: never read
            text = patient.findtext(f"age/{unit}")
            try:
                age = float(text) * factor if text else None
            except ValueError:
                age = None
            if age is not None and 0 <= age < 150:
                meta["age"] = round(age, 2)
                break
        sex = _SEX.get((patient.findtext("sex") or "").strip().lower())
        if sex:
            meta["sex"] = sex
    machine = root.find("dataacquisition/machine")
    if machine is not None:  # the model and software; @machineid, a serial number, is not kept
        device = " ".join(s for s in ((machine.text or "").strip(), machine.get("detaildescription", "").strip()) if s)
        if device:
            meta["device"] = clip(device)
    statements = statement_lines(
        " ".join(((st.findtext("leftstatement") or ""), (st.findtext("rightstatement") or "")))
        for st in root.iterfind("interpretations/interpretation/statement")
    )
    if statements:
        meta["statements"] = statements
    return meta


def read_sierra(path: Path) -> Record:
    """One Philips Sierra ECG XML file (1.03, 1.04) as a :class:`Record` in mV.

    The signal is ``(samples - signaloffset) * resolution`` (resolution in µV per unit). ``meta`` keeps
    age, sex, device and interpretation statements, never names, IDs, birth dates or other identifiers.

    Raises:
        RecordError: unsafe or broken XML, an unknown version, encoding or compression, a sample count over
            ``MAX_RECORD_VALUES``, Base64 or XLI data cut short or corrupt, or a lead count that does not match.
    """
    path = Path(path)
    return sierra_record(parse_xml(path), path)


def sierra_record(root: ET.Element, path: Path) -> Record:
    """The :class:`Record` of a parsed Sierra document ``root`` read from ``path`` (see :func:`read_sierra`)."""
    where = path.name
    for el in root.iter():  # Sierra files carry a namespace (or none): match on local names
        el.tag = local(el.tag)
    if root.tag != "restingecgdata":
        raise RecordError(where, f"root element <{clip(root.tag)}> is not a Sierra <restingecgdata>", "unreadable")
    version = (root.findtext("documentinfo/documentversion") or "").strip()
    if version not in VERSIONS:
        raise RecordError(where, f"Sierra version {clip(version)!r}: only {', '.join(VERSIONS)} are read", "unreadable")
    wave = root.find("waveforms/parsedwaveforms")
    if wave is None:
        raise RecordError(where, "no <parsedwaveforms>: the file holds no waveform", "empty")
    signal = root.find("dataacquisition/signalcharacteristics")
    sig = signal if signal is not None else ET.Element("none")
    fs = _number(_first(wave.get("samplespersecond"), sig.findtext("samplingrate")), where, "sampling rate")
    if fs is None or fs <= 0:
        raise RecordError(where, "no sampling rate (samplespersecond or samplingrate)", "header")
    res = _number(
        _first(wave.get("resolution"), sig.findtext("resolution"), sig.findtext("signalresolution")),
        where,
        "resolution",
    )
    if res is None or res <= 0:
        raise RecordError(where, "no amplitude resolution (µV per unit)", "header")
    offset = _number(_first(wave.get("signaloffset"), sig.findtext("signaloffset")), where, "signaloffset") or 0.0
    labels = _leads(wave, signal, where)
    samples = _samples(fs, wave, where)
    if samples * len(labels) > MAX_RECORD_VALUES:
        raise RecordError(
            where,
            f"{len(labels)} leads of {samples} samples declared: more than the {MAX_RECORD_VALUES} values "
            "a record may hold",
            "size",
        )
    x = _waveforms(wave, labels, samples, where)
    return make_record(path.stem, x - offset, fs, labels, where, scale=res / 1000.0, meta=_meta(root, version))
