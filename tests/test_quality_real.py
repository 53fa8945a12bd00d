"""Plumbing of benchmarks/quality_real.py (the full pipeline at toy size is marked slow)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conftest import benchmark_script, shared_path
from ecgmae.eval.features import ecg_features
from ecgmae.eval.probe import cv_probe


def _script() -> ModuleType:
    return benchmark_script("quality_real")


def test_parse_steps() -> None:
    q = _script()
    assert q.parse_steps(None, ["mae", "cmsc"]) == {"mae": q.STEPS["mae"], "cmsc": q.STEPS["cmsc"]}
    assert q.parse_steps("7", ["mae", "simclr"]) == {"mae": 7, "simclr": 7}
    assert q.parse_steps("mae=5", ["mae", "cmsc"]) == {"mae": 5, "cmsc": q.STEPS["cmsc"]}
    with pytest.raises(SystemExit, match="--steps new=N"):
        q.parse_steps(None, ["new"])


def test_without_real_data_it_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _script().main(["--out", str(tmp_path / "out"), "--real", str(tmp_path / "absent")])
    assert capsys.readouterr().out.strip().endswith("skipped")
    assert not (tmp_path / "out").exists()


def test_without_deepfake_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "A.hea").write_text("")
    q = _script()
    monkeypatch.setattr(q.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"pip install 'ecgmae\[deepfake\]'"):
        q.main(["--out", str(tmp_path / "out"), "--real", str(real)])


@pytest.mark.slow
def test_toy_pipeline_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("deepfakeecg")
    real = shared_path("cinc2021-sample")
    out = tmp_path / "q"
    argv = [
        "--out",
        str(out),
        "--n",
        "24",
        "--methods",
        "mae",
        "--steps",
        "1",
        "--real",
        str(real),
        "--extra-pretrain-args",
        "--model ecgmae_tiny --batch-size 8",
        "--folds",
        "2",
        "--repeats",
        "1",
        "--min-count",
        "12",
    ]
    _script().main(argv)
    res = json.loads((out / "results.json").read_text())
    assert [r["what"] for r in res["rows"]] == ["random", "mae", "features"]
    assert [r["steps"] for r in res["rows"]] == [0, 1, None]
    assert all(r["fewer_leads"]["leads"] == ["II"] for r in res["rows"])
    # the features' fewer-leads score, re-scored here
    recs, classes, Y = benchmark_script("real_checks").load_real(real, 12)
    F = np.stack([ecg_features(r.signal[[r.leads.index("II")]], r.fs) for r in recs])
    again = cv_probe(F, Y, names=classes, folds=2, repeats=1, seed=0)["macro"]
    assert res["rows"][2]["fewer_leads"]["macro"] == pytest.approx(again) != res["rows"][2]["macro"]
    assert res["rows"][1]["vs_random"]["mean"] == pytest.approx(res["rows"][1]["macro"] - res["rows"][0]["macro"])
    assert res["real"]["records"] == 50 and res["real"]["classes"]
    assert "| mae | 0 | 1 |" in (out / "results.md").read_text() and "II only" in (out / "results.md").read_text()
    assert [r["name"] for r in res["beats"]["rows"]] == ["features", "random", "mae"]
    stamp = (out / "mae" / "encoder.safetensors").stat().st_mtime_ns
    _script().main(argv)  # resumes: nothing is pre-trained again
    assert (out / "mae" / "encoder.safetensors").stat().st_mtime_ns == stamp
    assert not any(c["ran_now"] for c in json.loads((out / "results.json").read_text())["commands"])


def test_beat_segments_follow_the_reference_annotations() -> None:
    wfdb = pytest.importorskip("wfdb")
    record = shared_path("wfdb-sample") / "100"
    segs, fs, leads, y = benchmark_script("real_checks").load_beats(record)
    ann = wfdb.rdann(str(record), "atr")
    seg = int(10 * fs)
    assert fs == 360 and leads == ("II", "V5") and len(segs) == len(y) == 180  # 30 min, whole segments only
    assert all(s.shape == (2, seg) for s in segs)
    first = next(i for i, sym in enumerate(ann.symbol) if sym == "A")
    assert y[ann.sample[first] // seg, 0] == 1
    expected = {int(s) // seg for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym == "A" and s < 180 * seg}
    assert set(np.flatnonzero(y[:, 0]).tolist()) == expected and len(expected) == 30
    raw = wfdb.rdrecord(str(record)).p_signal.T  # the segments are the record's samples in mV, in order
    np.testing.assert_allclose(segs[7], raw[:, 7 * seg : 8 * seg], atol=1e-6)
