"""The synthetic ECG generator and `ecgmae synth`: physiology, determinism, files, and learnability."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecgmae.cli import COMMANDS, main
from ecgmae.config import ConfigError
from ecgmae.data.sources import synthetic
from ecgmae.data.sources.synthetic import (
    LEADS,
    SYNTH_CLASSES,
    generate,
    generate_record,
    write_wfdb_folder,
)
from ecgmae.errors import ECGMAEError

ROOT = Path(__file__).resolve().parents[1]
SINUS_RATE = {"SB": (0.0, 60.0), "STach": (100.0, 1e9)}


@pytest.fixture(scope="module")
def clean() -> list[synthetic.SynthRecord]:
    """300 noise-free records of seed 0 (about 3 s)."""
    return list(generate(300, seed=0, noise="none"))


def _limb_errors(sig: np.ndarray) -> np.ndarray:
    i, ii, iii, avr, avl, avf = sig[:6].astype(np.float64)
    return np.array(
        [
            np.abs(iii - (ii - i)).max(),
            np.abs(avr + (i + ii) / 2).max(),
            np.abs(avl - (i - ii / 2)).max(),
            np.abs(avf - (ii - i / 2)).max(),
        ]
    )


def _beats(rec: synthetic.SynthRecord, rel_s: float) -> np.ndarray:
    """Samples (12, B) at ``rel_s`` (< 0.6 s) after the QRS onset of each conducted beat."""
    on = rec.beat_onsets_s[~rec.beat_is_pvc]
    on = on[on + 0.6 < rec.signal.shape[1] / rec.fs]
    return rec.signal[:, np.rint((on + rel_s) * rec.fs).astype(int)]


# --- package hygiene and command line -------------------------------------------------------------


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import sys, ecgmae, ecgmae.cli, ecgmae.data.sources.synthetic; ecgmae.cli.build_parser(); "
        "heavy = [m for m in ('torch', 'lightning', 'wfdb', 'scipy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HOME=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["--help"], ["synth", "--help"]])
def test_help_shows_an_example(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and "ecgmae synth --out" in out
    if argv[0] == "synth":
        for flag in ("--n", "--fs", "--seconds", "--seed", "--noise", "--overwrite", "--quiet"):
            assert flag in out


def test_python_m_ecgmae_help() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-m", "ecgmae", "--help"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Example:" in res.stdout and "synth" in res.stdout


def test_cli_writes_refuses_and_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    args = ["synth", "--out", str(out), "--n", "3", "--seconds", "4", "--noise", "none", "--quiet"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir())[:3] == ["RECORDS", "classes.json", "labels.csv"]
    before = (out / "synth00000.dat").read_bytes()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args[:-3], "--noise", "low", "--overwrite", "--quiet"]) == 0
    assert (out / "synth00000.dat").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temp or old folders left behind

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["synth", "--out", str(empty), "--n", "1", "--seconds", "3", "--quiet"]) == 0
    assert (empty / "classes.json").is_file()

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["synth", "--out", str(other), "--n", "1", "--overwrite", "--quiet"]) == 2
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path / "x"), "--n", "0", "--quiet"])
    assert exc.value.code == 2 and "--n: must be >= 1" in capsys.readouterr().err


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic._write_record
    calls = []

    def flaky(folder: Path, rec: synthetic.SynthRecord, seed: int, noise: str) -> None:
        calls.append(rec.record)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(folder, rec, seed, noise)

    monkeypatch.setattr(synthetic, "_write_record", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_wfdb_folder(tmp_path / "s", 3, seconds=3, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="noise"):
        generate_record(0, 0, noise="loud")
    with pytest.raises(ConfigError, match="seconds"):
        generate_record(0, 0, seconds=1)
    with pytest.raises(ECGMAEError, match="not a folder"):
        write_wfdb_folder(Path(__file__), 1, quiet=True)


# --- physiology -----------------------------------------------------------------------------------


def test_every_class_in_200_records_and_sensible_combinations(clean: list[synthetic.SynthRecord]) -> None:
    first = clean[:200]
    counts = {c: sum(c in r.labels for r in first) for c in SYNTH_CLASSES}
    assert all(counts.values()), counts
    assert 0.15 <= counts["NORM"] / 200 <= 0.4, counts
    for r in clean:
        assert list(r.labels) == [c for c in SYNTH_CLASSES if c in r.labels]
        assert ("NORM" in r.labels) == (r.labels == ("NORM",))
        assert sum(c in r.labels for c in ("AF", "SB", "STach")) <= 1
        assert not {"LBBB", "RBBB"} <= set(r.labels)
        assert (r.pr_ms is None) == ("AF" in r.labels)
        if r.pr_ms is not None:
            assert (r.pr_ms > 200) == ("IAVB" in r.labels), (r.record, r.pr_ms, r.labels)
        assert ("PVC" in r.labels) == bool(r.beat_is_pvc.any())


def test_heart_rate_in_class_range(clean: list[synthetic.SynthRecord]) -> None:
    for r in clean:
        assert r.hr_bpm == pytest.approx(60 / r.rr_s.mean())
        if "AF" in r.labels:
            continue
        lo, hi = next((SINUS_RATE[c] for c in r.labels if c in SINUS_RATE), (60.0, 100.0))
        assert lo <= r.hr_bpm <= hi, (r.record, r.labels, r.hr_bpm)


def test_af_rr_far_more_irregular_than_sinus(clean: list[synthetic.SynthRecord]) -> None:
    cv = {r.record: r.rr_s.std() / r.rr_s.mean() for r in clean}
    af = [cv[r.record] for r in clean if "AF" in r.labels]
    sinus = [cv[r.record] for r in clean if "AF" not in r.labels]
    assert np.mean(af) > 3 * np.mean(sinus), (np.mean(af), np.mean(sinus))


def test_pvc_is_premature_with_compensatory_pause(clean: list[synthetic.SynthRecord]) -> None:
    for r in (r for r in clean if "PVC" in r.labels and "AF" not in r.labels):
        j = np.flatnonzero(r.beat_is_pvc)
        before, after = r.rr_s[j - 1], r.rr_s[j]
        assert np.all(before < 0.7 * np.median(r.rr_s)), r.record
        assert np.allclose(before + after, 2 * 60 / r.hr_bpm, rtol=0.15), r.record


def _window_peak(size: np.ndarray, fs: float, qrs_time: float, pr_s: float) -> float:
    """Largest value of ``size`` from 0.1 s before the P wave of a QRS at ``qrs_time`` to just after it."""
    lo, hi = np.rint(np.array([qrs_time - pr_s - 0.1, qrs_time + 0.05]) * fs).astype(int)
    return float(size[max(lo, 0) : hi].max())


def test_sinus_p_wave_survives_a_pvc(monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic.sample_plan

    def no_p(rng: np.random.Generator) -> synthetic.RecordPlan:
        plan = real(rng)
        vec = plan.beat.vec.copy()
        vec[plan.beat.kind == 0] = 0.0
        return dataclasses.replace(plan, beat=dataclasses.replace(plan.beat, vec=vec))

    recs = [r for r in generate(80, seed=3, noise="none") if "PVC" in r.labels and "AF" not in r.labels][:4]
    assert recs
    for r in recs:
        monkeypatch.setattr(synthetic, "sample_plan", no_p)
        p_only = r.signal - generate_record(3, r.info["index"], noise="none").signal  # the P waves alone
        monkeypatch.setattr(synthetic, "sample_plan", real)
        size, on, pr_s = np.abs(p_only).max(axis=0), r.beat_onsets_s, r.pr_ms / 1000
        conducted = np.median([_window_peak(size, r.fs, t, pr_s) for t in on[~r.beat_is_pvc][1:]])
        for j in np.flatnonzero(r.beat_is_pvc):  # full compensatory pause: sinus beat due halfway
            assert _window_peak(size, r.fs, (on[j - 1] + on[j + 1]) / 2, pr_s) > 0.7 * conducted, (r.record, j)


def test_qrs_duration_by_class(clean: list[synthetic.SynthRecord]) -> None:
    for r in clean:
        bbb = bool({"LBBB", "RBBB"} & set(r.labels))
        assert (r.qrs_ms >= 120) == bbb, (r.record, r.labels, r.qrs_ms)


def test_limb_lead_identities_in_memory() -> None:
    for noise in ("none", "realistic"):
        for i in range(6):
            rec = generate_record(3, i, noise=noise)
            assert rec.signal.dtype == np.float32 and rec.signal.shape == (12, 5000)
            assert rec.leads == LEADS
            assert _limb_errors(rec.signal).max() <= 1e-6, (noise, i)


def test_bundle_branch_block_patterns(clean: list[synthetic.SynthRecord]) -> None:
    rbbb = [r for r in clean if "RBBB" in r.labels]
    lbbb = [r for r in clean if "LBBB" in r.labels]
    assert rbbb and lbbb
    for r in rbbb:  # terminal R' in V1, terminal S in I and V6
        late = np.median(_beats(r, 0.72 * r.qrs_ms / 1000), axis=1)
        assert late[6] > 0.1 and late[0] < 0 and late[11] < 0, (r.record, late[[0, 6, 11]])
    for r in lbbb:  # QS in V1 (no initial r) and discordant T in V6
        qrs = np.stack([_beats(r, f * r.qrs_ms / 1000) for f in np.linspace(0.05, 0.9, 12)])
        assert np.median(qrs[:, 6], axis=1).max() < 0.1 and np.median(qrs[:, 6], axis=1).min() < -0.3
        assert np.median(_beats(r, 0.5 * r.qrs_ms / 1000)[11]) * np.median(_beats(r, 0.3)[11]) < 0, r.record


def test_st_and_voltage_criteria_from_the_signal(clean: list[synthetic.SynthRecord]) -> None:
    def sokolow(r: synthetic.SynthRecord) -> float:
        q = np.stack([_beats(r, f * r.qrs_ms / 1000) for f in np.linspace(0, 1, 40)])  # (40, 12, B)
        return float(np.median(-q[:, 6].min(0) + np.maximum(q[:, 10].max(0), q[:, 11].max(0))))

    def st_up(r: synthetic.SynthRecord) -> int:
        return int((np.median(_beats(r, r.qrs_ms / 1000 + 0.06), axis=1) >= 0.1).sum())

    def lateral_down(r: synthetic.SynthRecord) -> bool:
        st = np.median(_beats(r, r.qrs_ms / 1000 + 0.06), axis=1)
        t = np.median(_beats(r, 0.3), axis=1)
        return bool(st[[0, 1, 9, 10, 11]].min() < -0.05 or t[[0, 1, 10, 11]].min() < 0)

    for r in clean:
        if "LVH" in r.labels:
            assert sokolow(r) > 3.5, r.record
        elif "LBBB" not in r.labels:
            assert sokolow(r) < 3.5, r.record
        if "STE" in r.labels:
            assert st_up(r) >= 2, r.record
    norm = [r for r in clean if r.labels == ("NORM",)]
    std = [r for r in clean if "STD" in r.labels]
    assert np.mean([st_up(r) >= 2 for r in norm]) < 0.25
    assert np.mean([lateral_down(r) for r in std]) > 0.8
    assert np.mean([lateral_down(r) for r in norm]) < 0.1


# --- determinism and files ------------------------------------------------------------------------


def test_record_depends_only_on_seed_and_index() -> None:
    a = list(generate(4, seed=7, noise="realistic"))
    b = generate_record(7, 3, noise="realistic")
    assert np.array_equal(a[3].signal, b.signal) and a[3].labels == b.labels
    assert not np.array_equal(generate_record(8, 3).signal, b.signal)
    # labels and beats do not depend on the noise level or the sampling rate
    for i in range(5):
        ref = generate_record(7, i, noise="none")
        for other in (generate_record(7, i, noise="low"), generate_record(7, i, fs=250, noise="realistic")):
            assert other.labels == ref.labels and np.allclose(other.rr_s, ref.rr_s)


def test_wfdb_folder_round_trip_and_byte_identical(tmp_path: Path) -> None:
    import wfdb

    kw = {"n": 4, "seconds": 5, "noise": "none", "quiet": True}
    one, two = write_wfdb_folder(tmp_path / "a", seed=1, **kw), write_wfdb_folder(tmp_path / "b", seed=1, **kw)
    three = write_wfdb_folder(tmp_path / "c", seed=2, **kw)
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and len(names) == 3 + 2 * 4
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in names)
    assert (one / "synth00000.dat").read_bytes() != (three / "synth00000.dat").read_bytes()

    lines = (one / "labels.csv").read_text().splitlines()
    assert lines[0] == "record,labels"
    classes = json.loads((one / "classes.json").read_text())
    assert [c["name"] for c in classes["classes"]] == list(SYNTH_CLASSES)
    assert all(c["definition"] for c in classes["classes"])
    for k, line in enumerate(lines[1:]):
        mem = generate_record(1, k, seconds=5, noise="none")
        assert line == f"{mem.record},{';'.join(mem.labels)}"
        rec = wfdb.rdrecord(str(one / mem.record))
        assert rec.sig_name == list(LEADS) and rec.units == ["mV"] * 12 and rec.fs == 500
        assert rec.fmt == ["16"] * 12 and rec.adc_gain == [1000.0] * 12
        assert f"labels: {';'.join(mem.labels)}" in rec.comments
        sig = rec.p_signal.T
        assert np.abs(sig - mem.signal).max() <= 0.0005 + 1e-6  # half an adc step (1 uV)
        assert _limb_errors(sig).max() <= 0.002 + 1e-6  # two adc steps after quantisation


def _wrsamp_files(
    folder: Path,
    name: str,
    fs: float,
    names: list[str],
    units: list[str],
    gains: list,
    bases: list[int],
    comments: list[str],
    **signal: np.ndarray,
) -> tuple[bytes, bytes]:
    import wfdb

    folder.mkdir()
    wfdb.wrsamp(
        name,
        fs=fs,
        units=units,
        sig_name=names,
        fmt=["16"] * len(names),
        adc_gain=gains,
        baseline=bases,
        comments=comments,
        write_dir=str(folder),
        **signal,
    )
    return (folder / f"{name}.hea").read_bytes(), (folder / f"{name}.dat").read_bytes()


@pytest.mark.parametrize("case", ["synth_500hz", "odd_rate_per_lead_gains", "one_lead_one_sample"])
def test_wfdb16_writer_matches_wrsamp_byte_for_byte(case: str, tmp_path: Path) -> None:
    import wfdb

    from ecgmae.data.wfdb_write import write_wfdb16

    rng = np.random.default_rng(5)
    if case == "synth_500hz":
        rec = generate_record(4, 2, seconds=6, noise="realistic")
        sig, fs, names, units = rec.signal, 500.0, list(rec.leads), ["mV"] * 12
        gains, bases, comments = [1000.0] * 12, [0] * 12, ["labels: NORM", "Dx: 426783006", "hr_bpm: 71.3"]
    elif case == "odd_rate_per_lead_gains":  # a fractional rate, int and float gains, baselines, other units
        sig = (rng.standard_normal((3, 1234)) * 3).astype(np.float32)
        fs, names, units = 360.5, ["MLII", "V5", "resp"], ["mV", "mV", "uV"]
        gains, bases, comments = [200, 200.5, 37.25], [1024, -3, 0], ["a comment: with colons", ""]
    else:
        sig, fs, names, units = np.array([[0.25]], dtype=np.float32), 250, ["I"], ["mV"]
        gains, bases, comments = [1000.0], [0], []
    ref_hea, ref_dat = _wrsamp_files(
        tmp_path / "ref", "r1", fs, names, units, gains, bases, comments, p_signal=sig.T.astype(np.float64)
    )
    stem = tmp_path / "new" / "r1"
    assert write_wfdb16(stem, sig, fs, names, comments, gains, bases, units) == 0
    assert stem.with_suffix(".hea").read_bytes() == ref_hea
    assert stem.with_suffix(".dat").read_bytes() == ref_dat
    back = wfdb.rdrecord(str(stem))
    assert back.sig_name == names and back.fs == fs and back.comments == comments
    step = 1.0 / np.array(gains, dtype=np.float64)
    assert np.all(np.abs(back.p_signal.T - sig) <= step[:, None] + 1e-9)  # within one adc step


def test_wfdb16_writer_clips_and_keeps_nan_like_wfdb(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import wfdb

    from ecgmae.data.wfdb_write import write_wfdb16

    # gain 4: 0.125 mV -> 0.5 and -0.375 mV -> -1.5 digital, rounded half to even as numpy does
    sig = np.array([[0.25, 1e5, -1e5, np.nan, 0.125, -0.375], [1, 2, 3, 4, 5, 6]], dtype=np.float32)
    digital = np.array([[1, 32767, -32767, -32768, 0, -2], [4, 8, 12, 16, 20, 24]], np.int16)
    ref = _wrsamp_files(
        tmp_path / "ref", "c1", 500.0, ["I", "II"], ["mV"] * 2, [4.0] * 2, [0, 0], ["x"], d_signal=digital.T.copy()
    )
    with caplog.at_level("WARNING", logger="ecgmae"):
        assert write_wfdb16(tmp_path / "c1", sig, 500.0, ["I", "II"], ["x"], 4.0) == 2
    assert "c1: 2 samples" in caplog.text
    assert ((tmp_path / "c1.hea").read_bytes(), (tmp_path / "c1.dat").read_bytes()) == ref
    back = wfdb.rdrecord(str(tmp_path / "c1")).p_signal.T
    assert np.isnan(back[0, 3]) and back[0, 1] == 32767 / 4 and back[0, 2] == -32767 / 4
    from ecgmae.errors import DataError

    with pytest.raises(DataError, match="c2: 1 lead name values for 2 leads"):
        write_wfdb16(tmp_path / "c2", sig, 500.0, ["I"], [], 1000.0)
    with pytest.raises(DataError, match="c3: comment"):
        write_wfdb16(tmp_path / "c3", sig, 500.0, ["I", "II"], ["two\nlines"], 1000.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1.dat", "c1.hea", "ref"]


# --- learnability ---------------------------------------------------------------------------------


def _rhythm_features(sig: np.ndarray, fs: float) -> list[float]:
    """Mean HR, RR CV, successive-RR irregularity and a QRS-width proxy, from the signal alone."""
    from scipy.signal import butter, find_peaks, peak_widths, sosfiltfilt

    y = sosfiltfilt(butter(2, [5, 25], "bandpass", fs=fs, output="sos"), sig[[0, 1, 6, 7, 8, 9, 10, 11]], axis=-1)
    k = int(0.06 * fs)
    env = np.sqrt(np.convolve((np.diff(y, axis=-1) ** 2).sum(0), np.ones(k) / k, "same"))
    peaks, _ = find_peaks(env, height=0.3 * np.percentile(env, 99), distance=int(0.27 * fs))
    rr = np.diff(peaks) / fs
    width = peak_widths(env, peaks, rel_height=0.5)[0] / fs
    return [
        60 / rr.mean(),
        rr.std() / rr.mean(),
        np.median(np.abs(np.diff(rr))) / np.median(rr),
        float(np.median(width)),
    ]


def test_rhythm_classes_are_learnable_from_the_signal() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = list(generate(160, seed=11, noise="low")), list(generate(100, seed=12, noise="low"))
    x_tr = np.array([_rhythm_features(r.signal.astype(np.float64), r.fs) for r in train])
    x_te = np.array([_rhythm_features(r.signal.astype(np.float64), r.fs) for r in test])
    aucs = []
    for c in ("SB", "STach", "AF"):
        y_tr, y_te = [c in r.labels for r in train], [c in r.labels for r in test]
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x_tr, y_tr)
        aucs.append(roc_auc_score(y_te, model.predict_proba(x_te)[:, 1]))
    assert np.mean(aucs) >= 0.8 and min(aucs) >= 0.7, aucs


def test_amplitudes_stay_physiological_over_many_records():
    # Regression: a near-zero Sokolow-Lyon index once scaled some RBBB records to ~1e12 mV.
    peaks = np.array(
        [np.abs(generate_record(0, i, fs=100, seconds=10, noise="none").signal).max() for i in range(2500)]
    )
    assert peaks.max() < 20.0, (peaks.argmax(), peaks.max())
    assert np.median(peaks) > 0.5


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example_and_no_escaped_percent(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"Example:\n  ecgmae {command}" in out and "--quiet" in out
    assert "%%" not in out, out
