"""End-to-end engine tests on a tiny synthetic store: prepare -> pretrain -> finetune -> evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import sklearn_macro_auroc, synth_store
from ecgmae.cli import main
from ecgmae.config import ConfigError
from ecgmae.engine.config import FinetuneConfig, OptimConfig, PretrainConfig, TrainerConfig
from ecgmae.engine.run import evaluate, finetune, pretrain
from ecgmae.errors import DataError

CPU = TrainerConfig(accelerator="cpu", devices="1", precision="32", log_every=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synth_store(tmp_path_factory.mktemp("engine"), 160, seed=3)


def _pre(**kw) -> PretrainConfig:
    base = dict(model="ecgmae_tiny", epochs=2, batch_size=16, trainer=CPU, optim=OptimConfig(lr=2e-3))
    return PretrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def mae_run(store, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return pretrain(store, tmp_path_factory.mktemp("runs") / "mae", _pre(epochs=6), quiet=True)


def test_pretrain_writes_loadable_artefacts_and_loss_falls(mae_run):
    import pandas as pd

    from ecgmae.checkpoint import read_header

    header = read_header(mae_run / "encoder.safetensors")
    assert header.kind == "encoder" and header.data.fs == 50
    assert header.model.encoder.fs == 50.0 and header.model.name == "ecgmae_tiny"
    assert (mae_run / "last.ckpt").exists() and (mae_run / "model_card.json").exists()
    m = pd.read_csv(mae_run / "metrics.csv")
    ep = m.dropna(subset=["train/loss_epoch"])["train/loss_epoch"].to_numpy()
    assert len(ep) == 6 and ep[-1] < 0.8 * ep[0], ep


def test_existing_run_is_not_overwritten(store, mae_run):
    before = {p.name: p.read_bytes() for p in mae_run.iterdir() if p.is_file()}
    with pytest.raises(DataError) as exc:
        pretrain(store, mae_run, _pre(), quiet=True)
    assert str(exc.value) == (
        f"{mae_run}: already holds encoder.safetensors; pass --resume to continue or --overwrite to redo"
    )
    assert {p.name: p.read_bytes() for p in mae_run.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_linprobe_beats_untrained_encoder(store, mae_run, tmp_path):
    init = pretrain(store, tmp_path / "init", _pre(max_steps=0), quiet=True)
    ft = FinetuneConfig(mode="linprobe", epochs=8, batch_size=16, trainer=CPU, n_boot=20, optim=OptimConfig(lr=1e-2))
    trained = finetune(store, tmp_path / "lp", ft, encoder=mae_run, quiet=True)
    untrained = finetune(store, tmp_path / "lp0", ft, encoder=init, quiet=True)
    assert trained["macro_auroc"] > untrained["macro_auroc"] + 0.02, (trained["macro_auroc"], untrained["macro_auroc"])
    # evaluate re-scores the saved classifier on the same split and finds the same numbers
    rep = evaluate(tmp_path / "lp", store, split="test", n_boot=20)
    assert rep["macro_auroc"] == pytest.approx(trained["macro_auroc"], abs=1e-6)
    assert set(rep["per_class_auroc"]) == set(trained["per_class_auroc"])


def test_finetune_and_scratch_cli(store, mae_run, tmp_path, capsys):
    args = [
        "--data",
        str(store),
        "--max-steps",
        "6",
        "--batch-size",
        "16",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--precision",
        "32",
        "--quiet",
        "--set",
        "n_boot=10",
    ]
    assert (
        main(
            [
                "finetune",
                "--out",
                str(tmp_path / "ft"),
                "--mode",
                "finetune",
                "--encoder",
                str(mae_run),
                "--label-fraction",
                "0.1",
                *args,
            ]
        )
        == 0
    )
    assert main(["finetune", "--out", str(tmp_path / "sc"), "--mode", "scratch", "--model", "ecgmae_tiny", *args]) == 0
    for run in ("ft", "sc"):
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        macro, per = sklearn_macro_auroc(tmp_path / run, store)  # the same numbers, computed independently
        assert metrics["macro_auroc"] == pytest.approx(macro, abs=1e-6)
        defined = {k: v for k, v in metrics["per_class_auroc"].items() if v is not None}  # None: no positive
        assert defined == pytest.approx(per, abs=1e-6) and len(metrics["per_class_auroc"]) >= len(per)
        assert (tmp_path / run / "classifier.safetensors").exists()
        assert not (tmp_path / run / "best.ckpt").exists()
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["label_fraction"] == 0.1
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ft"), "--data", str(store), "--n-boot", "10"]) == 0
    assert "macro AUROC" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_gives_the_same_weights(store, tmp_path, monkeypatch):
    import lightning as L

    import ecgmae.engine.run as run_mod

    cfg = _pre(epochs=3, batch_size=32)
    full = pretrain(store, tmp_path / "full", cfg, quiet=True)

    class Kill(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 2:
                raise RuntimeError("simulated crash")

    real = run_mod.build_trainer

    def crashing(*a, **k):
        t = real(*a, **k)
        t.callbacks.append(Kill())
        return t

    monkeypatch.setattr(run_mod, "build_trainer", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(store, tmp_path / "cut", cfg, quiet=True)
    assert (tmp_path / "cut" / "last.ckpt").exists() and not (tmp_path / "cut" / "encoder.safetensors").exists()
    monkeypatch.setattr(run_mod, "build_trainer", real)
    pretrain(store, tmp_path / "cut", cfg, resume=True, quiet=True)
    a = load_file(full / "encoder.safetensors")
    b = load_file(tmp_path / "cut" / "encoder.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-exact (tests/test_resume_kill.py: after kill -9 too)


def test_same_seed_same_numbers(store, tmp_path):
    a = pretrain(store, tmp_path / "a", _pre(max_steps=3), quiet=True)
    b = pretrain(store, tmp_path / "b", _pre(max_steps=3), quiet=True)
    c = pretrain(store, tmp_path / "c", _pre(max_steps=3, seed=1), quiet=True)
    wa, wb, wc = (load_file(r / "encoder.safetensors") for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_config_errors_are_clear(tmp_path, store, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlearning_rate: 0.1\n")
    code = main(["pretrain", "--data", str(store), "--out", str(tmp_path / "x"), "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "learning_rate" in err and str(bad) in err
    with pytest.raises(ConfigError, match="mode"):
        FinetuneConfig(mode="probe")
    assert (
        main(
            ["pretrain", "--data", str(store), "--out", str(tmp_path / "y"), "--set", "optim.lr=5e-4", "--print-config"]
        )
        == 0
    )
    assert "lr: 0.0005" in capsys.readouterr().out
    code = main(["finetune", "--data", str(store), "--out", str(tmp_path / "z"), "--mode", "linprobe"])
    assert code == 2 and "--encoder" in capsys.readouterr().err


DDP_SPY = """
import os, sys, torch
from ecgmae.engine import modules

out, seen = os.environ["ECGMAE_DDP_SPY"], {"indices": [], "local": [], "synced": None}
real_step = modules.MAEModule.training_step


def training_step(self, batch, batch_idx):
    seen["indices"].append(batch["index"].tolist())
    if batch_idx == 0:  # the local gradient of one weight, before DDP's all-reduce replaces it
        w = self.model.decoder_pred.weight
        seen["hook"] = w.register_hook(lambda g: seen["local"].append(g.detach().clone()))
    return real_step(self, batch, batch_idx)


def on_after_backward(self):
    if seen["synced"] is None:
        seen["synced"] = self.model.decoder_pred.weight.grad.detach().clone()
        seen.pop("hook").remove()


def on_train_end(self):
    seen["weights"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
    torch.save(seen, os.path.join(out, f"rank{self.global_rank}.pt"))


modules.MAEModule.training_step = training_step
modules.MAEModule.on_after_backward = on_after_backward
modules.MAEModule.on_train_end = on_train_end
from ecgmae.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes(store, tmp_path):
    """Two ranks draw disjoint records, their gradients are averaged, and they end with the same weights."""
    spy = tmp_path / "spy.py"
    spy.write_text(DDP_SPY)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
        "ECGMAE_DDP_SPY": str(tmp_path),
    }
    cmd = [
        sys.executable,
        str(spy),
        "pretrain",
        "--data",
        str(store),
        "--out",
        str(tmp_path / "ddp"),
        "--model",
        "ecgmae_tiny",
        "--max-steps",
        "3",
        "--batch-size",
        "8",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--precision",
        "32",
        "--quiet",
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert meta["model"]["name"] == "ecgmae_tiny"
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    # each rank takes its own batch of 8 per step, from its own shard of the training split
    assert len(r0["indices"]) == len(r1["indices"]) == 3
    for a, b in zip(r0["indices"], r1["indices"], strict=True):
        assert len(a) == len(b) == 8 and not set(a) & set(b)
    seen0, seen1 = ({i for step in r["indices"] for i in step} for r in (r0, r1))
    assert not seen0 & seen1 and len(seen0) == len(seen1) == 24
    from ecgmae.data.store import Store

    assert seen0 | seen1 <= set(Store.open(store).split_indices("train").tolist())
    # the step-0 gradient each rank applies is the mean of the two local gradients
    (g0,), (g1,) = r0["local"], r1["local"]
    assert not torch.allclose(g0, g1)  # different data, different local gradients
    for r in (r0, r1):
        torch.testing.assert_close(r["synced"], (g0 + g1) / 2, rtol=1e-5, atol=1e-7)
    # so both ranks hold the same weights at the end, and rank 0 wrote them
    assert r0["weights"].keys() == r1["weights"].keys()
    for k in r0["weights"]:
        torch.testing.assert_close(r0["weights"][k], r1["weights"][k], rtol=0, atol=0)
    w = load_file(tmp_path / "ddp" / "encoder.safetensors")
    assert all(np.isfinite(v.numpy()).all() for v in w.values())
    for k, v in w.items():
        torch.testing.assert_close(v, r0["weights"][f"encoder.{k}"], rtol=0, atol=0)


def test_non_finite_loss_aborts_with_a_clear_message(store, tmp_path, monkeypatch):
    from ecgmae.models.mae import ECGMAE

    real = ECGMAE.forward

    def nan_loss(self, *a, **k):
        out = real(self, *a, **k)
        return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr(ECGMAE, "forward", nan_loss)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* epoch 0, step 0"):
        pretrain(store, tmp_path / "nan", _pre(max_steps=2), quiet=True)
    assert not (tmp_path / "nan" / "encoder.safetensors").exists()


def test_sparse_checks_keep_the_weights_and_validate_every_k_epochs(store, mae_run, tmp_path):
    """check_every=20 steps on 8-step epochs: validation + last.ckpt every 3rd epoch, same training."""
    import dataclasses

    import pandas as pd

    from ecgmae.engine.trainer import check_interval

    assert check_interval(20, 8) == 3 and check_interval(0, 8) == 1 and check_interval(5, 8) == 1
    torch.set_num_threads(1)
    sparse = dataclasses.replace(CPU, check_every=20)
    run = pretrain(store, tmp_path / "sparse", _pre(epochs=6, trainer=sparse), quiet=True)
    m = pd.read_csv(run / "metrics.csv")
    val_epochs = m.dropna(subset=["val/loss"])["epoch"].astype(int).tolist()
    assert val_epochs == [2, 5], val_epochs
    every_epoch = pd.read_csv(mae_run / "metrics.csv").dropna(subset=["val/loss"])["epoch"].astype(int).tolist()
    assert every_epoch == list(range(6))
    a, b = load_file(run / "encoder.safetensors"), load_file(mae_run / "encoder.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 5


def test_pretraining_checks_every_200_steps_by_default():
    assert PretrainConfig().trainer.check_every == 200 and TrainerConfig().check_every == 0
    with pytest.raises(ConfigError, match="check_every"):
        TrainerConfig(check_every=-1)


def test_window_is_checked_against_the_records(store, tmp_path, caplog):
    """Issue 13: a 100000 s window on 5 s records is refused before anything is allocated."""
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.sources.synthetic import write_wfdb_folder
    from ecgmae.data.store import prepare_store
    from ecgmae.errors import DataError

    for seconds in (100000.0, 60.0):
        with pytest.raises(DataError, match=r"longer than every record of the store \(longest 5 s\)"):
            pretrain(store, tmp_path / f"w{seconds:g}", _pre(max_steps=1, window_seconds=seconds), quiet=True)
    src = write_wfdb_folder(tmp_path / "short", 24, fs=100, seconds=3, seed=1, noise="low", quiet=True)
    padded = prepare_store("folder", src, tmp_path / "padded", PreprocessConfig(fs=50, seconds=10), quiet=True)
    with caplog.at_level("WARNING", logger="ecgmae"):
        pretrain(padded, tmp_path / "pad", _pre(max_steps=1), quiet=True)
    assert "70 % zero padding" in caplog.text


def test_finetuning_an_unlabelled_store_says_so(tmp_path):
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.sources.synthetic import write_wfdb_folder
    from ecgmae.data.store import prepare_store
    from ecgmae.errors import DataError

    src = write_wfdb_folder(tmp_path / "raw", 12, fs=100, seconds=5, seed=2, noise="low", quiet=True)
    (src / "labels.csv").unlink()
    bare = prepare_store("folder", src, tmp_path / "bare", PreprocessConfig(fs=50, seconds=5), quiet=True)
    cfg = FinetuneConfig(mode="scratch", model="ecgmae_tiny", epochs=1, batch_size=4, trainer=CPU)
    with pytest.raises(DataError, match="no labelled record"):
        finetune(bare, tmp_path / "ft", cfg, quiet=True)


def test_leakage_test_patients_checked_against_the_encoders_pretraining_data(store, mae_run, tmp_path, caplog):
    from ecgmae.data.store import Store

    st = Store.open(store)
    test = st.index.iloc[st.split_indices("test")]
    # the synthetic store has no patient ids: each record is its own patient, compared by record id
    assert (test["patient"].fillna("") == "").all()
    expected = {f"record:{r}" for r in test["record"]}
    n_test_patients = len(expected)
    ft = FinetuneConfig(mode="linprobe", max_steps=1, batch_size=16, trainer=CPU, n_boot=5)
    # pre-trained on the train split only (the default): checked, nothing shared
    clean = finetune(store, tmp_path / "clean", ft, encoder=mae_run, quiet=True)
    assert clean["leakage"]["checked"] and clean["leakage"]["shared_patients"] == 0
    assert clean["leakage"]["pretrain_splits"] == ["train"]
    # pre-trained on every split: each test patient is shared; warned and recorded in metrics.json
    leaky = pretrain(store, tmp_path / "all", _pre(max_steps=0, splits=("train", "val", "test")), quiet=True)
    caplog.clear()
    rep = finetune(store, tmp_path / "leaky", ft, encoder=leaky, quiet=True)
    assert rep["leakage"]["shared_patients"] == n_test_patients > 0
    assert set(rep["leakage"]["examples"]) <= expected and len(rep["leakage"]["examples"]) == 10
    assert any(
        "patient(s) of the test split were in the encoder's pre-training data" in r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING"
    )
    saved = json.loads((tmp_path / "leaky" / "metrics.json").read_text())["leakage"]
    assert saved["shared_patients"] == n_test_patients
    # --leakage refuse stops before any training
    with pytest.raises(DataError, match=r"test split were in the encoder's pre-training data .*refuse"):
        finetune(
            store,
            tmp_path / "refused",
            FinetuneConfig(**{**ft.__dict__, "leakage": "refuse"}),
            encoder=leaky,
            quiet=True,
        )
    assert not (tmp_path / "refused" / "classifier.safetensors").exists()
    # the pre-training store gone: said, not checked, not an error
    import shutil

    moved = tmp_path / "store_copy"
    shutil.copytree(store, moved)
    gone = pretrain(moved, tmp_path / "gone", _pre(max_steps=0, splits=("train", "val", "test")), quiet=True)
    shutil.rmtree(moved)
    rep = finetune(store, tmp_path / "unchecked", ft, encoder=gone, quiet=True)
    assert rep["leakage"]["checked"] is False and rep["leakage"]["shared_patients"] is None


def test_leakage_flag_on_the_command_line(store, tmp_path, capsys):
    leaky = pretrain(store, tmp_path / "all", _pre(max_steps=0, splits=("train", "val", "test")), quiet=True)
    args = [
        "finetune",
        "--data",
        str(store),
        "--out",
        str(tmp_path / "ft"),
        "--mode",
        "linprobe",
        "--encoder",
        str(leaky),
        "--max-steps",
        "1",
        "--batch-size",
        "16",
        "--accelerator",
        "cpu",
        "--quiet",
        "--leakage",
        "refuse",
    ]
    capsys.readouterr()  # what pre-training logged
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--leakage refuse" in err[0] and "Traceback" not in err[0]


def test_a_probes_card_and_header_name_the_encoders_model(store, mae_run, tmp_path):
    from ecgmae.checkpoint import read_header

    ft = FinetuneConfig(mode="linprobe", max_steps=1, batch_size=16, trainer=CPU, n_boot=5)
    assert ft.model == "ecgmae_small"  # the config's default, which the encoder (ecgmae_tiny) overrides
    finetune(store, tmp_path / "lp", ft, encoder=mae_run, quiet=True)
    card = json.loads((tmp_path / "lp" / "model_card.json").read_text())
    header = read_header(tmp_path / "lp" / "classifier.safetensors")
    begun = json.loads((tmp_path / "lp" / "config.json").read_text())
    for train_config in (card["train"]["config"], header.train.config, begun["train"]["config"]):
        assert train_config["model"] == "ecgmae_tiny" and train_config["model_overrides"] == {}
    assert card["model"]["name"] == header.model.name == "ecgmae_tiny"
