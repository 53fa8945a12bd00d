"""The prepared store: round trip, no-op re-runs, atomicity, bad-input handling, splits and leakage."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from conftest import shared_path
from ecgmae.cli import main
from ecgmae.data import store as store_mod
from ecgmae.data.io import LEADS_12, read_record
from ecgmae.data.leakage import check_no_leakage, patient_split
from ecgmae.data.signal import PreprocessConfig, preprocess, resampled_length
from ecgmae.data.splits import assign_splits
from ecgmae.data.store import Store, prepare_store
from ecgmae.errors import DataError


def _record(folder: Path, name: str, seconds: float, seed: int, n_leads: int = 12, fs: int = 500) -> None:
    t = np.arange(int(seconds * fs)) / fs
    rng = np.random.default_rng(seed)
    x = np.stack([np.sin(2 * np.pi * (1 + k / 7) * t) + rng.normal(0, 0.05, t.size) for k in range(n_leads)], 1)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * n_leads,
        sig_name=list(LEADS_12[:n_leads]),
        p_signal=x,
        fmt=["16"] * n_leads,
        write_dir=str(folder),
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Six records: 10 s, a short 5 s one, a long 15 s one, and three patients sharing records."""
    src = tmp_path / "raw"
    src.mkdir()
    for i, seconds in enumerate((10, 5, 15, 10, 10, 10)):
        _record(src, f"r{i}", seconds, seed=i)
    (src / "labels.csv").write_text(
        "record,labels,patient_id\nr0,AF,p0\nr1,NORM,p0\nr2,AF;PVC,p1\nr3,NORM,p1\nr4,,p2\nr5,PVC,p2\n"
    )
    return src


@pytest.mark.parametrize(
    ("dtype", "cfg_extra"),
    [
        ("float16", {}),
        ("int16", {"bandpass": (0.5, 40.0)}),
        ("float32", {"normalise": "record"}),
    ],
)
def test_round_trip_equals_preprocess(corpus: Path, tmp_path: Path, dtype: str, cfg_extra: dict) -> None:
    cfg = PreprocessConfig(fs=100, seconds=10, dtype=dtype, **cfg_extra)
    store = Store.open(prepare_store("folder", corpus, tmp_path / "store", cfg, quiet=True))
    assert len(store) == 6 and store.preprocess_config == cfg and store.meta["dtype"] == dtype
    assert store.meta["units"] == ("standardised" if "normalise" in cfg_extra else "mV")
    for i in range(len(store)):
        raw = read_record(corpus / f"r{i}.hea")
        want, present = preprocess(raw.signal, raw.fs, raw.leads, cfg)
        got = store.signal(i)
        assert got.shape == want.shape and got.dtype == np.float32
        if dtype == "int16":
            np.testing.assert_allclose(got, want, atol=store.index["scale"][i] * 0.5 + 1e-7)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 if dtype == "float16" else 1e-6)
        np.testing.assert_array_equal(store.present(i), present)
        assert store.valid_length(i) == resampled_length(raw.signal.shape[1], raw.fs, 100)
        assert store.length(i) == max(store.valid_length(i), 1000)
        np.testing.assert_array_equal(store.signal(i, 100, 350), got[:, 100:350])
    assert store.valid_length(1) == 500 and store.length(1) == 1000 and not store.signal(1)[:, 500:].any()
    assert store.valid_length(2) == store.length(2) == 1500
    assert store.label_names == ("AF", "NORM", "PVC") and store.labels[2].tolist() == [1, 0, 1]
    signals = np.load(store.path / "signals.npy", mmap_mode="r")
    assert signals.shape == (int(store.index["length"].sum()), 12) and signals.dtype == np.dtype(dtype)


def test_rerun_is_a_noop_and_new_options_replace(
    corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("ecgmae"), "propagate", True)  # the CLI may have turned it off
    out = tmp_path / "store"
    cfg = PreprocessConfig(fs=100, seconds=10)
    prepare_store("folder", corpus, out, cfg, quiet=True)
    stamp = (out / "signals.npy").stat().st_mtime_ns
    meta = (out / "meta.json").read_text()
    with caplog.at_level("INFO", logger="ecgmae"):
        assert prepare_store("folder", corpus, out, cfg, quiet=True) == out
    assert "up to date" in caplog.text and (out / "signals.npy").stat().st_mtime_ns == stamp
    assert (out / "meta.json").read_text() == meta
    with pytest.raises(DataError, match="other inputs or options; pass --overwrite"):
        prepare_store("folder", corpus, out, PreprocessConfig(fs=50, seconds=10), quiet=True)
    prepare_store("folder", corpus, out, PreprocessConfig(fs=50, seconds=10), quiet=True, overwrite=True)
    assert Store.open(out).fs == 50 and Store.open(out).length(0) == 500
    os.utime(corpus / "r0.dat", ns=(stamp, stamp + 10**9))  # an input changed: rebuild
    prepare_store("folder", corpus, out, PreprocessConfig(fs=50, seconds=10), quiet=True, overwrite=True)
    assert (out / "signals.npy").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "store"]


def test_interrupted_run_leaves_no_store(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_add = store_mod._SignalWriter.add

    def failing_add(self: store_mod._SignalWriter, block: np.ndarray) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_add(self, block)

    monkeypatch.setattr(store_mod._SignalWriter, "add", failing_add)
    with pytest.raises(KeyboardInterrupt):
        prepare_store("folder", corpus, tmp_path / "store", PreprocessConfig(), quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    # an interrupted rebuild keeps the previous store intact
    monkeypatch.setattr(store_mod._SignalWriter, "add", real_add)
    prepare_store("folder", corpus, tmp_path / "store", PreprocessConfig(), quiet=True)
    monkeypatch.setattr(store_mod._SignalWriter, "add", failing_add)
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        prepare_store("folder", corpus, tmp_path / "store", PreprocessConfig(fs=50), quiet=True, overwrite=True)
    assert Store.open(tmp_path / "store").fs == 100 and len(Store.open(tmp_path / "store")) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "store"]


def _corrupt(src: Path) -> None:
    """Bad copies next to good records: truncated .dat, a lying header, NaNs, 11 leads."""
    _record(src, "bad_trunc", 10, seed=10)
    data = (src / "bad_trunc.dat").read_bytes()
    (src / "bad_trunc.dat").write_bytes(data[:1000])
    _record(src, "bad_lie", 10, seed=11)
    hea = src / "bad_lie.hea"
    hea.write_text(hea.read_text().replace(" 5000", " 4000", 1))
    t = np.arange(5000) / 500
    x = np.stack([np.sin(t)] * 12, 1)
    x[100:120, 3] = np.nan
    wfdb.wrsamp(
        "bad_nan", fs=500, units=["mV"] * 12, sig_name=list(LEADS_12), p_signal=x, fmt=["16"] * 12, write_dir=str(src)
    )
    _record(src, "eleven", 10, seed=12, n_leads=11)


def test_bad_records_are_skipped_with_one_line_each(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _corrupt(corpus)
    out = tmp_path / "store"
    assert main(["prepare", "--source", "folder", "--src", str(corpus), "--out", str(out), "--quiet"]) == 0
    skipped = pd.read_csv(out / "skipped.csv").set_index("record")
    assert sorted(skipped.index) == ["bad_lie", "bad_nan", "bad_trunc"]
    assert skipped.loc["bad_trunc", "kind"] == "truncated" and skipped.loc["bad_lie", "kind"] == "length"
    assert skipped.loc["bad_nan", "message"] == "bad_nan.hea: 20 NaN/inf samples in lead(s) aVR (20)"
    store = Store.open(out)
    assert len(store) == 7 and store.meta["counts"]["skipped"] == {"truncated": 1, "length": 1, "nan": 1}
    eleven = store.index.index[store.index["record"] == "eleven"][0]
    assert store.present(eleven).tolist() == [True] * 11 + [False]  # masked, not zero-filled silently
    assert store.meta["counts"]["missing_leads"] == {"V6": 1}
    printed = capsys.readouterr().out
    assert "7 records" in printed and "3 skipped" in printed
    # --on-error fail: the first bad record stops the run and no store is left
    assert (
        main(
            [
                "prepare",
                "--source",
                "folder",
                "--src",
                str(corpus),
                "--out",
                str(tmp_path / "f"),
                "--on-error",
                "fail",
                "--quiet",
            ]
        )
        == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("ecgmae prepare: error: bad_lie.hea: header says 4000 samples but bad_lie.dat holds")
    assert not (tmp_path / "f").exists()


def test_nothing_usable_is_a_nonzero_exit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    _corrupt(src)
    (src / "eleven.hea").unlink()
    assert main(["prepare", "--source", "folder", "--src", str(src), "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert "no usable record (3 skipped" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_unreadable_mat_is_skipped(tmp_path: Path) -> None:
    src = tmp_path / "cpsc"
    src.mkdir()
    real = shared_path("cpsc2018-sample")
    for name in ("A1980", "A1981"):
        shutil.copy(real / f"{name}.mat", src)
    (src / "A1982.mat").write_bytes((real / "A1982.mat").read_bytes()[:5000])
    out = prepare_store("cpsc2018", src, tmp_path / "s", PreprocessConfig(), quiet=True)
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["record"].tolist() == ["A1982"] and skipped["message"][0].startswith("A1982.mat: unreadable")
    assert len(Store.open(out)) == 2


def test_store_refuses_to_overwrite_other_folders(corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    with pytest.raises(DataError, match="not an ecgmae store"):
        prepare_store("folder", corpus, other, PreprocessConfig(), quiet=True)
    assert (other / "thesis.tex").read_text() == "keep me"
    with pytest.raises(DataError, match="not a prepared store"):
        Store.open(other)


def test_patient_aware_splits_and_leakage(corpus: Path, tmp_path: Path) -> None:
    groups = [f"p{i // 3}" for i in range(300)]  # 100 patients x 3 records
    splits, folds = assign_splits(groups, seed=1)
    by_patient = pd.DataFrame({"g": groups, "s": splits, "f": folds}).groupby("g")
    assert (by_patient["s"].nunique() == 1).all() and (by_patient["f"].nunique() == 1).all()
    share = pd.Series(splits).value_counts(normalize=True)
    assert abs(share["train"] - 0.8) < 0.02 and abs(share["val"] - 0.1) < 0.02
    assert set(np.unique(folds[splits == "test"])) == {10}
    assert set(np.unique(folds[splits == "train"])) == set(range(1, 9))
    assert (assign_splits(groups, seed=1)[0] == splits).all() and (assign_splits(groups, seed=2)[0] != splits).any()
    a = Store.open(prepare_store("folder", corpus, tmp_path / "a", PreprocessConfig(), quiet=True))
    idx = a.index
    assert idx.groupby("patient")["split"].nunique().max() == 1
    b_src = tmp_path / "b_raw"
    b_src.mkdir()
    for i in range(4):
        _record(b_src, f"q{i}", 10, seed=20 + i)
    test_patient = idx["patient"][0]
    (b_src / "labels.csv").write_text(
        f"record,labels,patient_id,split\nq0,AF,{test_patient},test\nq1,AF,z1,test\nq2,AF,z2,train\nq3,AF,z3,val\n"
    )
    b = Store.open(prepare_store("folder", b_src, tmp_path / "b", PreprocessConfig(), quiet=True))
    with pytest.raises(DataError, match=rf"1 patient\(s\) of b split 'test' also appear in a: {test_patient}"):
        check_no_leakage(a, b, split_b="test")
    check_no_leakage(tmp_path / "a", tmp_path / "b", split_b="val")
    fresh = patient_split(a, (0.5, 0.25, 0.25), seed=3)
    assert sorted(np.concatenate(list(fresh.values()))) == list(range(len(a)))
    for name, rows in fresh.items():
        others = set(a.index["patient"].iloc[np.concatenate([v for k, v in fresh.items() if k != name])])
        assert not set(a.index["patient"].iloc[rows]) & others


def test_workers_give_the_same_store(corpus: Path, tmp_path: Path) -> None:
    cfg = PreprocessConfig(fs=100)
    one = prepare_store("folder", corpus, tmp_path / "one", cfg, quiet=True)
    two = prepare_store("folder", corpus, tmp_path / "two", cfg, workers=2, quiet=True)
    assert (one / "signals.npy").read_bytes() == (two / "signals.npy").read_bytes()
    assert (one / "index.csv").read_text() == (two / "index.csv").read_text()


def test_python_and_the_cli_build_identical_stores(corpus: Path, tmp_path: Path) -> None:
    """Defaults live in PreprocessConfig: prepare_store with its defaults is `ecgmae prepare` without flags."""
    py = prepare_store("folder", corpus, tmp_path / "py", PreprocessConfig(), quiet=True)
    assert main(["prepare", "--source", "folder", "--src", str(corpus), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert Store.open(py).meta["preprocessing"] == Store.open(tmp_path / "cli").meta["preprocessing"]
    for name in ("signals.npy", "index.csv", "labels.npy"):
        assert (py / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert PreprocessConfig().bandpass == (0.5, 40.0)


def test_prepare_band_passes_by_default_and_none_keeps_the_raw_band(tmp_path: Path) -> None:
    from ecgmae.data.signal import auto_bandpass

    src = tmp_path / "raw"
    src.mkdir()
    t = np.arange(5000) / 500
    drift = np.stack([0.8 * np.sin(2 * np.pi * 0.05 * t)] * 12, 1)  # 0.05 Hz baseline wander, 0.8 mV
    beats = np.stack([np.sin(2 * np.pi * 8 * t)] * 12, 1)  # 8 Hz content of 1 mV stays
    wfdb.wrsamp(
        "r0",
        fs=500,
        units=["mV"] * 12,
        sig_name=list(LEADS_12),
        p_signal=drift + beats,
        fmt=["16"] * 12,
        write_dir=str(src),
    )
    assert auto_bandpass(100) == (0.5, 40.0) and auto_bandpass(50) == (0.5, 20.0)
    assert PreprocessConfig(fs=50).bandpass == (0.5, 20.0) and PreprocessConfig(bandpass=None).bandpass is None
    for flag, band in (([], [0.5, 40.0]), (["--bandpass", "none"], None), (["--bandpass", "1,30"], [1.0, 30.0])):
        out = tmp_path / f"s{len(flag)}{band}"
        assert main(["prepare", "--source", "folder", "--src", str(src), "--out", str(out), "--quiet", *flag]) == 0
        store = Store.open(out)
        assert store.meta["preprocessing"]["bandpass"] == band
        x = store.signal(0).astype(np.float64)[0]
        if band is None:  # the wander is still there
            np.testing.assert_allclose(x[50:-50], (drift + beats)[::5, 0][50:-50], atol=0.02)
        else:
            assert abs(x[100:900].mean()) < 0.05 and 0.9 < x[100:900].std() * np.sqrt(2) < 1.05
