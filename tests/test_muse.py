"""GE MUSE XML: the real export and crafted ones read right; hostile ones are refused in one line each."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from ecgmae.data.io import RecordError, read_record
from ecgmae.data.muse import read_muse
from test_hostile_inputs import _one_line

PER_BIT = 4.88  # uV per bit, as MUSE writes


def lead_block(
    name: str,
    x: np.ndarray,
    *,
    count: int | None = None,
    nbytes: int | None = None,
    data: str | None = None,
    units: str = "MICROVOLTS",
    per_bit: float = PER_BIT,
) -> str:
    raw = np.asarray(x, "<i2").tobytes()
    text = base64.b64encode(raw).decode() if data is None else data
    return (
        f"<LeadData><LeadByteCountTotal>{len(raw) if nbytes is None else nbytes}</LeadByteCountTotal>"
        f"<LeadSampleCountTotal>{len(x) if count is None else count}</LeadSampleCountTotal>"
        f"<LeadAmplitudeUnitsPerBit>{per_bit}</LeadAmplitudeUnitsPerBit>"
        f"<LeadAmplitudeUnits>{units}</LeadAmplitudeUnits><LeadID>{name}</LeadID><LeadSampleSize>2</LeadSampleSize>"
        f"<WaveFormData>\n{text}\n</WaveFormData></LeadData>"
    )


def muse_xml(blocks: list[str], *, fs: str = "500", kind: str = "Rhythm", head: str = "", extra: str = "") -> str:
    """A MUSE-shaped document: demographics, one waveform of ``blocks``, and ``extra`` before it."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{head}<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n'
        if not head
        else f'<?xml version="1.0" encoding="UTF-8"?>\n{head}\n'
    ) + (
        "<RestingECG><PatientDemographics><PatientID>123456</PatientID><PatientAge>64</PatientAge>"
        "<AgeUnits>YEARS</AgeUnits><DateofBirth>01-02-1960</DateofBirth><Gender>FEMALE</Gender>"
        "<PatientLastName>Doe</PatientLastName></PatientDemographics>"
        "<TestDemographics><AcquisitionDevice>MAC5500</AcquisitionDevice><AcquisitionDate>03-04-2021</AcquisitionDate>"
        f"</TestDemographics>{extra}<Waveform><WaveformType>{kind}</WaveformType><SampleBase>{fs}</SampleBase>"
        f"<SampleExponent>0</SampleExponent>{''.join(blocks)}</Waveform></RestingECG>"
    )


def eight_leads(n: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.integers(-400, 400, n).astype(np.int16) for name in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    }


def write(tmp_path: Path, text: str, name: str = "ecg.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, *parts: str, kind: str | None = None) -> str:
    with pytest.raises(RecordError) as err:
        read_record(path)
    _one_line(str(err.value), path.name, *parts)
    if kind:
        assert err.value.kind == kind, (err.value.kind, str(err.value))
    return str(err.value)


# ---------------------------------------------------------------------------------- the real exports
def test_the_real_muse_export_reads_as_twelve_leads_with_its_statements() -> None:
    path = shared_path("hospital-formats", "guangxi_teaching_sinus_rhythm.xml")
    rec = read_record(path)
    assert rec.record == "guangxi_teaching_sinus_rhythm" and rec.fs == 500.0
    assert rec.leads == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    assert rec.signal.shape == (12, 5000) and rec.signal.dtype == np.float32  # 10 s
    assert rec.meta["derived_leads"] == ("III", "aVR", "aVL", "aVF")
    # "sinus rhythm", "ST elevation (suggests early repolarisation)": the confirmed <Diagnosis>
    assert rec.meta["statements"] == ("窦性心律", "ST段抬高（提示心室早期复极）")
    assert rec.meta["age"] == 11 and rec.meta["sex"] == "M" and rec.meta["device"] == "MAC P"
    assert rec.meta["format"] == "muse"
    # Amplitudes are mV: 4.88 uV steps, and an R wave of about 1 mV in lead II.
    assert 0.5 < float(np.abs(rec.signal[1]).max()) < 3.0
    steps = rec.signal[[0, 1, 6]] / 0.00488
    assert np.allclose(steps, np.round(steps), atol=1e-3)


def test_nothing_identifying_is_kept() -> None:
    rec = read_muse(shared_path("hospital-formats", "synthetic_muse.xml"))
    assert set(rec.meta) == {"format", "age", "sex", "statements", "device", "derived_leads"}
    text = repr(rec.meta) + repr(rec.patient)
    for identifier in ("SYNTH0001", "Synthetic", "Example", "1980", "08-17-2025", "EXAMPLE HOSPITAL"):
        assert identifier not in text
    assert rec.meta["statements"] == ("Sinus rhythm (synthetic example)",) and rec.patient is None


# ---------------------------------------------------------------------------------- crafted exports
def test_limb_leads_are_derived_from_i_and_ii(tmp_path: Path) -> None:
    leads = eight_leads()
    rec = read_record(write(tmp_path, muse_xml([lead_block(n, x) for n, x in leads.items()])))
    i, ii = (leads[n].astype(np.float64) * PER_BIT / 1000 for n in ("I", "II"))
    want = {"I": i, "II": ii, "III": ii - i, "aVR": -(i + ii) / 2, "aVL": i - ii / 2, "aVF": ii - i / 2}
    for name, x in want.items():
        np.testing.assert_allclose(rec.signal[rec.leads.index(name)], x, atol=1e-6)
    np.testing.assert_allclose(rec.signal[rec.leads.index("V4")], leads["V4"] * PER_BIT / 1000, atol=1e-6)
    assert rec.meta["age"] == 64 and rec.meta["sex"] == "F" and rec.meta["device"] == "MAC5500"


def test_stored_limb_leads_are_kept_and_millivolts_scale(tmp_path: Path) -> None:
    leads = eight_leads(200) | {"III": np.full(200, 7, np.int16), "AVR": np.full(200, -3, np.int16)}
    blocks = [lead_block(n, x, units="MILLIVOLTS", per_bit=0.01) for n, x in leads.items()]
    rec = read_record(write(tmp_path, muse_xml(blocks, fs="250")))
    assert rec.fs == 250 and rec.meta["derived_leads"] == ("aVL", "aVF")
    np.testing.assert_allclose(rec.signal[rec.leads.index("III")], 0.07, atol=1e-6)
    np.testing.assert_allclose(rec.signal[rec.leads.index("aVR")], -0.03, atol=1e-6)


def test_statements_are_joined_into_lines_as_muse_flags_them(tmp_path: Path) -> None:
    def stmt(text: str, *flags: str) -> str:
        return (
            "<DiagnosisStatement>"
            + "".join(f"<StmtFlag>{f}</StmtFlag>" for f in flags)
            + f"<StmtText>{text}</StmtText></DiagnosisStatement>"
        )

    diagnosis = (
        "<Diagnosis>"
        + stmt("Sinus rhythm", "ENDSLINE")
        + stmt("with 1st degree")
        + stmt("A-V block", "ENDSLINE")
        + stmt("Abnormal ECG", "ENDSLINE")
        + stmt("Confirmed by Smith, John (1234) on 3/4/2021 10:11:12 AM", "USERINSERT", "ENDSLINE")
        + "</Diagnosis>"
        "<OriginalDiagnosis>" + stmt("Unconfirmed", "ENDSLINE") + "</OriginalDiagnosis>"
    )
    rec = read_record(write(tmp_path, muse_xml([lead_block("II", np.zeros(100))], extra=diagnosis)))
    # the sign-off line names a physician and a date: dropped
    assert rec.meta["statements"] == ("Sinus rhythm", "with 1st degree A-V block", "Abnormal ECG")
    only_original = "<OriginalDiagnosis>" + stmt("Atrial fibrillation") + stmt("Low voltage") + "</OriginalDiagnosis>"
    rec = read_record(write(tmp_path, muse_xml([lead_block("II", np.zeros(100))], extra=only_original)))
    assert rec.meta["statements"] == ("Atrial fibrillation", "Low voltage")  # no flags: one statement each


def test_median_beat_only_and_other_roots_are_refused(tmp_path: Path) -> None:
    blocks = [lead_block("I", np.zeros(600))]
    refused(write(tmp_path, muse_xml(blocks, kind="Median")), "no Rhythm <Waveform> (waveforms: Median)", kind="empty")
    refused(
        write(tmp_path, '<?xml version="1.0"?><CardiologyXML><x/></CardiologyXML>', "other.xml"),
        "unsupported XML export (root <CardiologyXML>)",
    )
    refused(write(tmp_path, "<RestingECG><Waveform>", "cut.xml"), "not well-formed XML")


@pytest.mark.parametrize(
    ("fs", "problem"), [("0.5", "sampling rate 0.5 Hz is outside"), ("abc", "<SampleBase> 'abc' is not a number")]
)
def test_a_bad_sample_base_is_refused(tmp_path: Path, fs: str, problem: str) -> None:
    refused(write(tmp_path, muse_xml([lead_block("I", np.zeros(100))], fs=fs)), problem)


def test_an_unknown_amplitude_unit_is_refused(tmp_path: Path) -> None:
    refused(
        write(tmp_path, muse_xml([lead_block("I", np.zeros(100), units="FURLONGS")])),
        "'FURLONGS' is not MICROVOLTS",
        kind="units",
    )


# ------------------------------------------------------------------------------------ hostile exports
def test_leads_of_unequal_length_are_refused(tmp_path: Path) -> None:
    blocks = [lead_block("I", np.zeros(1000)), lead_block("II", np.zeros(999))]
    refused(write(tmp_path, muse_xml(blocks)), "leads of unequal length (I 1000, II 999 samples)", kind="shape")


def test_truncated_base64_is_refused(tmp_path: Path) -> None:
    x = np.arange(1000, dtype=np.int16)
    text = base64.b64encode(x.tobytes()).decode()
    refused(
        write(tmp_path, muse_xml([lead_block("I", x, data=text[:-3])])),
        "lead I: base64 text of 2665 characters is cut short",
        kind="truncated",
    )
    # cut on a 4-character boundary: valid base64, but shorter than declared
    refused(
        write(tmp_path, muse_xml([lead_block("I", x, data=text[:2000])])),
        "lead I: truncated: declares 2000 bytes but its <WaveFormData> holds 1500",
        kind="truncated",
    )


def test_invalid_base64_is_refused(tmp_path: Path) -> None:
    x = np.arange(1000, dtype=np.int16)
    text = base64.b64encode(x.tobytes()).decode()
    bad = "!@#$" + text[4:]
    refused(
        write(tmp_path, muse_xml([lead_block("I", x, data=bad)])),
        "lead I: invalid base64 in <WaveFormData>",
        kind="unreadable",
    )


def test_a_declared_sample_count_of_a_trillion_is_refused(tmp_path: Path) -> None:
    x = np.zeros(100, np.int16)
    path = write(tmp_path, muse_xml([lead_block("I", x, count=10**12, nbytes=2 * 10**12)]))
    refused(
        path, "lead I declares 1000000000000 samples, more than the 22369621 a record may hold per lead", kind="length"
    )


@pytest.mark.parametrize("which", ["entity-bomb", "external-entity"])
def test_entities_in_a_muse_export_are_refused(tmp_path: Path, which: str) -> None:
    from test_xmlsafe import BOMB, EXTERNAL

    path = write(
        tmp_path,
        MUSE_BOMB
        if which == "entity-bomb"
        else EXTERNAL.replace("&secret;", "&secret;" + lead_block("I", np.zeros(10))),
    )
    assert BOMB  # the same bomb as the parser's own test, in a MUSE document here
    msg = refused(path, "unsafe XML refused", kind="unsafe")
    assert "root:" not in msg


# A billion laughs inside a MUSE document: nine levels of ten, 10^9 "lol"s (3 GB) if expanded.
MUSE_BOMB = muse_xml(
    [lead_block("I", np.zeros(10)).replace("<LeadID>I</LeadID>", "<LeadID>&lol9;</LeadID>")],
    head='<!DOCTYPE RestingECG [\n <!ENTITY lol "lol">\n'
    + "\n".join(f' <!ENTITY lol{k} "{("&lol" + (str(k - 1) if k > 2 else "") + ";") * 10}">' for k in range(2, 10))
    + "\n]>",
)
