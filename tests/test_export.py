"""ONNX export: parity with PyTorch, dynamic batch, metadata, and the ``ecgmae export`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ecgmae
from ecgmae.cli import main
from test_api import build_runs

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return build_runs(tmp_path_factory.mktemp("export"))


def _windows(store_path: Path, n: int) -> np.ndarray:
    from ecgmae.data.store import Store

    store = Store.open(store_path)
    return np.stack([store.signal(i)[:, :500] for i in range(n)]).astype(np.float32)


def test_classifier_export_matches_pytorch_and_the_api(runs, tmp_path):
    from ecgmae.export import export_onnx

    rep = export_onnx(runs["ft"], tmp_path / "ft.onnx")
    assert rep["kind"] == "classifier" and rep["outputs"] == ["logits", "probabilities"]
    assert max(rep["max_abs_diff"].values()) <= 1e-4
    proto = onnx.load(str(tmp_path / "ft.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["ecgmae"])
    model = ecgmae.load(runs["ft"])
    assert meta["label_names"] == model.label_names and meta["fs"] == 100 and meta["window_samples"] == 500
    assert meta["preprocessing"]["leads"] == list(model.leads)
    # a batch size the export never saw, on real windows: the same probabilities as model.predict
    x = _windows(runs["store"], 5)
    logits, probs = ort.InferenceSession(str(tmp_path / "ft.onnx")).run(None, {"x": x})
    assert probs.shape == (5, len(model.label_names))
    np.testing.assert_allclose(probs, model.predict_proba(x, fs=100), atol=1e-4)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-6)


@pytest.mark.parametrize("run", ["mae", "time"])
def test_encoder_export_gives_the_embedding(runs, run, tmp_path):
    from ecgmae.export import export_onnx

    rep = export_onnx(runs[run], tmp_path / "enc.onnx")
    assert rep["outputs"] == ["embedding"] and rep["max_abs_diff"]["embedding"] <= 1e-4
    x = _windows(runs["store"], 3)
    (z,) = ort.InferenceSession(str(tmp_path / "enc.onnx")).run(None, {"x": x})
    np.testing.assert_allclose(z, ecgmae.load(runs[run]).embed(x, fs=100), atol=1e-4)


def test_export_cli_and_a_failed_parity_writes_nothing(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(runs["ft"]), "--format", "onnx", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert out.exists() and "max abs diff" in printed
    worst = max(json.loads(printed.strip().splitlines()[-1]).values())
    assert 0 <= worst <= 1e-4

    import ecgmae.export as export_mod

    monkeypatch.setattr(export_mod, "_parity", lambda *a, **k: {"logits": 0.5, "probabilities": 0.1})
    bad = tmp_path / "bad.onnx"
    assert main(["export", "--checkpoint", str(runs["ft"]), "--out", str(bad), "--quiet"]) == 2
    assert "differ from PyTorch by up to 0.5" in capsys.readouterr().err
    assert not bad.exists() and not list(tmp_path.glob(".bad.onnx*"))


def test_the_shipped_model_exports(tmp_path):
    """``ecgmae-small`` pools with token statistics, whose first difference in time ONNX had no operator for."""
    from ecgmae.export import export_onnx

    rep = export_onnx("ecgmae-small", tmp_path / "small.onnx")
    assert rep["outputs"] == ["embedding"] and rep["inputs"]["x"] == ["batch", 12, 1000]
    assert rep["max_abs_diff"]["embedding"] <= 1e-4
