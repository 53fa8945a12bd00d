"""The hand-made feature baseline: the ``features`` row of ``ecgmae benchmark`` and ``ecgmae embed --features``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecgmae.benchmark import BenchmarkConfig
from ecgmae.cli import main
from ecgmae.config import ConfigError
from ecgmae.data.store import Store
from ecgmae.eval import feature_probe
from ecgmae.eval.feature_probe import probe_features, record_features, store_features
from ecgmae.eval.features import ecg_features, feature_names, n_features

CLASSES = "SB,STach,AF"  # rhythm classes: easy for R-R features


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """120 synthetic 12-lead records (5 s at 50 Hz) split 50/20/30 so that val and test hold every class."""
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.sources.synthetic import write_wfdb_folder
    from ecgmae.data.store import prepare_store

    root = tmp_path_factory.mktemp("featprobe")
    src = write_wfdb_folder(root / "synth", 120, fs=250, seconds=5, seed=6, noise="low", quiet=True)
    return prepare_store(
        "folder", src, root / "store", PreprocessConfig(fs=50, seconds=5), seed=0, quiet=True, split=(0.5, 0.2, 0.3)
    )


def test_features_method_plans_only_linear_probes_and_is_spelled_exactly():
    from ecgmae.benchmark import _plan

    cfg = BenchmarkConfig(methods=("features", "mae", "scratch:ecgmae_tiny"), fractions=(0.1, 1.0), seeds=2)
    plan = [(s.seed, s.method, s.protocol, s.fraction) for s in _plan(cfg)]
    # no pre-training and no fine-tuning for the hand-made features: one linear probe per fraction and seed
    assert [p for p in plan if p[1] == "features"] == [
        (seed, "features", "linprobe", f) for seed in (0, 1) for f in (0.1, 1.0)
    ]
    assert [p for p in plan if p[1] == "mae" and p[0] == 0] == [
        (0, "mae", "pretrain", 1.0),
        *((0, "mae", p, f) for f in (0.1, 1.0) for p in ("linprobe", "finetune")),
    ]
    with pytest.raises(ConfigError, match=r"methods: feature not among .*, features or scratch:MODEL"):
        BenchmarkConfig(methods=("feature",))


def test_benchmark_features_row_uses_the_linprobe_label_subset(store, tmp_path, monkeypatch, one_thread):
    import ecgmae.data.splits as data_splits
    import ecgmae.engine.run as engine_run

    calls: dict[str, list] = {"engine": [], "features": []}

    def spy(who, real):
        def wrapped(labels, indices, fraction, seed):
            out = real(labels, indices, fraction, seed)
            calls[who].append((fraction, seed, out.tolist()))
            return out

        return wrapped

    monkeypatch.setattr(engine_run, "label_subset", spy("engine", engine_run.label_subset))
    monkeypatch.setattr(data_splits, "label_subset", spy("features", data_splits.label_subset))
    out = tmp_path / "bench"
    args = [
        "benchmark",
        "--data",
        str(store),
        "--out",
        str(out),
        "--methods",
        "features,mae",
        "--label-fractions",
        "0.3,1",
        "--seeds",
        "1",
        "--max-steps",
        "1",
        "--batch-size",
        "8",
        "--n-boot",
        "20",
        "--classes",
        CLASSES,
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--precision",
        "32",
        "--quiet",
        "--set",
        "model=ecgmae_tiny",
    ]
    assert main(args) == 0
    # the linear probe (and fine-tuning) of mae and the feature probe train on identical subsets
    linprobe = {(f, s): idx for f, s, idx in calls["engine"]}
    assert len(calls["features"]) == 2
    for f, s, idx in calls["features"]:
        assert linprobe[(f, s)] == idx
    sub = Store.open(store)
    names = (out / "runs" / "features_linprobe_0.3_s0" / "train_records.txt").read_text().split()
    assert names == sub.index["record"].iloc[linprobe[(0.3, 0)]].tolist()
    assert len(names) < len(sub.split_indices("train"))

    res = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["protocol"], r["label_fraction"]): r for r in res["runs"]}
    assert set(rows) == {("features", "linprobe", f) for f in (0.3, 1.0)} | {
        ("mae", p, f) for p in ("linprobe", "finetune") for f in (0.3, 1.0)
    }
    full = rows[("features", "linprobe", 1.0)]
    assert np.isfinite(full["macro_auroc"]) and full["macro_auroc"] > 0.75
    assert full["ci95"][0] <= full["macro_auroc"] <= full["ci95"][1]
    assert full["train_records"] == len(sub.split_indices("train"))
    metrics = json.loads((out / full["run"] / "metrics.json").read_text())
    assert metrics["C"] in (0.01, 0.1, 1.0, 10.0) and set(metrics["per_class_auroc"]) == set(CLASSES.split(","))
    assert "| features | linprobe |" in (out / "results.md").read_text()

    # a second seed reuses the cached features: no record is read again
    cache = out / "features" / "store_features.npz"
    stamp = cache.stat().st_mtime_ns
    monkeypatch.setattr(feature_probe, "record_features", _forbidden)
    args[args.index("--seeds") + 1] = "2"
    assert main(args) == 0
    assert cache.stat().st_mtime_ns == stamp
    res = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["seed"]) for r in res["runs"] if r["method"] == "features"} == {
        ("features", 0),
        ("features", 1),
    }


def _forbidden(*_args, **_kw):
    raise AssertionError("features computed again instead of read from the cache")


def test_feature_cache_is_keyed_to_the_store(store, tmp_path, monkeypatch):
    st = Store.open(store)
    cache = tmp_path / "f.npz"
    feats = store_features(st, cache)
    assert feats.shape == (len(st), n_features(12)) and feats.dtype == np.float32 and np.isfinite(feats).all()
    np.testing.assert_array_equal(feats[3], record_features(st, 3))
    with np.load(cache) as f:
        assert f["names"].tolist() == feature_names(st.leads)
    monkeypatch.setattr(feature_probe, "record_features", _forbidden)
    np.testing.assert_array_equal(store_features(st, cache), feats)
    monkeypatch.setattr(feature_probe, "FEATURES_VERSION", 99)  # other features: computed again
    calls = []
    monkeypatch.setattr(feature_probe, "record_features", lambda s, i: calls.append(i) or np.zeros(3, np.float32))
    assert store_features(st, cache).shape == (len(st), 3) and len(calls) == len(st)


def test_probe_without_validation_split_falls_back_to_c1(store, tmp_path, monkeypatch):
    monkeypatch.setattr(
        Store,
        "split_indices",
        lambda self, split: (
            np.flatnonzero(self.index["split"].to_numpy() == split) if split != "val" else np.zeros(0, np.int64)
        ),
    )
    report = probe_features(store, tmp_path / "run", fraction=1.0, seed=0, classes=CLASSES.split(","), n_boot=0)
    assert report["C"] == 1.0 and report["val_macro_auroc"] == {} and np.isfinite(report["macro_auroc"])


def test_embed_features_from_a_store_in_store_order(store, tmp_path, capsys):
    out = tmp_path / "f.npz"
    assert main(["embed", "--features", "--src", str(store), "--source", "store", "--out", str(out), "--quiet"]) == 0
    st = Store.open(store)
    assert f"{len(st)} records x {n_features(12)} features" in capsys.readouterr().out
    data = np.load(out)
    assert data["record"].tolist() == st.index["record"].tolist()
    assert data["embedding"].shape == (len(st), n_features(12)) and data["embedding"].dtype == np.float32
    assert data["feature_names"].tolist() == feature_names(st.leads) and len(data["skipped"]) == 0
    np.testing.assert_array_equal(data["embedding"][7], record_features(st, 7))
    assert (
        main(
            [
                "embed",
                "--features",
                "--src",
                str(store),
                "--source",
                "store",
                "--split",
                "test",
                "--out",
                str(tmp_path / "t.npz"),
                "--quiet",
            ]
        )
        == 0
    )
    test = np.load(tmp_path / "t.npz")
    idx = st.split_indices("test")
    assert test["record"].tolist() == st.index["record"].iloc[idx].tolist()
    np.testing.assert_array_equal(test["embedding"], data["embedding"][idx])


def test_embed_features_from_a_wfdb_folder_at_its_own_rate(store, tmp_path):
    from ecgmae.data.io import LEADS_12, read_record

    folder = store.parent / "synth"
    out = tmp_path / "raw.npz"
    assert main(["embed", "--features", "--src", str(folder), "--out", str(out), "--quiet"]) == 0
    data = np.load(out)
    heads = sorted(folder.rglob("*.hea"))
    assert data["record"].tolist() == [h.stem for h in heads]
    rec = read_record(heads[5])
    assert rec.fs == 250 and rec.leads == LEADS_12  # features at 250 Hz, not at the store's 50 Hz
    np.testing.assert_allclose(data["embedding"][5], ecg_features(rec.signal, rec.fs), rtol=1e-5, atol=1e-5)


def test_embed_needs_a_checkpoint_or_features(store, tmp_path, capsys):
    out = str(tmp_path / "x.npz")
    assert main(["embed", "--src", str(store), "--source", "store", "--out", out]) == 2
    assert "--checkpoint is required (or --features" in capsys.readouterr().err
    assert (
        main(["embed", "--features", "--checkpoint", "runs/x", "--src", str(store), "--source", "store", "--out", out])
        == 2
    )
    assert "takes no --checkpoint" in capsys.readouterr().err
    assert main(["embed", "--features", "--src", str(store.parent / "synth"), "--split", "test", "--out", out]) == 2
    assert "needs --source store" in capsys.readouterr().err
