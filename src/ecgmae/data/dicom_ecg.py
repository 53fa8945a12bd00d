"""DICOM ECG waveforms (12-lead and general ECG storage, ``.dcm``), read with ``pydicom``, in mV.

A DICOM ECG holds one or more multiplex groups in ``WaveformSequence``: typically the rhythm record
(``WaveformOriginality`` ORIGINAL) and a median beat (DERIVED). The longest ORIGINAL group that is not
labelled a median or average beat is read. Lead names come from each channel's
``ChannelSourceSequence`` code (MDC ``2:1`` ..., SCPECG ``5.6.3-9-1`` ...), else its code meaning
(``Lead I``, ``aVR, augmented voltage, right``). Values are ``raw x ChannelSensitivity x
ChannelSensitivityCorrectionFactor + ChannelBaseline`` in the unit of
``ChannelSensitivityUnitsSequence`` (uV, mV or V), converted to mV here.

Kept in ``meta``: ``age`` (years, from ``PatientAge``), ``sex`` (``PatientSex``), ``device``
(manufacturer and model) and ``statements`` (free-text waveform annotations, the interpretation some
carts write there, sign-off lines dropped). Nothing that identifies a patient or a visit is kept: not
the name, patient ID, birth date, study/series/instance UIDs, dates and times, institution, physicians
or operators.

Safety: the file is checked (a regular file of at most ``DICOM_MAX_BYTES``) and read into memory once,
so a length field that claims gigabytes reads only what the file holds; only the elements listed in
``_TAGS`` are parsed (others are skipped unread); a value cut short by the end of the file is refused;
each group's declared ``NumberOfWaveformSamples`` x channels is checked against ``MAX_RECORD_VALUES``
and against the bytes of its ``WaveformData`` before pydicom decodes it. Nothing a file names
(another file, a URL) is ever opened. ``pydicom`` is the optional extra ``ecgmae[dicom]``.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.record import (
    MAX_RECORD_VALUES,
    Record,
    RecordError,
    canonical_lead,
    make_record,
    rate_out_of_range,
    statement_lines,
    unit_scale,
)
from ecgmae.data.safety import check_file
from ecgmae.errors import DataError, clip

# A 10 s 12-lead DICOM ECG is about 150 kB; 256 MiB holds hours of 12-lead int16 at 500 Hz.
DICOM_MAX_BYTES = 256 << 20
# The only top-level elements parsed; everything else (names, IDs, dates, UIDs...) is skipped unread.
_TAGS = (
    "SOPClassUID",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "PatientAge",
    "PatientSex",
    "WaveformSequence",
    "WaveformAnnotationSequence",
)
# Lead codes: MDC (ISO/IEEE 11073, "2:<n>") and SCP-ECG ("5.6.3-9-<n>") share the lead numbers.
_LEAD_NUMBERS = {1: "I", 2: "II", 61: "III", 62: "aVR", 63: "aVL", 64: "aVF"} | {n: f"V{n - 2}" for n in range(3, 9)}
_CODE_RE = re.compile(r"^(?:2:|5\.6\.3-9-)(\d+)$")
_AGE_RE = re.compile(r"^(\d{1,3})([DWMY])$")
_AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_BITS = {8: "SB UB", 16: "SS US", 32: "SL UL", 64: "SV UV"}  # what pydicom's waveform handler decodes


def import_pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise DataError("reading DICOM ECG (.dcm) needs pydicom: pip install 'ecgmae[dicom]'") from None
    return pydicom


class _Whole(io.BytesIO):
    """The file's bytes; notes a read that the end of the file cut short (a truncated element)."""

    cut = False

    def read(self, n: int | None = -1) -> bytes:
        out = super().read(n)
        if n is not None and n > 0 and 0 < len(out) < n:
            self.cut = True
        return out


def read_dicom(path: str | Path) -> Record:
    """Read the rhythm waveform of a DICOM ECG file as a :class:`Record` in mV.

    Raises:
        RecordError: one line naming the file: not a regular file or too large, not DICOM, truncated,
            no waveform, declared sizes beyond the bounds or the data, unknown units or leads.
        DataError: pydicom is not installed.
    """
    pydicom = import_pydicom()
    path = Path(path)
    where = path.name
    check_file(path, where, "DICOM file", max_bytes=DICOM_MAX_BYTES)
    with open(path, "rb") as fh:
        buf = _Whole(fh.read(DICOM_MAX_BYTES + 1))
    if len(buf.getbuffer()) > DICOM_MAX_BYTES:
        raise RecordError(where, f"DICOM file is more than the {DICOM_MAX_BYTES} bytes an ECG needs", "size")
    try:
        ds = pydicom.dcmread(buf, specific_tags=list(_TAGS))
        groups = list(ds.get("WaveformSequence") or ())  # a sequence is parsed when first used
    except pydicom.errors.InvalidDicomError:
        raise RecordError(where, "not a DICOM file (no 'DICM' marker after the preamble)", "unreadable") from None
    except Exception as exc:  # pydicom raises many types for a corrupt file; the message is what helps
        if buf.cut:
            raise RecordError(where, "truncated: an element runs past the end of the file", "truncated") from None
        raise RecordError(where, f"unreadable DICOM ({type(exc).__name__}: {exc})") from None
    if buf.cut:
        raise RecordError(where, "truncated: an element runs past the end of the file", "truncated")
    if not groups:
        kind = clip(str(ds.get("Modality", "") or "?"), 20)
        raise RecordError(where, f"no waveform in this DICOM file (modality {kind}): not an ECG", "empty")
    index = _pick(groups, where)
    group = groups[index]
    fs = _check_group(group, where)
    names = [_lead_name(ch, k) for k, ch in enumerate(group.ChannelDefinitionSequence)]
    factor, base = _scales(group, names, where)
    from pydicom.waveforms.numpy_handler import multiplex_array

    raw = multiplex_array(ds, index, as_raw=True)  # (samples, channels), integers; sizes checked above
    signal = raw.T.astype(np.float32)
    signal *= factor[:, None]
    signal += base[:, None]
    return make_record(path.stem, signal, fs, names, where, meta=_meta(ds))


def _label(group: Any) -> str:
    return f"{group.get('MultiplexGroupLabel', '') or ''}".strip().lower()


def _pick(groups: list[Any], where: str) -> int:
    """The rhythm group: ORIGINAL before DERIVED, never a median/average beat when another exists, longest."""

    def length(g: Any) -> float:
        try:
            return float(g.get("NumberOfWaveformSamples", 0) or 0) / float(g.get("SamplingFrequency", 1) or 1)
        except (TypeError, ValueError, ZeroDivisionError):
            return 0.0

    def beat(g: Any) -> bool:
        return any(w in _label(g) for w in ("median", "average", "template"))

    ranked = sorted(
        range(len(groups)),
        key=lambda i: (
            beat(groups[i]),
            str(groups[i].get("WaveformOriginality", "")).upper() != "ORIGINAL",
            -length(groups[i]),
        ),
    )
    return ranked[0]


def _int(group: Any, keyword: str, where: str) -> int:
    value = group.get(keyword)
    if value is None:
        raise RecordError(where, f"waveform group lacks {keyword}", "header")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RecordError(where, f"{keyword} {clip(repr(value), 40)} is not a number", "header") from None


def _check_group(group: Any, where: str) -> float:
    """The rate of a group, its declared size checked against the bounds and its data."""
    n_ch = _int(group, "NumberOfWaveformChannels", where)
    n_samp = _int(group, "NumberOfWaveformSamples", where)
    bits = _int(group, "WaveformBitsAllocated", where)
    interp = str(group.get("WaveformSampleInterpretation", "")).strip()
    if n_ch <= 0 or n_samp <= 0:
        raise RecordError(where, f"waveform of {n_samp} samples x {n_ch} channels is empty", "empty")
    if interp not in _BITS.get(bits, "").split():
        raise RecordError(
            where, f"{bits}-bit samples of interpretation {clip(repr(interp), 10)}: not a supported encoding", "header"
        )
    if n_ch * n_samp > MAX_RECORD_VALUES:
        raise RecordError(
            where,
            f"waveform declares {n_samp} samples x {n_ch} channels, more than the {MAX_RECORD_VALUES} values "
            "a record may hold",
            "length",
        )
    held = len(group.get("WaveformData", b"") or b"")
    need = n_ch * n_samp * bits // 8
    if held < need:
        raise RecordError(
            where,
            f"waveform declares {n_samp} samples x {n_ch} channels ({need} bytes) but WaveformData holds {held} bytes",
            "truncated",
        )
    channels = group.get("ChannelDefinitionSequence") or ()
    if len(channels) != n_ch:
        raise RecordError(where, f"{n_ch} channels declared but {len(channels)} channel definitions", "header")
    try:
        fs = float(group.get("SamplingFrequency"))
    except (TypeError, ValueError):
        raise RecordError(where, "waveform group has no valid SamplingFrequency", "header") from None
    if not math.isfinite(fs) or fs <= 0 or rate_out_of_range(fs):
        raise RecordError(where, f"sampling rate {fs:g} Hz is not an ECG rate (wrong SamplingFrequency?)", "rate")
    return fs


def _lead_name(channel: Any, k: int) -> str:
    """A channel's lead name: canonical from its code when known, else the code meaning as written."""
    source = (channel.get("ChannelSourceSequence") or [None])[0]
    if source is None:
        return f"channel {k + 1}"
    match = _CODE_RE.match(str(source.get("CodeValue", "")).strip())
    if match and int(match.group(1)) in _LEAD_NUMBERS:
        return _LEAD_NUMBERS[int(match.group(1))]
    meaning = str(source.get("CodeMeaning", "") or f"channel {k + 1}").strip()
    first = meaning.split(",")[0]  # "aVR, augmented voltage, right"
    try:
        return canonical_lead(first)
    except DataError:
        return clip(meaning, 60)  # make_record drops it and lists it in meta["dropped_leads"]


def _scales(group: Any, names: list[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: mV per raw unit and the baseline in mV."""
    factor, base = [], []
    for name, ch in zip(names, group.ChannelDefinitionSequence, strict=True):
        what = f"channel {clip(name, 40)}"
        try:
            sens = float(ch.get("ChannelSensitivity"))
            corr = float(ch.get("ChannelSensitivityCorrectionFactor", 1.0) or 1.0)
            baseline = float(ch.get("ChannelBaseline", 0.0) or 0.0)
        except (TypeError, ValueError):
            raise RecordError(where, f"{what}: no valid ChannelSensitivity (unknown units)", "units") from None
        units = (ch.get("ChannelSensitivityUnitsSequence") or [None])[0]
        code = str(units.get("CodeValue", "")).strip() if units is not None else ""
        if not code:
            raise RecordError(where, f"{what}: no ChannelSensitivityUnitsSequence (unknown units)", "units")
        scale = unit_scale(code, where)
        if not all(math.isfinite(v) for v in (sens, corr, baseline)) or sens * corr == 0:
            raise RecordError(where, f"{what}: sensitivity {sens:g} x {corr:g} is not a usable scale", "units")
        factor.append(sens * corr * scale)
        base.append(baseline * scale)
    return np.array(factor, np.float32), np.array(base, np.float32)


def _meta(ds: Any) -> dict[str, Any]:
    """Age, sex, device and annotation statements; no identifiers (they are not even parsed)."""
    meta: dict[str, Any] = {"format": "dicom"}
    age = _AGE_RE.match(str(ds.get("PatientAge", "") or "").strip().upper())
    if age:
        meta["age"] = round(int(age.group(1)) * _AGE_UNITS[age.group(2)], 3)
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    if sex in ("M", "F"):
        meta["sex"] = sex
    device = " ".join(str(ds.get(k, "") or "").strip() for k in ("Manufacturer", "ManufacturerModelName")).strip()
    if device:
        meta["device"] = clip(device, 100)
    statements = statement_lines(
        str(note.get("UnformattedTextValue", "") or "") for note in ds.get("WaveformAnnotationSequence") or ()
    )
    if statements:
        meta["statements"] = statements
    return meta
