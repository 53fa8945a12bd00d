"""Reading single records (real files, every WFDB sample format, bad input) and the preprocessing functions."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb
from scipy.signal import resample_poly, welch

from conftest import shared_path
from ecgmae.config import ConfigError
from ecgmae.data.io import LEADS_12, RecordError, canonical_lead, make_record, read_record
from ecgmae.data.signal import (
    PreprocessConfig,
    bandpass,
    map_leads,
    preprocess,
    remove_baseline,
    resample,
    resampled_length,
    standardise,
)
from ecgmae.data.sources.cinc import dx_codes
from ecgmae.errors import DataError


def _write(
    folder: Path, name: str, x: np.ndarray, fs: float = 250, names=("I", "II", "V1"), fmt: str = "16", units: str = "mV"
) -> Path:
    """WFDB record written by the wfdb package (the reference implementation)."""
    wfdb.wrsamp(
        name,
        fs=fs,
        units=[units] * len(names),
        sig_name=list(names),
        p_signal=x,
        fmt=[fmt] * len(names),
        write_dir=str(folder),
    )
    return folder / f"{name}.hea"


def _walk(n: int = 1001, leads: int = 3, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(0, 0.05, (n, leads)), axis=0)


# ------------------------------------------------------------------------------------- lead names
@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("avr", "aVR"),
        ("AVL", "aVL"),
        (" V1 ", "V1"),
        ("v6", "V6"),
        ("i", "I"),
        ("III", "III"),
        ("MLII", "II"),
        ("mli", "I"),
        ("DII", "II"),
        ("lead II", "II"),
        ("ECG V2", "V2"),
    ],
)
def test_canonical_lead_names(raw: str, want: str) -> None:
    assert canonical_lead(raw) == want


@pytest.mark.parametrize("raw", ["vx", "V7", "-aVR", "", "ABP", "V 5x"])
def test_unknown_lead_names_raise(raw: str) -> None:
    with pytest.raises(DataError, match="unknown lead name"):
        canonical_lead(raw)


# ------------------------------------------------------------------------------------- real files
def test_cinc_sample_matches_wfdb_and_readme() -> None:
    folder = shared_path("cinc2021-sample")
    heads = sorted(folder.glob("*.hea"))
    assert len(heads) == 50
    dx = Counter()
    for i, hea in enumerate(heads):
        rec = read_record(hea)
        assert rec.signal.shape == (12, 5000) and rec.signal.dtype == np.float32
        assert rec.fs == 500 and rec.leads == LEADS_12
        dx.update(dx_codes(rec.meta["comments"]))
        if i % 10 == 0:  # values equal the reference reader's (physical mV)
            ref = wfdb.rdrecord(str(hea.with_suffix(""))).p_signal.T
            np.testing.assert_allclose(rec.signal, ref, atol=1e-6)
    assert (dx["427084000"], dx["284470004"], dx["426783006"], dx["164934002"]) == (23, 20, 15, 10)
    assert len(dx) == 25


def test_cpsc2018_mat_struct() -> None:
    folder = shared_path("cpsc2018-sample")
    mats = sorted(folder.glob("*.mat"))
    assert len(mats) == 10
    for mat in mats:
        rec = read_record(mat)
        data = scipy.io.loadmat(str(mat))["ECG"][0, 0]["data"]
        assert rec.fs == 500 and rec.leads == LEADS_12
        assert rec.signal.shape == data.shape and 10 * 500 <= data.shape[1] <= 55 * 500  # README: 10-54 s
        np.testing.assert_allclose(rec.signal, data, rtol=1e-6, atol=1e-6)
        assert rec.meta["sex"] in ("M", "F") and 0 < rec.meta["age"] < 120
    assert read_record(folder / "A1980.mat").meta == {"format": "cpsc2018", "sex": "M", "age": 52.0}


def test_ptb_lower_case_leads_and_frank_leads_dropped() -> None:
    hea = shared_path("wfdb-sample", "s0010_re.hea")
    rec = read_record(hea)
    assert rec.fs == 1000 and rec.leads == LEADS_12 and rec.signal.shape == (12, 38400)
    assert rec.meta["dropped_leads"] == ("vx", "vy", "vz") and rec.meta["sex"] == "F" and rec.meta["age"] == 81
    ref = wfdb.rdrecord(str(hea.with_suffix("")), channels=list(range(12))).p_signal.T
    np.testing.assert_allclose(rec.signal, ref, atol=1e-6)


def test_mitbih_format_212_and_mlii_alias() -> None:
    hea = shared_path("wfdb-sample", "100.hea")
    rec = read_record(hea.with_suffix(""))  # a record may be named without suffix
    assert rec.leads == ("II", "V5") and rec.fs == 360 and rec.signal.shape == (2, 650000)
    ref = wfdb.rdrecord(str(hea.with_suffix("")), sampto=20000).p_signal.T
    np.testing.assert_allclose(rec.signal[:, :20000], ref, atol=1e-6)


# ------------------------------------------------------------------------------- formats and units
@pytest.mark.parametrize("fmt", ["16", "80", "212", "24", "32"])
def test_every_written_format_matches_wfdb(tmp_path: Path, fmt: str) -> None:
    hea = _write(tmp_path, f"r{fmt}", _walk())
    ref = wfdb.rdrecord(str(hea.with_suffix(""))).p_signal.T
    rec = read_record(hea)
    assert rec.signal.shape == (3, 1001)
    np.testing.assert_allclose(rec.signal, ref, atol=1e-6)


@pytest.mark.parametrize("fmt", ["61", "160"])
def test_big_endian_and_offset_formats(tmp_path: Path, fmt: str) -> None:
    hea = _write(tmp_path, "r", _walk())
    want = read_record(hea).signal
    raw = np.fromfile(tmp_path / "r.dat", "<i2")
    (raw.astype(">i2") if fmt == "61" else (raw.astype(np.int32) + 32768).astype("<u2")).tofile(tmp_path / "r.dat")
    hea.write_text(re.sub(r"r\.dat 16 ", f"r.dat {fmt} ", hea.read_text()))
    np.testing.assert_allclose(read_record(hea).signal, want, atol=1e-6)


def test_microvolt_units_become_millivolts(tmp_path: Path) -> None:
    x = _walk() * 1000
    rec = read_record(_write(tmp_path, "uv", x, units="uV"))
    np.testing.assert_allclose(rec.signal, x.T / 1000, atol=1e-3)


def test_missing_sample_count_is_inferred(tmp_path: Path) -> None:
    hea = _write(tmp_path, "r", _walk())
    lines = hea.read_text().splitlines()
    lines[0] = " ".join(lines[0].split()[:3])
    hea.write_text("\n".join(lines) + "\n")
    assert read_record(hea).signal.shape == (3, 1001)


# ------------------------------------------------------------------------------------- bad input
def test_truncated_dat_names_the_file(tmp_path: Path) -> None:
    hea = _write(tmp_path, "trunc", _walk())
    data = (tmp_path / "trunc.dat").read_bytes()
    (tmp_path / "trunc.dat").write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordError, match=r"trunc\.dat: truncated: header says 1001 samples") as exc:
        read_record(hea)
    assert exc.value.kind == "truncated"


def test_header_that_lies_about_lengths(tmp_path: Path) -> None:
    hea = _write(tmp_path, "lie", _walk())
    text = hea.read_text()
    hea.write_text(text.replace(" 1001", " 2000", 1))
    with pytest.raises(RecordError, match="truncated"):
        read_record(hea)
    hea.write_text(text.replace(" 1001", " 500", 1))
    with pytest.raises(RecordError, match=r"lie\.hea: header says 500 samples but lie\.dat holds 1001") as exc:
        read_record(hea)
    assert exc.value.kind == "length"
    hea.write_text(text.replace("lie 3 ", "lie 4 ", 1))
    with pytest.raises(RecordError, match="declares 4 signals but lists 3"):
        read_record(hea)


def test_nan_samples_and_all_nan_lead(tmp_path: Path) -> None:
    x = _walk()
    with pytest.raises(RecordError, match=r"r\.npy: 5 NaN/inf samples in lead\(s\) II \(5\)") as exc:
        make_record("r", np.where(np.arange(1001) < 5, np.nan, x.T[1])[None].repeat(1, 0), 250, ["II"], "r.npy")
    assert exc.value.kind == "nan"
    sig = x.T.copy()
    sig[2] = np.nan
    rec = make_record("r", sig, 250, ["I", "II", "V1"], "r.npy")
    assert rec.leads == ("I", "II") and rec.meta["nan_leads"] == ("V1",)
    # WFDB "invalid sample" codes become NaN, so a corrupted stretch is reported, not read as data
    hea = _write(tmp_path, "inv", x)
    raw = np.fromfile(tmp_path / "inv.dat", "<i2")
    raw[30:36] = -32768
    raw.tofile(tmp_path / "inv.dat")
    with pytest.raises(RecordError, match="NaN/inf samples"):
        read_record(hea)


def test_unreadable_mat_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage" + bytes(range(256)) * 3)
    with pytest.raises(RecordError, match=r"bad\.mat: unreadable MATLAB file"):
        read_record(tmp_path / "bad.mat")
    scipy.io.savemat(tmp_path / "val.mat", {"val": np.zeros((12, 10))})
    with pytest.raises(RecordError, match="sampling rate and leads unknown"):
        read_record(tmp_path / "val.mat")
    hea = _write(tmp_path, "gone", _walk())
    (tmp_path / "gone.dat").unlink()
    with pytest.raises(RecordError, match=r"data file gone\.dat not found"):
        read_record(hea)
    with pytest.raises(RecordError, match=r"x\.scp: unknown file type \.scp; expected \.hea, .*\.xml, \.dcm, \.edf"):
        read_record(tmp_path / "x.scp")  # SCP-ECG: not read (yet)


def test_npy_needs_a_sampling_rate(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _walk(leads=12).T.astype(np.float32))
    with pytest.raises(RecordError, match="sampling rate unknown"):
        read_record(tmp_path / "a.npy")
    assert read_record(tmp_path / "a.npy", fs=250).leads == LEADS_12
    (tmp_path / "a.json").write_text('{"fs": 500, "units": "uV"}')
    rec = read_record(tmp_path / "a.npy")
    assert rec.fs == 500
    np.testing.assert_allclose(rec.signal, _walk(leads=12).T / 1000, atol=1e-6)


# ---------------------------------------------------------------------------------- preprocessing
def test_resample_is_resample_poly_with_rational_factors() -> None:
    x = np.random.default_rng(1).normal(size=(2, 3600)).astype(np.float32)
    for fs_in, fs_out, (up, down) in [(500, 100, (1, 5)), (360, 100, (5, 18)), (257, 100, (100, 257))]:
        y = resample(x, fs_in, fs_out)
        np.testing.assert_allclose(y, resample_poly(x, up, down, axis=-1), atol=1e-5)
        assert y.shape[1] == resampled_length(3600, fs_in, fs_out) == -(-3600 * up // down)


def test_filters_keep_the_band_and_remove_wander() -> None:
    fs, t = 100.0, np.arange(3000) / 100.0
    x = (np.sin(2 * np.pi * 10 * t) + 2 * np.sin(2 * np.pi * 0.1 * t) + np.sin(2 * np.pi * 45 * t)).astype(np.float32)
    y = bandpass(x[None], fs, 0.5, 40)[0]
    f, p_in = welch(x, fs, nperseg=1000)
    _, p_out = welch(y, fs, nperseg=1000)
    ratio = p_out / np.maximum(p_in, 1e-12)
    assert ratio[np.argmin(abs(f - 10))] > 0.9
    assert ratio[np.argmin(abs(f - 45))] < 0.05 and ratio[np.argmin(abs(f - 0.1))] < 0.05
    for method in ("highpass", "median"):
        z = remove_baseline((2 * np.sin(2 * np.pi * 0.1 * t) + 0.5)[None], fs, method)[0]
        assert np.abs(z[300:-300]).max() < 0.35, method


def test_standardise_and_map_leads() -> None:
    x = np.stack([np.linspace(0, 10, 100), np.full(100, 3.0)]).astype(np.float32)
    z = standardise(x, "record")
    assert abs(z[0].mean()) < 1e-5 and abs(z[0].std() - 1) < 1e-4 and np.all(z[1] == 0)
    r = standardise(x, "robust")
    assert abs(np.median(r[0])) < 1e-5
    out, present = map_leads(x, ["v2", "MLII"], ["I", "II", "V2"])
    assert present.tolist() == [False, True, True]
    np.testing.assert_array_equal(out, [np.zeros(100), x[1], x[0]])


def test_preprocess_pads_masks_and_keeps_long_records_whole() -> None:
    cfg = PreprocessConfig(fs=100, seconds=10)
    x = _walk(n=2500, leads=2).T  # 5 s at 500 Hz
    y, present = preprocess(x, 500, ["ii", "V5"], cfg)
    assert y.shape == (12, 1000) and present.sum() == 2 and present[1] and present[10]
    assert np.all(y[~present] == 0) and np.all(y[:, 500:] == 0) and np.any(y[1, :500] != 0)
    long, _ = preprocess(_walk(n=20000, leads=12).T, 500, LEADS_12, cfg)
    assert long.shape == (12, 4000)
    with pytest.raises(DataError, match="NaN"):
        preprocess(np.full((1, 10), np.nan), 100, ["I"], cfg)
    with pytest.raises(DataError, match="none of the leads"):
        preprocess(np.ones((1, 10)), 100, ["I"], PreprocessConfig(leads=("V1",)))


def test_preprocess_config_validates_and_round_trips() -> None:
    cfg = PreprocessConfig(
        fs=250, leads=("i", "avr"), bandpass=(0.5, 40), baseline="median", normalise="record", dtype="int16"
    )
    assert cfg.leads == ("I", "aVR")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (
        {"bandpass": (1, 60)},
        {"normalise": "minmax"},
        {"fs": 0},
        {"leads": ("I", "I")},
        {"leads": ("vx",)},
        {"dtype": "int8"},
    ):
        with pytest.raises(ConfigError):
            PreprocessConfig(**bad)
    with pytest.raises(ConfigError, match="unknown key"):
        PreprocessConfig.from_dict({"fs": 100, "window": 3})
