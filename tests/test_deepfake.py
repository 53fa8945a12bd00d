"""`ecgmae synth --engine deepfake`: safe weight loading, seeded batched generation, the WFDB folder.

The tests that run the GAN need the optional ``deepfake-ecg`` package (``pip install 'ecgmae[deepfake]'``)
and are skipped without it; the loading-safety, file-layout and error tests run without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ecgmae.cli import main
from ecgmae.config import ConfigError
from ecgmae.data.sources import deepfake
from ecgmae.errors import CheckpointError, ECGMAEError

ROOT = Path(__file__).resolve().parents[1]
NEEDS_PACKAGE = "the optional deepfake-ecg package is not installed (pip install 'ecgmae[deepfake]')"
BATCH = 8  # one generator call of 8 records: ~0.3 s on 2 cores


@pytest.fixture(autouse=True)
def _fresh_model_cache() -> Any:
    deepfake._load.cache_clear()
    yield
    deepfake._load.cache_clear()


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


def _touch(path: str) -> None:
    """What a malicious checkpoint would run when unpickled: leaves a file behind."""
    Path(path).write_text("code ran")


class Payload:
    """An object whose unpickling calls :func:`_touch`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _touch, (self.path,)


def _fake_generate(n: int, seed: int = 0, **kw: Any) -> Any:
    for i in range(n):
        sig = deepfake.twelve_leads(np.full((8, 5000), 0.001 * (i + 1), np.float32))
        yield deepfake.DeepfakeRecord(f"deepfake{i:05d}", sig, 500.0, deepfake.LEADS, seed, i)


# --- without the package ---------------------------------------------------------------------------


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import sys, ecgmae.data.sources.deepfake, ecgmae.cli.synth; "
        "heavy = [m for m in ('torch', 'numpy', 'scipy', 'deepfakeecg') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HOME=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_package_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepfakeecg" else real(name, *a))
    with pytest.raises(ECGMAEError, match=r"pip install 'ecgmae\[deepfake\]'"):
        deepfake.weights_path()
    out = tmp_path / "d"
    assert main(["synth", "--engine", "deepfake", "--out", str(out), "--n", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "deepfake-ecg" in err and "pip install 'ecgmae[deepfake]'" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--noise", "low"], "--noise does not apply"),
        (["--seconds", "5"], "10 s records only"),
        (["--fs", "20"], "outside 50-2000 Hz"),
        (["--fs", "123.45"], "whole number of samples"),
    ],
)
def test_cli_rejects_options_that_do_not_apply(
    extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d"
    assert main(["synth", "--engine", "deepfake", "--out", str(out), "--n", "2", "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert not out.exists()


def test_resampling_ratios() -> None:
    assert deepfake.gan_resampling(500) == (1, 1)
    assert deepfake.gan_resampling(100) == (1, 5) and deepfake.gan_resampling(250) == (1, 2)
    assert deepfake.gan_resampling(360) == (18, 25)
    with pytest.raises(ConfigError):
        deepfake.gan_resampling(float("nan"))


def test_checkpoint_with_a_pickled_object_is_refused_unrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned.txt"
    ckpt = tmp_path / "g_stat.pt"
    torch.save({"stat_dict": {"fc1.weight": torch.zeros(2, 2)}, "extra": Payload(marker)}, ckpt)
    monkeypatch.setattr(deepfake, "weights_path", lambda: ckpt)
    with pytest.raises(CheckpointError, match="refused to load the generator: not a plain tensor checkpoint"):
        deepfake.load_generator()
    assert not marker.exists()
    out = tmp_path / "d"
    assert main(["synth", "--engine", "deepfake", "--out", str(out), "--n", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and err.count("\n") == 1, err
    assert not marker.exists() and not out.exists()
    # The file really is dangerous: a full unpickle runs the payload.
    torch.load(ckpt, map_location="cpu", weights_only=False)
    assert marker.read_text() == "code ran"


def test_checkpoint_without_generator_tensors_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "g_stat.pt"
    monkeypatch.setattr(deepfake, "weights_path", lambda: ckpt)
    for bad in ({"state_dict": {"w": torch.zeros(1)}}, {"stat_dict": {"w": [1, 2]}}, [torch.zeros(1)]):
        torch.save(bad, ckpt)
        deepfake._load.cache_clear()
        with pytest.raises(CheckpointError, match="stat_dict"):
            deepfake.load_generator()
    ckpt.write_bytes(b"not a checkpoint")
    deepfake._load.cache_clear()
    with pytest.raises(CheckpointError, match="refused"):
        deepfake.load_generator()


def test_folder_layout_and_interruption_without_the_gan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ecgmae.data.io import read_record

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    monkeypatch.setattr(deepfake, "weights_path", lambda: weights)
    monkeypatch.setattr(deepfake, "load_generator", lambda: None)
    monkeypatch.setattr(deepfake, "generate", _fake_generate)
    out = deepfake.write_wfdb_folder(tmp_path / "d", 3, seed=4, quiet=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "RECORDS",
        *(f"deepfake0000{i}.{s}" for i in range(3) for s in ("dat", "hea")),
        "source.json",
    ]
    assert (out / "RECORDS").read_text() == "deepfake00000\ndeepfake00001\ndeepfake00002\n"
    meta = json.loads((out / "source.json").read_text())
    assert meta["engine"] == "deepfake" and meta["seed"] == 4 and meta["n"] == 3 and meta["fs"] == 500
    assert meta["labels"] is None and meta["leads"] == list(deepfake.LEADS)
    rec = read_record(out / "deepfake00002.hea")
    assert rec.fs == 500 and rec.leads == deepfake.LEADS and rec.labels == ()
    assert np.allclose(rec.signal[1], 0.003) and np.allclose(rec.signal[2], 0.0)
    with pytest.raises(ECGMAEError, match="--overwrite"):
        deepfake.write_wfdb_folder(out, 1, quiet=True)

    def broken(n: int, seed: int = 0, **kw: Any) -> Any:
        yield from _fake_generate(1, seed)
        raise KeyboardInterrupt

    monkeypatch.setattr(deepfake, "generate", broken)
    with pytest.raises(KeyboardInterrupt):
        deepfake.write_wfdb_folder(tmp_path / "e", 3, quiet=True)
    with pytest.raises(KeyboardInterrupt):
        deepfake.write_wfdb_folder(out, 3, overwrite=True, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "w.pt"]  # nothing half-written, old kept
    assert (out / "source.json").is_file()


# --- with the package: the real generator ----------------------------------------------------------


@pytest.fixture(scope="module")
def recs() -> list[deepfake.DeepfakeRecord]:
    pytest.importorskip("deepfakeecg", reason=NEEDS_PACKAGE)
    deepfake._load.cache_clear()
    return list(deepfake.generate(7, seed=0, batch_size=BATCH))


def test_shape_rate_leads_and_identities(recs: list[deepfake.DeepfakeRecord]) -> None:
    assert [r.record for r in recs] == [f"deepfake{i:05d}" for i in range(7)]
    for r in recs:
        assert r.signal.shape == (12, 5000) and r.signal.dtype == np.float32 and r.fs == 500.0
        assert r.leads == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
        assert np.isfinite(r.signal).all()
        assert _limb_errors(r.signal).max() <= 1e-5


def test_amplitudes_and_rhythm_are_plausible(recs: list[deepfake.DeepfakeRecord]) -> None:
    sig = np.stack([r.signal for r in recs])
    p2p = np.ptp(sig[:, 1], axis=-1)  # lead II
    assert np.mean((p2p > 0.3) & (p2p < 6.0)) >= 0.8, p2p
    assert np.abs(sig[:, [0, 1, 6, 7, 8, 9, 10, 11]]).max() <= 6.0  # tanh * 6 mV
    assert len({round(float(x), 3) for x in p2p}) == len(recs)  # different records
    from scipy.signal import find_peaks

    for r in recs:  # a heartbeat: 5-30 QRS complexes (steepest slopes of lead II) in 10 s, 30-180 bpm
        slope = np.convolve(np.abs(np.diff(r.signal[1].astype(np.float64))), np.ones(10) / 10, "same")
        beats, _ = find_peaks(slope, height=0.4 * slope.max(), distance=150)
        assert 5 <= beats.size <= 30, (r.record, beats.size)


def test_record_depends_only_on_seed_and_index(recs: list[deepfake.DeepfakeRecord]) -> None:
    one = list(deepfake.generate(1, seed=0, batch_size=BATCH))
    assert np.array_equal(one[0].signal, recs[0].signal)  # 1 record asked for, or 7: identical
    mid = list(deepfake.generate(2, seed=0, start=5, batch_size=BATCH))
    assert [r.index for r in mid] == [5, 6]
    assert all(np.array_equal(a.signal, recs[k].signal) for a, k in zip(mid, (5, 6), strict=True))
    assert np.array_equal(deepfake.generate_record(0, 3, batch_size=BATCH).signal, recs[3].signal)
    other_batch = list(deepfake.generate(7, seed=0, batch_size=7))  # other kernels: float rounding only
    assert max(np.abs(a.signal - b.signal).max() for a, b in zip(other_batch, recs, strict=True)) < 1e-3
    seed1 = deepfake.generate_record(1, 0, batch_size=BATCH)
    assert np.abs(seed1.signal - recs[0].signal).max() > 0.1


def test_noise_is_per_record_and_global_rng_untouched() -> None:
    pytest.importorskip("deepfakeecg", reason=NEEDS_PACKAGE)
    a, b = deepfake.record_noise(0, 3), deepfake.record_noise(0, 3)
    assert a.shape == (8, 5000) and torch.equal(a, b) and -1 <= float(a.min()) and float(a.max()) <= 1
    assert not torch.equal(a, deepfake.record_noise(0, 4)) and not torch.equal(a, deepfake.record_noise(1, 3))
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    deepfake.load_generator()
    assert torch.equal(torch.rand(3), before)


def test_resampled_to_100_hz(recs: list[deepfake.DeepfakeRecord]) -> None:
    low = deepfake.generate_record(0, 0, fs=100, batch_size=BATCH)
    assert low.signal.shape == (12, 1000) and low.fs == 100.0 and low.signal.dtype == np.float32
    assert _limb_errors(low.signal).max() <= 1e-5
    ref = recs[0].signal[:, ::5].astype(np.float64)
    for lead in range(12):
        assert np.corrcoef(low.signal[lead], ref[lead])[0, 1] > 0.9


def test_cli_end_to_end_then_prepare(
    recs: list[deepfake.DeepfakeRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ecgmae.data.io import read_record

    out = tmp_path / "df"
    args = ["synth", "--engine", "deepfake", "--out", str(out), "--n", "3", "--batch-size", str(BATCH), "--quiet"]
    assert main(args) == 0
    assert not (out / "labels.csv").exists() and (out / "RECORDS").read_text().split() == [r.record for r in recs[:3]]
    meta = json.loads((out / "source.json").read_text())
    assert meta["package"] == "deepfake-ecg" and meta["package_version"] == deepfake.package_version()
    assert meta["seed"] == 0 and meta["n"] == 3 and meta["fs"] == 500 and meta["batch_size"] == BATCH
    for mem in recs[:3]:
        rec = read_record(out / f"{mem.record}.hea")
        assert rec.fs == 500 and rec.leads == deepfake.LEADS and rec.signal.shape == (12, 5000)
        assert rec.labels == ()
        assert np.abs(rec.signal - mem.signal).max() <= 0.0005 + 1e-6  # half of a 1 uV step
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["df"]

    store = tmp_path / "store"
    assert main(["prepare", "--source", "folder", "--src", str(out), "--out", str(store), "--quiet"]) == 0
    assert np.load(store / "labels.npy").shape == (3, 0)  # unlabelled
    index = (store / "index.csv").read_text().splitlines()
    assert len(index) == 4 and all(line.startswith("deepfake0000") for line in index[1:])
