"""HL7 aECG: a round trip from a known signal written here, and hostile files refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgmae.data import aecg
from ecgmae.data.aecg import read_aecg
from ecgmae.data.record import LEADS_12, RecordError

FS, N = 500, 800
IDENTIFIERS = ("20044", "SMITH", "19760101", "ad4d3d80", "EKG16296", "X_TRIAL")


def known_digits(n: int = N) -> np.ndarray:
    t = np.arange(n) / FS
    beat = np.exp(-(((t % 0.8) - 0.4) ** 2) / (2 * 0.015**2))
    return np.stack(
        [np.round(a * 180 * beat + 15 * np.cos(2 * np.pi * k * t)) for k, a in enumerate(np.linspace(-1, 1.5, 12))]
    ).astype(int)


def sequence(code: str, value: str) -> str:
    return f"""<component><sequence classCode="OBS" moodCode="EVN">
      <code code="{code}" codeSystem="2.16.840.1.113883.6.24"/>
      {value}</sequence></component>"""


def lead_seq(name: str, digits, origin: str = '<origin value="0" unit="uV"/>', scale: str = "5") -> str:
    text = " ".join(map(str, digits))
    return sequence(
        f"MDC_ECG_LEAD_{name}",
        f'<value xsi:type="SLIST_PQ">{origin}<scale value="{scale}" unit="uV"/><digits>{text}</digits></value>',
    )


def aecg_xml(leads: str, *, increment: str = '<increment value="0.002" unit="s"/>', doctype: str = "") -> str:
    time = sequence(
        "TIME_ABSOLUTE", f'<value xsi:type="GLIST_TS"><head value="20081223194446.000"/>{increment}</value>'
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>{doctype}
<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" classCode="OBS">
 <id root="ad4d3d80-d165-11dd-4823-0161c6aa0029"/>
 <componentOf><timepointEvent><componentOf><subjectAssignment><subject><trialSubject><id extension="20044"/>
  <subjectDemographicPerson><name>SMITH</name><administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>
  <birthTime value="19760101"/></subjectDemographicPerson></trialSubject></subject>
  <componentOf><clinicalTrial><id extension="X_TRIAL"/></clinicalTrial></componentOf>
 </subjectAssignment></componentOf></timepointEvent></componentOf>
 <controlVariable><relatedObservation><code code="21612-7" codeSystem="2.16.840.1.113883.6.1"/>
  <value xsi:type="PQ" value="32" unit="a"/></relatedObservation></controlVariable>
 <component><series classCode="OBSSER"><code code="RHYTHM" codeSystem="2.16.840.1.113883.5.4"/>
  <author><seriesAuthor><id extension="EKG16296"/><manufacturedSeriesDevice>
  <manufacturerModelName>PageWriter Touch</manufacturerModelName>
  </manufacturedSeriesDevice>
  <manufacturerOrganization><name>Philips Medical Systems</name></manufacturerOrganization></seriesAuthor></author>
  <component><sequenceSet>{time}{leads}</sequenceSet></component>
  <subjectOf><annotationSet><component><annotation><code code="MDC_ECG_INTERPRETATION"/>
   <component><annotation><code code="MDC_ECG_INTERPRETATION_STATEMENT"/>
    <value xsi:type="ST">Sinus rhythm</value></annotation></component>
   <component><annotation><code code="MDC_ECG_INTERPRETATION_STATEMENT"/>
    <value xsi:type="ST">Normal ECG</value></annotation></component>
  </annotation></component></annotationSet></subjectOf>
 </series></component>
</AnnotatedECG>"""


def all_leads(x: np.ndarray, names=("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")) -> str:
    return "".join(lead_seq(name, row) for name, row in zip(names, x, strict=True))


def write(tmp_path: Path, text: str, name: str = "ecg.xml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def refused(path: Path, pattern: str, kind: str | None = None) -> None:
    with pytest.raises(RecordError, match=pattern) as err:
        read_aecg(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(path.name)
    if kind:
        assert err.value.kind == kind


def test_round_trip_from_a_known_signal(tmp_path: Path) -> None:
    x = known_digits()
    leads = all_leads(x) + lead_seq("V7", x[0]) + sequence("MDC_ECG_RESP", "<value/>")
    rec = read_aecg(write(tmp_path, aecg_xml(leads)))
    assert rec.leads == LEADS_12 and rec.fs == pytest.approx(FS) and rec.signal.dtype == np.float32
    np.testing.assert_allclose(rec.signal, x * 0.005, rtol=1e-6, atol=1e-9)
    assert rec.meta["dropped_leads"] == ("MDC_ECG_RESP", "V7")
    assert (rec.meta["age"], rec.meta["sex"]) == (32, "F")
    assert rec.meta["device"] == "PageWriter Touch Philips Medical Systems"
    assert rec.meta["statements"] == ("Sinus rhythm", "Normal ECG")
    assert set(rec.meta) == {"format", "age", "sex", "device", "statements", "dropped_leads"} and rec.patient is None
    assert not any(s in repr(rec) for s in IDENTIFIERS)  # subject ID, name, birth time, document ID, device ID


def test_origin_units_and_a_millisecond_increment(tmp_path: Path) -> None:
    x = known_digits()[:2]
    leads = lead_seq("I", x[0], origin='<origin value="0.1" unit="mV"/>') + lead_seq("II", x[1], origin="")
    rec = read_aecg(write(tmp_path, aecg_xml(leads, increment='<increment value="4" unit="ms"/>')))
    assert rec.fs == pytest.approx(250) and rec.leads == ("I", "II")
    np.testing.assert_allclose(rec.signal, [0.1 + x[0] * 0.005, x[1] * 0.005], rtol=1e-6)


def test_entity_bomb_is_one_line(tmp_path: Path) -> None:
    bomb = '\n<!DOCTYPE r [<!ENTITY a "1 2 3 4"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    text = aecg_xml(lead_seq("I", ["&b;"]), doctype=bomb)
    refused(write(tmp_path, text), "unsafe XML refused", "unsafe")


def test_leads_of_different_lengths_are_refused(tmp_path: Path) -> None:
    x = known_digits()
    leads = lead_seq("I", x[0]) + lead_seq("II", x[1][:-5])
    refused(write(tmp_path, aecg_xml(leads)), f"leads differ in length: I {N}, II {N - 5}", "shape")


def test_the_value_count_is_checked_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aecg, "MAX_RECORD_VALUES", 1000)
    x = known_digits()
    refused(
        write(tmp_path, aecg_xml(lead_seq("I", x[0]) + lead_seq("II", x[1]))),
        "2 leads of 800 samples: more than the 1000",
        "size",
    )


def test_digits_that_are_not_numbers_are_one_line(tmp_path: Path) -> None:
    refused(write(tmp_path, aecg_xml(lead_seq("I", ["1", "2", "x3"]))), "lead I digits is not a list of numbers")


def test_missing_time_axis_or_leads_and_bad_units_are_refused(tmp_path: Path) -> None:
    x = known_digits()
    no_time = aecg_xml(all_leads(x)).replace("TIME_ABSOLUTE", "SOMETHING_ELSE")
    refused(write(tmp_path, no_time), "no time sequence", "header")
    refused(write(tmp_path, aecg_xml("")), "no lead sequence", "leads")
    refused(write(tmp_path, aecg_xml(all_leads(x), increment='<increment value="0" unit="s"/>')), "not positive")
    refused(
        write(tmp_path, aecg_xml(lead_seq("I", x[0]).replace('unit="uV"/><digits', 'unit="mmHg"/><digits'))),
        "not a voltage",
        "units",
    )
    refused(write(tmp_path, "<restingecgdata/>"), "not an HL7 <AnnotatedECG>")
