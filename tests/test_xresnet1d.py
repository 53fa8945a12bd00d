"""The supervised reference CNN (xresnet1d50/101): shapes, lead handling, scratch training, save -> load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgmae.cli import main
from ecgmae.config import ConfigError
from ecgmae.models import XResNet1d, create_model


@pytest.mark.parametrize(("arch", "blocks"), [("xresnet1d50", 16), ("xresnet1d101", 33)])
def test_forward_backward_is_finite(arch, blocks):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=5)
    assert len(model.blocks) == blocks and model.num_features == 2 * 2048
    x = torch.randn(2, 12, 64)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    groups = model.param_groups(0.05)
    assert {g["weight_decay"] for g in groups} == {0.0, 0.05}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_lead_subset_is_zero_filled_at_its_canonical_positions():
    torch.manual_seed(0)
    model = create_model("xresnet1d50", num_classes=3).eval()
    x = torch.randn(2, 2, 64)
    full = torch.zeros(2, 12, 64)
    full[:, [1, 7]] = x
    assert torch.allclose(model(x, lead_idx=torch.tensor([1, 7])), model(full), atol=1e-6)
    with pytest.raises(ValueError, match="pass lead_idx"):
        model(x)


def test_unknown_arch_is_refused():
    with pytest.raises(ConfigError, match="unknown model 'xresnet1d18'"):
        create_model("xresnet1d18", num_classes=2)
    with pytest.raises(ConfigError, match="kernel_sise"):
        create_model("xresnet1d50", num_classes=2, kernel_sise=7)


def test_save_then_load_gives_the_same_logits(tmp_path):
    from ecgmae.checkpoint import load_model, save_checkpoint
    from ecgmae.header import RunHeader
    from ecgmae.models import ModelSpec, get_config

    torch.manual_seed(1)
    spec = ModelSpec("classifier", "xresnet1d50", get_config("xresnet1d50", kernel_size=7), num_classes=4)
    model = create_model("xresnet1d50", num_classes=4, kernel_size=7)
    model.train()
    model(torch.randn(4, 12, 64))  # move the BN running statistics off their defaults
    model.eval()
    save_checkpoint(tmp_path / "c.safetensors", model.state_dict(), RunHeader(spec))
    loaded, header, _ = load_model(tmp_path / "c.safetensors", kind="classifier")
    assert isinstance(loaded, XResNet1d) and header.model == spec and loaded.cfg.kernel_size == 7
    x = torch.randn(3, 12, 64)
    assert torch.equal(loaded(x), model(x))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.sources.synthetic import write_wfdb_folder
    from ecgmae.data.store import prepare_store

    root = tmp_path_factory.mktemp("xresnet")
    src = write_wfdb_folder(root / "synth", 40, fs=250, seconds=5, seed=5, noise="low", quiet=True)
    cfg = PreprocessConfig(fs=50, seconds=5, bandpass=None)  # ONNX and the API see the same raw windows
    return prepare_store("folder", src, root / "store", cfg, seed=0, quiet=True)


@pytest.mark.slow
def test_scratch_cli_trains_and_the_run_reloads(store, tmp_path, capsys):
    import ecgmae
    from ecgmae.checkpoint import load_model
    from ecgmae.engine.run import evaluate

    torch.set_num_threads(1)
    run = tmp_path / "cnn"
    assert (
        main(
            [
                "finetune",
                "--data",
                str(store),
                "--out",
                str(run),
                "--mode",
                "scratch",
                "--model",
                "xresnet1d50",
                "--max-steps",
                "2",
                "--batch-size",
                "8",
                "--accelerator",
                "cpu",
                "--devices",
                "1",
                "--precision",
                "32",
                "--quiet",
                "--set",
                "n_boot=5",
            ]
        )
        == 0
    )
    metrics = json.loads((run / "metrics.json").read_text())
    model, header, _ = load_model(run, kind="classifier")
    assert isinstance(model, XResNet1d) and header.model.arch == "xresnet1d50"
    assert header.model.num_classes == len(header.label_names) > 0
    # the reloaded weights score the test split exactly as the run did
    again = evaluate(run, store, n_boot=5, seed=0)
    assert again["macro_auroc"] == pytest.approx(metrics["macro_auroc"], abs=1e-9)
    api = ecgmae.load(run)
    probs = api.predict_proba(np.zeros((12, 250), np.float32), fs=50)
    assert probs.shape == (len(header.label_names),) and np.all((probs >= 0) & (probs <= 1))
    assert api.embed_dim == 4096
    # the CNN exports to ONNX with the same probabilities as the API (dynamic batch, metadata)
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from ecgmae.export import export_onnx

    rep = export_onnx(run, tmp_path / "cnn.onnx")
    assert rep["kind"] == "classifier" and max(rep["max_abs_diff"].values()) <= 1e-4
    x = np.random.default_rng(0).standard_normal((4, 12, 250)).astype(np.float32)
    _, onnx_probs = ort.InferenceSession(str(tmp_path / "cnn.onnx")).run(None, {"x": x})
    np.testing.assert_allclose(onnx_probs, api.predict_proba(x, fs=50), atol=1e-4)
