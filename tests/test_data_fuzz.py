"""Fuzzing: malformed headers, data files, arrays and label tables raise DataError (one line), nothing else.

The WFDB reader is fuzzed below its catch-all (``wfdb_read.read_wfdb``), so a bug cannot hide behind it.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgmae.data import wfdb_read
from ecgmae.data.io import LEADS_12, Record, RecordError, make_record, parse_header, read_record
from ecgmae.data.signal import PreprocessConfig, preprocess
from ecgmae.data.sources import read_label_table
from ecgmae.errors import DataError

EXAMPLES = int(os.environ.get("ECGMAE_FUZZ_EXAMPLES", "120"))  # raise it for a longer hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = st.sampled_from([*LEADS_12, "avr", "MLII", " v1 ", "vx", "ABP", "", "I I", "V7", "ii"])
NUMBER = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True).map(str),
    st.sampled_from(
        ["", "x", "-", "1e400", "0", "500", "1000.0(0)/mV", "200/uV", "7(3)/V", "12(-5)/degC", "nan(0)/mV"]
    ),
)
FORMATS = st.sampled_from(
    ["16", "212", "80", "24", "32", "61", "160", "16x1+24", "16+7", "212x2", "16:3", "8", "999", "x", "16x0", ""]
)


def _check_record(rec: Record) -> None:
    assert isinstance(rec, Record)
    assert rec.signal.dtype == np.float32 and rec.signal.ndim == 2 and rec.signal.shape[1] > 0
    assert rec.signal.shape[0] == len(rec.leads) == len(set(rec.leads)) and set(rec.leads) <= set(LEADS_12)
    assert np.isfinite(rec.signal).all() and math.isfinite(rec.fs) and rec.fs > 0


@st.composite
def headers(draw: st.DrawFn) -> tuple[str, bytes]:
    n_sig = draw(st.integers(0, 4))
    declared = draw(st.one_of(st.just(str(n_sig)), NUMBER))
    record_line = " ".join(["rec", declared, *draw(st.lists(NUMBER, max_size=3))])
    lines = [record_line]
    for _ in range(n_sig):
        fields = ["rec.dat", draw(FORMATS), *draw(st.lists(NUMBER, max_size=6))]
        if draw(st.booleans()):
            fields.append(draw(NAMES))
        lines.append(" ".join(fields))
    comments = draw(st.lists(st.sampled_from(["# Age: 40", "# Sex: F", "# Dx: 1,2", "#", "# age: x"]), max_size=2))
    data = draw(st.binary(max_size=400))
    return "\n".join(comments + lines) + "\n", data


@FUZZ
@given(headers())
def test_fuzzed_headers_and_data(case: tuple[str, bytes]) -> None:
    text, data = case
    with tempfile.TemporaryDirectory() as tmp:
        hea = Path(tmp) / "rec.hea"
        hea.write_text(text)
        (Path(tmp) / "rec.dat").write_bytes(data)
        try:
            rec = wfdb_read.read_wfdb(hea)
        except DataError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("rec.")
        else:
            _check_record(rec)


@pytest.fixture(scope="module")
def valid_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    x = np.cumsum(np.random.default_rng(0).normal(0, 0.1, (300, 3)), axis=0)
    wfdb.wrsamp(
        "good", fs=250, units=["mV"] * 3, sig_name=["I", "II", "V1"], p_signal=x, fmt=["16"] * 3, write_dir=str(folder)
    )
    return folder / "good.hea"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_real_header_and_data(valid_record: Path, data: st.DataObject) -> None:
    text = valid_record.read_text()
    dat = (valid_record.parent / "good.dat").read_bytes()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        text = text[:i] + data.draw(st.sampled_from(["", " ", "\n", "9", "-", "x", "/", "(", "+", "#"])) + text[i + 1 :]
    cut = data.draw(st.integers(0, len(dat)))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "good.hea").write_text(text)
        (Path(tmp) / "good.dat").write_bytes(dat[:cut] + data.draw(st.binary(max_size=8)))
        try:
            rec = read_record(Path(tmp) / "good.hea")
        except DataError as exc:
            assert "\n" not in str(exc)
        else:
            _check_record(rec)


@FUZZ
@given(st.text(max_size=300))
def test_parse_header_only_raises_record_errors(text: str) -> None:
    try:
        rec, sigs, _ = parse_header(text, "x.hea")
    except RecordError as exc:
        assert str(exc).startswith("x.hea: ")
    else:
        assert rec["multi"] or len(sigs) == rec["nsig"]


ARRAYS = st.integers(1, 4).flatmap(
    lambda leads: st.integers(0, 300).flatmap(
        lambda n: st.lists(
            st.one_of(st.floats(-5, 5), st.sampled_from([np.nan, np.inf, -np.inf, 1e30, 0.0])),
            min_size=leads * n,
            max_size=leads * n,
        ).map(lambda v: np.array(v, float).reshape(leads, n))
    )
)


@FUZZ
@given(
    ARRAYS,
    st.sampled_from([500.0, 360.0, 100.0, 257.0, 1000.0, 0.0, -1.0, float("nan")]),
    st.lists(NAMES, min_size=1, max_size=4),
    st.sampled_from(["none", "record", "robust"]),
    st.sampled_from([None, (0.5, 40.0), (0.0, 20.0)]),
    st.sampled_from(["none", "highpass", "median"]),
)
def test_fuzzed_arrays_through_reader_and_preprocess(
    x: np.ndarray, fs: float, names: list[str], norm: str, band: tuple[float, float] | None, baseline: str
) -> None:
    names = (names * 4)[: x.shape[0]]
    try:
        rec = make_record("r", x, fs, names, "r.npy")
    except DataError as exc:
        assert str(exc).startswith("r.npy: ")
        return
    _check_record(rec)
    cfg = PreprocessConfig(fs=100, seconds=1, normalise=norm, bandpass=band, baseline=baseline)
    try:
        out, present = preprocess(rec.signal, rec.fs, rec.leads, cfg)
    except DataError:
        return
    assert out.shape[0] == 12 and out.shape[1] >= 100 and present.dtype == bool and present.any()
    assert out.dtype == np.float32 and np.isfinite(out).all()


@FUZZ
@given(
    st.lists(st.sampled_from([*'ab01;,\n"rT ', "record", "labels", "AF", "patient_id", "True"]), max_size=80).map(
        "".join
    )
)
def test_fuzzed_label_tables(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.csv"
        path.write_text(text)
        try:
            table = read_label_table(path)
        except DataError as exc:
            assert str(exc).startswith(str(path))
        else:
            assert all(isinstance(v, tuple) for v in table.labels.values())


@FUZZ
@given(st.binary(max_size=600), st.sampled_from([b"", b"MATLAB 5.0 MAT-file", b"\x00\x00\x00\x00"]))
def test_fuzzed_mat_files(blob: bytes, prefix: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "A0001.mat"
        path.write_bytes(prefix + blob)
        with pytest.raises(DataError, match=r"^A0001\.mat: "):
            read_record(path)
