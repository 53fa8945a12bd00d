"""Philips Sierra XML: round trips from a known signal (uncompressed, XLI, Plain) and hostile files refused
in one line. No real Sierra file is shipped: the fixtures are written here, XLI by a small encoder written
from the format's public description (and checked against the ``sierraecg`` package's decoder by hand)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from ecgmae.data.record import LEADS_12, RecordError
from ecgmae.data.sierra import read_sierra
from ecgmae.data.xli import XliError, decode_deltas, decode_xli, lzw_decode

FS, N = 500, 1000
IDENTIFIERS = ("MRN-0042", "Doe", "Jane", "SN-777", "ORD-9", "Dr Who")


def lzw_encode(data: bytes) -> bytes:
    """10-bit LZW as XLI writes it: MSB first, table frozen at 1023 entries, code 1023 ends the chunk."""
    table = {bytes([i]): i for i in range(256)}
    codes: list[int] = []
    w = b""
    for c in data:
        wc = w + bytes([c])
        if wc in table:
            w = wc
            continue
        codes.append(table[w])
        if len(table) <= 1022:
            table[wc] = len(table)
        w = bytes([c])
    codes += [table[w]] if w else []
    bits = "".join(format(c, "010b") for c in [*codes, 1023])
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def xli_chunk(samples: np.ndarray, *, payload: bytes | None = None) -> bytes:
    """One XLI lead chunk holding ``samples`` (or a given decompressed ``payload``)."""
    out = [int(v) for v in samples]
    first = 2 * out[1] - out[0] - out[2]
    if payload is None:
        codes = [out[0], out[1]] + [2 * out[i] - out[i - 1] - out[i + 1] + 64 for i in range(2, len(out) - 1)] + [0]
        u = [c & 0xFFFF for c in codes]
        payload = bytes([c >> 8 for c in u] + [c & 0xFF for c in u])
    comp = lzw_encode(payload)
    return len(comp).to_bytes(4, "little") + (1).to_bytes(2, "little") + first.to_bytes(2, "little", signed=True) + comp


def residuals(x: np.ndarray) -> np.ndarray:
    """What XLI stores for leads III, aVR, aVL, aVF: the inverse of the reader's rebuild."""
    r = x.astype(np.int64).copy()
    i, ii, iii = x[0], x[1], x[2]
    r[2] = ii - i - iii
    r[3] = -x[3] - (i + ii) // 2
    r[4] = (i - iii) // 2 - x[4]
    r[5] = (ii + iii) // 2 - x[5]
    return r


def known_signal(n: int = N) -> np.ndarray:
    """(12, n) integers (units of 5 µV): smooth ECG-like leads with the limb leads consistent."""
    t = np.arange(n) / FS
    beat = np.exp(-(((t % 0.8) - 0.4) ** 2) / (2 * 0.015**2))
    x = np.stack(
        [
            np.round(a * 160 * beat + 20 * np.sin(2 * np.pi * (k + 1) * t))
            for k, a in enumerate(np.linspace(-1, 1.5, 12))
        ]
    )
    return x.astype(np.int64)


def xli_stream(x: np.ndarray) -> bytes:
    return b"".join(xli_chunk(lead) for lead in residuals(x))


def sierra_xml(
    waveform: str,
    *,
    compression: str | None = None,
    encoding: str = "Base64",
    leads: tuple[str, ...] = LEADS_12,
    duration_ms: str | None = None,
    version: str = "1.04",
    doctype: str = "",
) -> str:
    comp = f' compression="{compression}"' if compression else ""
    dur = duration_ms or str(N * 1000 // FS)
    return f"""<?xml version="1.0" encoding="UTF-8"?>{doctype}
<restingecgdata xmlns="http://www3.medical.philips.com" status="Confirmed" lang="en">
 <documentinfo><documentname>x.xml</documentname><documenttype>PhilipsECG</documenttype>
  <documentversion>{version}</documentversion></documentinfo>
 <orderinfo priority="Routine"><ordernumber>ORD-9</ordernumber></orderinfo>
 <dataacquisition date="2020-01-01" time="10:00:00">
  <machine machineid="SN-777" detaildescription="Philips Medical Products:M5000:X.01">PageWriter Touch</machine>
  <acquirer><operator>Dr Who</operator></acquirer>
  <signalcharacteristics><samplingrate>{FS}</samplingrate><resolution>5</resolution>
   <acquisitiontype>10-WIRE</acquisitiontype><numberchannelsallocated>12</numberchannelsallocated></signalcharacteristics>
 </dataacquisition>
 <patient criteriaversionforpatientdata="V8"><generalpatientdata><patientid>MRN-0042</patientid>
  <name><lastname>Doe</lastname><firstname>Jane</firstname></name><age><years>63</years></age>
  <pacestatus>Non paced</pacestatus><sex>Female</sex></generalpatientdata></patient>
 <interpretations><interpretation>
  <statement><statementcode>SR</statementcode><leftstatement>Sinus rhythm</leftstatement><rightstatement/></statement>
  <statement><statementcode>LAD</statementcode><leftstatement>Left axis deviation</leftstatement>
   <rightstatement>QRS axis &lt; -30</rightstatement></statement>
 </interpretation></interpretations>
 <waveforms><parsedwaveforms dataencoding="{encoding}"{comp} numberofleads="{len(leads)}" leadlabels="{" ".join(leads)}"
  durationperchannel="{dur}" samplespersecond="{FS}" resolution="5" signaloffset="0" signalsigned="True"
  bitspersample="16" hipass="0.05" lowpass="150" notchfiltered="False">{waveform}</parsedwaveforms></waveforms>
</restingecgdata>"""


def write(tmp_path: Path, text: str, name: str = "ecg.xml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def refused(path: Path, pattern: str, kind: str | None = None) -> RecordError:
    with pytest.raises(RecordError, match=pattern) as err:
        read_sierra(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(path.name)
    if kind:
        assert err.value.kind == kind
    return err.value


def check_record(rec, x: np.ndarray) -> None:
    assert rec.leads == LEADS_12 and rec.fs == FS and rec.signal.dtype == np.float32
    np.testing.assert_allclose(rec.signal, x * 0.005, rtol=1e-6, atol=1e-9)
    assert rec.meta["age"] == 63 and rec.meta["sex"] == "F"
    assert rec.meta["device"] == "PageWriter Touch Philips Medical Products:M5000:X.01"
    assert rec.meta["statements"] == ("Sinus rhythm", "Left axis deviation QRS axis < -30")
    assert set(rec.meta) == {"format", "version", "age", "sex", "device", "statements"} and rec.patient is None
    assert not any(s in repr(rec) for s in IDENTIFIERS)  # names, IDs, serial number, order, operator


def test_uncompressed_round_trip(tmp_path: Path) -> None:
    x = known_signal()
    rec = read_sierra(write(tmp_path, sierra_xml(b64(x.astype("<i2").tobytes()))))
    check_record(rec, x)


def test_xli_round_trip_rebuilds_the_limb_leads(tmp_path: Path) -> None:
    x = known_signal()
    rec = read_sierra(write(tmp_path, sierra_xml(b64(xli_stream(x)), compression="XLI")))
    check_record(rec, x)
    assert rec.meta["version"] == "1.04"


def test_plain_text_round_trip_and_signaloffset(tmp_path: Path) -> None:
    x = known_signal()
    text = sierra_xml(" ".join(map(str, (x + 100).ravel())), encoding="Plain").replace(
        'signaloffset="0"', 'signaloffset="100"'
    )
    check_record(read_sierra(write(tmp_path, text)), x)


def test_decode_deltas_matches_the_predictor_loop() -> None:
    """The cumulative-sum decoder equals the sample-by-sample predictor the format describes."""
    codes = np.random.default_rng(0).integers(40, 90, 500).astype(np.int64)
    codes[:2] = (-7, 3)
    out = codes.copy()
    x, y, last = out[0], out[1], 11
    for i in range(2, out.size):
        z = 2 * y - x - last
        last = codes[i] - 64
        out[i] = z
        x, y = y, z
    np.testing.assert_array_equal(decode_deltas(codes, 11), out)


def test_entity_bomb_is_one_line(tmp_path: Path) -> None:
    bomb = '\n<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    text = sierra_xml("&b;", doctype=bomb)
    refused(write(tmp_path, text), "unsafe XML refused", "unsafe")


def test_cut_base64_is_one_line(tmp_path: Path) -> None:
    data = b64(known_signal().astype("<i2").tobytes())
    refused(write(tmp_path, sierra_xml(data[:-3])), "Base64 is broken or cut short", "truncated")


def test_cut_xli_stream_is_one_line(tmp_path: Path) -> None:
    stream = xli_stream(known_signal())
    refused(
        write(tmp_path, sierra_xml(b64(stream[:-99]), compression="XLI")),
        r"lead 12 declares \d+ compressed",
        "truncated",
    )
    refused(write(tmp_path, sierra_xml(b64(stream[:40]), compression="XLI")), "declares", "truncated")


def test_a_lead_short_of_samples_is_refused(tmp_path: Path) -> None:
    x = known_signal()
    short = b"".join(xli_chunk(lead[: N - 10] if k == 7 else lead) for k, lead in enumerate(residuals(x)))
    refused(write(tmp_path, sierra_xml(b64(short), compression="XLI")), f"lead 8 decodes to {N - 10} samples, {N}")
    raw = x.astype("<i2").tobytes()
    refused(
        write(tmp_path, sierra_xml(b64(raw[: -2 * N]))),
        f"hold {len(raw) - 2 * N} bytes, 12 leads of {N} samples need {len(raw)}",
        "truncated",
    )
    refused(write(tmp_path, sierra_xml(b64(raw + b"\0\0"))), "not whole leads", "shape")


def test_a_declared_count_of_a_trillion_samples_is_refused_before_reading(tmp_path: Path) -> None:
    text = sierra_xml(b64(b"\0" * 64), duration_ms="2000000000000")  # 2e12 ms at 500 Hz: 1e12 samples
    refused(write(tmp_path, text), "12 leads of 1000000000000 samples declared: more than", "size")


def test_an_lzw_bomb_stops_at_the_declared_size() -> None:
    chunk = xli_chunk(np.zeros(3, np.int64), payload=b"\0" * 300_000)  # ~2 kB that would expand to 300 kB
    assert len(chunk) < 3_000
    with pytest.raises(XliError, match="lead 1 decompresses to more than the 264 bytes"):
        decode_xli(chunk, 1, 100)


def test_corrupt_codes_are_refused() -> None:
    with pytest.raises(XliError, match="LZW code 700 names no entry"):
        lzw_decode((700 << 6).to_bytes(2, "big"), 100)
    wild = xli_chunk(np.array([0, 0, 0, 0]), payload=bytes([0x7F, 0x80, 0x7F, 0x7F, 0, 0, 0, 0]))
    with pytest.raises(XliError, match="step by 2"):
        decode_xli(wild, 1, 4)
    ramp = np.arange(0, 40000, 4000)
    with pytest.raises(XliError, match="outside 16 bits"):
        decode_xli(xli_chunk(ramp), 1, ramp.size)


def test_unknown_root_version_order_and_compression_are_refused(tmp_path: Path) -> None:
    x = known_signal()
    refused(write(tmp_path, "<RestingECG/>"), "not a Sierra <restingecgdata>")
    refused(write(tmp_path, sierra_xml("", version="2.0")), "Sierra version '2.0'")
    swapped = ("II", "I", *LEADS_12[2:])
    refused(
        write(tmp_path, sierra_xml(b64(xli_stream(x)), compression="XLI", leads=swapped)), "only I II III aVR", "leads"
    )
    refused(write(tmp_path, sierra_xml(b64(b"\0\0"), compression="Huffman")), "compression 'Huffman'")
    refused(write(tmp_path, sierra_xml("00", encoding="Hex")), "encoding 'Hex'")
