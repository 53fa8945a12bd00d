"""DICOM ECG: the real file reads as its MUSE original does; crafted and hostile files are refused in one line."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import shared_path
from ecgmae.data.io import read_record
from ecgmae.errors import DataError
from test_muse import refused

pydicom = pytest.importorskip("pydicom", reason="DICOM tests need pydicom (pip install 'ecgmae[dicom]')")

LSB = 4.88e-3  # mV per bit in both files
LEADS_12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def real_dcm(name: str = "guangxi_teaching_sinus_rhythm") -> Path:
    return shared_path("hospital-formats", f"{name}.dcm")


def rewrite(tmp_path: Path, change: Any, name: str = "x.dcm") -> Path:
    """The real file read by pydicom, changed by ``change(ds)`` and written back with pydicom's writer."""
    ds = pydicom.dcmread(real_dcm())
    change(ds)
    out = tmp_path / name
    ds.save_as(out)
    return out


# ------------------------------------------------------------------------------------ the real files
def test_the_real_dicom_reads_as_twelve_leads_of_ten_seconds() -> None:
    rec = read_record(real_dcm())
    assert rec.record == "guangxi_teaching_sinus_rhythm" and rec.fs == 500 and rec.leads == LEADS_12
    assert rec.signal.shape == (12, 5000)  # the Rhythm group, not the 600-sample median beat
    assert rec.meta == {"format": "dicom", "age": 11.0, "sex": "M", "device": "GE Healthcare MAC P"}
    assert rec.patient is None  # Patient ID 000001 is in the file: never read


@pytest.mark.parametrize("name", ["guangxi_teaching_sinus_rhythm", "synthetic_muse"])
def test_muse_xml_and_its_dicom_give_the_same_signal(name: str) -> None:
    """Both store int16 counts of 4.88 uV. Leads I, II, V1-V6 (stored in both) and III (II - I is exact in
    counts) agree to float32 rounding (1e-6 mV). The DICOM stores aVR, aVL and aVF as int16 counts that
    its converter rounded from -(I + II)/2, I - II/2 and II - I/2, which MUSE leaves to the reader (done
    here in floating point): they differ by at most half a count (2.44 uV) and no more."""
    xml = read_record(shared_path("hospital-formats", f"{name}.xml"))
    dcm = read_record(real_dcm(name))
    assert xml.leads == dcm.leads == LEADS_12 and xml.fs == dcm.fs and xml.signal.shape == dcm.signal.shape
    diff = np.abs(xml.signal.astype(np.float64) - dcm.signal)
    exact = [LEADS_12.index(n) for n in ("I", "II", "III", "V1", "V2", "V3", "V4", "V5", "V6")]
    assert diff[exact].max() < 1e-6
    rounded = [LEADS_12.index(n) for n in ("aVR", "aVL", "aVF")]
    assert diff[rounded].max() <= LSB / 2 + 1e-6
    assert diff[rounded].max() > 1e-4  # the rounding is real: this tolerance is needed, not slack


# ------------------------------------------------------------------------------------- crafted files
def test_the_rhythm_group_is_picked_whatever_its_position(tmp_path: Path) -> None:
    def swap(ds: Any) -> None:
        ds.WaveformSequence = pydicom.Sequence(list(reversed(ds.WaveformSequence)))

    assert read_record(rewrite(tmp_path, swap)).signal.shape == (12, 5000)


def test_scpecg_codes_meanings_and_millivolt_units(tmp_path: Path) -> None:
    def change(ds: Any) -> None:
        channels = ds.WaveformSequence[0].ChannelDefinitionSequence
        channels[0].ChannelSourceSequence[0].CodeValue = "5.6.3-9-2"  # SCP-ECG lead II ...
        channels[1].ChannelSourceSequence[0].CodeValue = "5.6.3-9-1"  # ... and lead I, swapped
        channels[3].ChannelSourceSequence[0].CodeValue = "X-1"  # unknown code: "aVR, augmented voltage, right"
        for ch in channels:
            ch.ChannelSensitivity = 0.001
            ch.ChannelSensitivityUnitsSequence[0].CodeValue = "mV"

    rec = read_record(rewrite(tmp_path, change))
    ref = read_record(real_dcm())
    assert rec.leads == ("II", "I", *LEADS_12[2:])
    np.testing.assert_allclose(rec.signal, ref.signal, atol=1e-6)  # same rows, in mV from 0.001 mV x 4.88


def test_text_annotations_are_statements_without_sign_offs(tmp_path: Path) -> None:
    def change(ds: Any) -> None:
        for text in ("Sinus rhythm", "Normal ECG", "Electronically signed by Dr X on 2024-01-01"):
            note = pydicom.Dataset()
            note.UnformattedTextValue = text
            ds.WaveformAnnotationSequence.append(note)

    assert read_record(rewrite(tmp_path, change)).meta["statements"] == ("Sinus rhythm", "Normal ECG")


def test_units_that_are_not_voltage_are_refused(tmp_path: Path) -> None:
    def change(ds: Any) -> None:
        ds.WaveformSequence[0].ChannelDefinitionSequence[0].ChannelSensitivityUnitsSequence[0].CodeValue = "mmHg"

    refused(rewrite(tmp_path, change), "unit 'mmHg' is not a voltage", kind="units")


def test_a_file_without_a_waveform_is_refused(tmp_path: Path) -> None:
    def strip(ds: Any) -> None:
        del ds.WaveformSequence

    refused(rewrite(tmp_path, strip), "no waveform in this DICOM file (modality ECG)", kind="empty")


def test_a_file_that_is_not_dicom_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.dcm"
    path.write_bytes(b"\x89PNG\r\n" + bytes(500))
    refused(path, "not a DICOM file", kind="unreadable")


def test_a_file_over_the_size_bound_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ecgmae.data import dicom_ecg

    monkeypatch.setattr(dicom_ecg, "DICOM_MAX_BYTES", 100_000)
    refused(real_dcm(), "DICOM file is 143308 bytes, more than the 100000", kind="size")


def test_missing_pydicom_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(DataError, match=r"^reading DICOM ECG \(\.dcm\) needs pydicom: pip install 'ecgmae\[dicom\]'$"):
        read_record(real_dcm())


# ------------------------------------------------------------------------------------ hostile files
def huge_waveform(tmp_path: Path) -> Path:
    """NumberOfWaveformSamples 2^31 (x 12 channels: 49 GB as float64) over 1000 bytes of WaveformData."""

    def change(ds: Any) -> None:
        group = ds.WaveformSequence[0]
        group.NumberOfWaveformSamples = 2**31
        group.WaveformData = group.WaveformData[:1000]

    return rewrite(tmp_path, change, "huge.dcm")


def test_a_huge_declared_waveform_is_refused(tmp_path: Path) -> None:
    refused(huge_waveform(tmp_path), "waveform declares 2147483648 samples x 12 channels, more than", kind="length")


def test_a_waveform_longer_than_its_data_is_refused(tmp_path: Path) -> None:
    def change(ds: Any) -> None:
        ds.WaveformSequence[0].NumberOfWaveformSamples = 6000  # 5000 stored

    refused(
        rewrite(tmp_path, change),
        "waveform declares 6000 samples x 12 channels (144000 bytes) but WaveformData holds 120000 bytes",
        kind="truncated",
    )


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    data = real_dcm().read_bytes()
    for cut in (len(data) // 2, len(data) - 1000):
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        refused(path, "truncated: an element runs past the end of the file", kind="truncated")


def long_length(tmp_path: Path) -> Path:
    """The real file with its WaveformSequence's length set to 4 GB: a reader that believes it allocates 4 GB."""
    data = bytearray(real_dcm().read_bytes())
    at = data.find(b"\x00\x54\x00\x01SQ")  # (5400,0100) WaveformSequence, explicit VR little endian
    assert at > 0
    data[at + 8 : at + 12] = struct.pack("<I", 0xFFFFFFF0)
    path = tmp_path / "longlen.dcm"
    path.write_bytes(bytes(data))
    return path


def test_a_length_field_past_the_end_is_refused(tmp_path: Path) -> None:
    refused(long_length(tmp_path), "truncated: an element runs past the end of the file", kind="truncated")
