"""EDF/EDF+: ECG channels read from files edfio writes here from a known signal, and hostile headers refused
in one line before any data is read."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest

from ecgmae.data import edf as edf_module
from ecgmae.data.edf import read_edf
from ecgmae.data.record import RecordError

edfio = pytest.importorskip("edfio", reason="edfio is the optional 'edf' extra")

FS, SECONDS = 500, 10
IDENTIFIERS = ("MCH-0234567", "Haagse", "1951", "EMG561", "BK/JOP")


def known_uv(k: int, fs: int = FS, seconds: int = SECONDS) -> np.ndarray:
    """Integer µV: what a 16-bit EDF channel with gain 1 holds exactly."""
    t = np.arange(fs * seconds) / fs
    beat = np.exp(-(((t % 0.8) - 0.4) ** 2) / (2 * 0.015**2))
    return np.round((k + 1) * 300 * beat + 40 * np.sin(2 * np.pi * (k + 1) * t))


def channel(label: str, data: np.ndarray, fs: float = FS, unit: str = "uV"):
    gain = 1e-3 if unit == "mV" else 1.0  # one digital step is 1 µV either way
    return edfio.EdfSignal(
        data,
        fs,
        label=label,
        physical_dimension=unit,
        physical_range=(-32768 * gain, 32767 * gain),
        digital_range=(-32768, 32767),
    )


def write_edf(path: Path, signals: list, annotations: bool = True) -> Path:
    rec = edfio.Edf(
        signals,
        patient=edfio.Patient(code="MCH-0234567", sex="F", birthdate=datetime.date(1951, 8, 2), name="Haagse_Harry"),
        recording=edfio.Recording(
            startdate=datetime.date(2002, 3, 2),
            hospital_administration_code="EMG561",
            investigator_technician_code="BK/JOP",
            equipment_code="Holter_3000",
        ),
        data_record_duration=1,
        annotations=[edfio.EdfAnnotation(0.5, None, "lights on")] if annotations else None,
    )
    rec.write(path)
    return path


def standard(tmp_path: Path, name: str = "holter.edf") -> Path:
    return write_edf(
        tmp_path / name,
        [
            channel("ECG I", known_uv(0)),
            channel("SpO2", np.full(SECONDS, 97.0), fs=1, unit="%"),
            channel("ECG II", known_uv(1)),
            channel("MLIII", known_uv(2) / 1000, unit="mV"),
        ],
    )


def refused(path: Path, pattern: str, kind: str | None = None, **kw) -> None:
    with pytest.raises(RecordError, match=pattern) as err:
        read_edf(path, **kw)
    assert "\n" not in str(err.value) and str(err.value).startswith(path.name)
    if kind:
        assert err.value.kind == kind


def patch(path: Path, offset: int, text: str) -> Path:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(text)] = text.encode()
    path.write_bytes(bytes(data))
    return path


def test_ecg_channels_round_trip_and_others_are_dropped(tmp_path: Path) -> None:
    rec = read_edf(standard(tmp_path))
    assert rec.leads == ("I", "II", "III") and rec.fs == FS and rec.signal.shape == (3, FS * SECONDS)
    expected = np.stack([known_uv(0), known_uv(1), known_uv(2)]) / 1000
    np.testing.assert_allclose(rec.signal, expected, rtol=1e-6, atol=1e-5)  # 1 % of a 1 µV step
    assert rec.meta["dropped_leads"] == ("SpO2", "EDF Annotations")
    assert (rec.meta["format"], rec.meta["sex"], rec.meta["age"], rec.meta["device"]) == (
        "edf+",
        "F",
        50,
        "Holter 3000",
    )
    assert set(rec.meta) == {"format", "sex", "age", "device", "dropped_leads"} and rec.patient is None
    assert not any(s in repr(rec) for s in IDENTIFIERS)  # patient code and name, birth date, admin/technician codes


def test_a_window_reads_only_what_is_asked(tmp_path: Path) -> None:
    rec = read_edf(standard(tmp_path), start_s=2.5, seconds=3)
    assert rec.signal.shape == (3, 1500) and rec.meta["window_s"] == (2.5, 3.0)
    np.testing.assert_allclose(rec.signal[1], known_uv(1)[1250:2750] / 1000, rtol=1e-6, atol=1e-7)
    refused(tmp_path / "holter.edf", "outside the 10 s held", "empty", start_s=12)


def test_a_recording_over_the_value_limit_is_refused_unless_windowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edf_module, "MAX_RECORD_VALUES", 6000)  # a 24 h Holter at 1 kHz is 260 M values
    path = standard(tmp_path)
    refused(path, "3 ECG channels of 5000 samples: more than the 6000 values .* start_s, seconds", "size")
    assert read_edf(path, seconds=4).signal.shape == (3, 2000)


def test_a_header_declaring_far_more_records_than_the_file_holds(tmp_path: Path) -> None:
    path = patch(standard(tmp_path), 236, "99999999")
    refused(path, "header declares 99999999 data records of 3024 bytes, the file holds 10", "truncated")


def test_a_truncated_file_is_one_line(tmp_path: Path) -> None:
    path = standard(tmp_path)
    path.write_bytes(path.read_bytes()[:-1000])
    refused(path, "declares 10 data records of 3024 bytes, the file holds 9 and 2024 bytes", "truncated")
    path.write_bytes(path.read_bytes()[:600])
    refused(path, "less than its 1536-byte header", "truncated")
    path.write_bytes(b"0       ")
    refused(path, "shorter than an EDF header", "truncated")


def test_ecg_channels_at_different_rates_are_refused(tmp_path: Path) -> None:
    path = write_edf(tmp_path / "x.edf", [channel("ECG I", known_uv(0)), channel("ECG V1", known_uv(1, fs=250), 250)])
    refused(path, "different rates: ECG I 500 Hz, ECG V1 250 Hz", "rate")


def test_no_ecg_channel_a_bad_unit_and_a_bad_header(tmp_path: Path) -> None:
    refused(write_edf(tmp_path / "a.edf", [channel("Resp", known_uv(0))]), "no ECG channel among 'Resp'", "leads")
    refused(write_edf(tmp_path / "b.edf", [channel("ECG I", known_uv(0), unit="mmHg")]), "not a voltage", "units")
    path = patch(write_edf(tmp_path / "c.edf", [channel("ECG I", known_uv(0))], annotations=False), 252, "9999")
    refused(path, "9999 signals with a header of 512 bytes", "header")
    path = patch(write_edf(tmp_path / "d.edf", [channel("ECG I", known_uv(0))], annotations=False), 192, "EDF+D")
    refused(path, "EDF\\+D", "unreadable")


def test_an_uncalibrated_channel_is_refused(tmp_path: Path) -> None:
    path = write_edf(tmp_path / "e.edf", [channel("ECG I", known_uv(0))], annotations=False)
    patch(path, 256 + 120, "32767   ")  # one signal: its digital minimum follows 120 bytes of other fields
    refused(path, "channel 'ECG I': digital 32767..32767, physical -32768..32767: cannot be calibrated", "header")
