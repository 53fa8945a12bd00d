"""Pre-training options: SimCLR augmentation strengths, CMSC same-patient positives, MAE lead-presence masks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import synth_store
from ecgmae.config import ConfigError, from_dict
from ecgmae.engine.config import AugmentConfig, PretrainConfig, TrainerConfig

CPU = TrainerConfig(accelerator="cpu", devices="1", precision="32", log_every=1)
TINY = {"model": "ecgmae_tiny", "batch_size": 8, "trainer": CPU}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synth_store(tmp_path_factory.mktemp("opt"), 24, seed=5)


@pytest.fixture(scope="module")
def patient_store(tmp_path_factory) -> Path:
    """12 records: patients A (records 0-3), B (4-6), C (7); records 8-11 name no patient."""
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.sources.synthetic import write_wfdb_folder
    from ecgmae.data.store import prepare_store

    root = tmp_path_factory.mktemp("patients")
    src = write_wfdb_folder(root / "synth", 12, fs=250, seconds=5, seed=9, noise="low", quiet=True)
    table = pd.read_csv(src / "labels.csv", dtype=str)
    table["patient"] = ["A"] * 4 + ["B"] * 3 + ["C"] + [""] * 4
    table.to_csv(src / "labels.csv", index=False)
    return prepare_store("folder", src, root / "store", PreprocessConfig(fs=50, seconds=5), seed=0, quiet=True)


# -------------------------------------------------------------------------------------------- config
def test_augment_strengths_are_config_fields_and_are_checked():
    cfg = from_dict(PretrainConfig, {"method": "simclr", "augment": {"noise": 0.1, "lead_drop": 0}})
    assert cfg.augment == AugmentConfig(noise=0.1, lead_drop=0.0)
    for bad in ({"scale": 1.0}, {"noise": -0.1}, {"time_mask": 1.2}, {"lead_drop": -0.5}):
        with pytest.raises(ConfigError, match=f"augment.{next(iter(bad))}"):
            from_dict(PretrainConfig, {"augment": bad})


def test_positives_are_checked():  # what "patient" does: test_cmsc_with_patient_positives_trains_end_to_end
    with pytest.raises(ConfigError, match="positives must be one of"):
        PretrainConfig(method="cmsc", positives="study")
    with pytest.raises(ConfigError, match="applies to method cmsc"):
        PretrainConfig(method="simclr", positives="patient")


def test_cli_augment_settings_reach_the_training_step(store, tmp_path, monkeypatch):
    import ecgmae.engine.modules as modules
    from ecgmae.cli import main

    seen: list[AugmentConfig] = []
    real = modules.augment

    def spy(x, gen, cfg=None):
        seen.append(cfg)
        return real(x, gen, cfg)

    monkeypatch.setattr(modules, "augment", spy)
    torch.set_num_threads(1)
    assert (
        main(
            [
                "pretrain",
                "--data",
                str(store),
                "--out",
                str(tmp_path / "r"),
                "--method",
                "simclr",
                "--model",
                "ecgmae_tiny",
                "--max-steps",
                "1",
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
                "augment.noise=0.2",
                "--set",
                "augment.time_mask=0",
            ]
        )
        == 0
    )
    assert seen and all(c == AugmentConfig(noise=0.2, time_mask=0.0) for c in seen)
    header = json.loads((tmp_path / "r" / "config.json").read_text())
    assert header["train"]["config"]["augment"]["noise"] == 0.2


# ----------------------------------------------------------------------------------- patient positives
def test_group_keys_share_a_key_only_within_a_named_patient():
    from ecgmae.data.splits import group_keys

    g = group_keys(["A", "A", "", "B", "", "A"], ["r0", "r1", "r2", "r3", "r4", "r5"])
    assert g[0] == g[1] == g[5] and len({g[0], g[2], g[3], g[4]}) == 4


def _pairs(patient_store, *, train: bool, epoch: int = 0):
    from ecgmae.data.dataset import CropDataset
    from ecgmae.data.splits import group_keys
    from ecgmae.data.store import Store
    from ecgmae.engine.data import PairSpanDataset

    st = Store.open(patient_store)
    idx = np.arange(len(st))
    _, groups = np.unique(group_keys(st.index["patient"].tolist(), st.index["record"].tolist()), return_inverse=True)
    ds = PairSpanDataset(CropDataset(st, idx, 100, train=train, seed=3), groups)
    ds.set_epoch(epoch)
    return st, ds, groups


def _source_of(st, window: np.ndarray, candidates: range) -> set[int]:
    """Records (of ``candidates``) with a stretch equal to ``window`` (L, W)."""
    w = window.shape[1]
    found = set()
    for r in candidates:
        sig = st.signal(r)
        if any(np.array_equal(sig[:, s : s + w], window) for s in range(sig.shape[1] - w + 1)):
            found.add(r)
    return found


def test_same_patient_pairs_come_from_another_record_of_that_patient(patient_store):
    st, ds, groups = _pairs(patient_store, train=True)
    patients = st.index["patient"].tolist()
    for i in range(len(st)):
        item, j = ds[i], ds.partner(i)
        x = item["x"].numpy()
        assert item["group"] == groups[i]
        if patients[i] in ("A", "B"):
            assert j != i and patients[j] == patients[i]
            assert i in _source_of(st, x[:, :100], range(len(st)))
            assert j in _source_of(st, x[:, 100:], range(len(st)))
        else:  # a patient with one record, or none named: two adjacent segments of the record itself
            assert j == i and np.array_equal(x, st.signal(i, *(lambda s: (s[0], s[1] + 100))(ds.starts(i))))


def test_partners_are_seeded_per_epoch_and_fixed_for_validation(patient_store):
    _, a0, _ = _pairs(patient_store, train=True, epoch=0)
    _, b0, _ = _pairs(patient_store, train=True, epoch=0)
    assert [a0.partner(i) for i in range(12)] == [b0.partner(i) for i in range(12)]
    per_epoch = {_pairs(patient_store, train=True, epoch=e)[1].partner(0) for e in range(12)}
    assert per_epoch <= {1, 2, 3} and len(per_epoch) >= 2  # patient A's other records, drawn anew
    val = {_pairs(patient_store, train=False, epoch=e)[1].partner(0) for e in range(4)}
    assert len(val) == 1


def test_cmsc_with_patient_positives_trains_end_to_end(patient_store, tmp_path, monkeypatch):
    import ecgmae.engine.modules as modules
    from ecgmae.checkpoint import read_header
    from ecgmae.data.store import Store
    from ecgmae.engine.run import pretrain

    rows: list[list[int]] = []  # records of each training batch
    keys: list[list[int]] = []  # the ids the CMSC loss keeps out of each other's negatives
    losses: list[float] = []
    real_step, real_loss = modules.ContrastiveModule.training_step, modules.cmsc_loss

    def step(self, batch, batch_idx):
        rows.append(batch["index"].tolist())
        return real_step(self, batch, batch_idx)

    def loss(z1, z2, temperature, ids=None):
        out = real_loss(z1, z2, temperature, ids=ids)
        keys.append(ids.tolist())
        losses.append(float(out.detach()))
        return out

    monkeypatch.setattr(modules.ContrastiveModule, "training_step", step)
    monkeypatch.setattr(modules, "cmsc_loss", loss)
    torch.set_num_threads(1)
    cfg = PretrainConfig(method="cmsc", positives="patient", max_steps=2, splits=("train", "val", "test"), **TINY)
    out = pretrain(patient_store, tmp_path / "p", cfg, quiet=True)

    patients = Store.open(patient_store).index["patient"].fillna("").tolist()
    assert len(rows) == 2 and len(keys) == 2 and all(np.isfinite(losses))
    shared = 0
    for recs, ks in zip(rows, keys, strict=True):  # same id <=> same record, or the same named patient
        for a in range(len(recs)):
            for b in range(a + 1, len(recs)):
                same = recs[a] == recs[b] or (patients[recs[a]] != "" and patients[recs[a]] == patients[recs[b]])
                assert (ks[a] == ks[b]) == same, (recs, ks)
                shared += same and recs[a] != recs[b]
    assert shared > 0  # 8 of 12 records per batch: two of patient A's 4 or of B's 3 always meet
    header = read_header(out / "encoder.safetensors")
    assert header.kind == "encoder" and header.train.method == "cmsc" and header.train.steps == 2
    assert header.train.config["positives"] == "patient"


def test_patient_positives_without_patients_warn(store, tmp_path, caplog):
    from ecgmae.engine.run import pretrain

    torch.set_num_threads(1)
    with caplog.at_level(logging.WARNING, logger="ecgmae"):
        pretrain(
            store, tmp_path / "w", PretrainConfig(method="cmsc", positives="patient", max_steps=1, **TINY), quiet=True
        )
    assert "names no patient with several records" in caplog.text


# ---------------------------------------------------------------------------------- MAE lead presence
def test_all_present_reports_missing_leads(store):
    from ecgmae.data.store import Store

    st = Store.open(store)
    assert st.all_present()
    st._present[0, 3] = False  # as if record 0 lacked V1
    assert not st.all_present() and not st.all_present([0, 1]) and st.all_present([1, 2])


def test_all_true_presence_gives_the_same_loss_as_none():
    from ecgmae.models import create_model

    mae = create_model("ecgmae_tiny", n_leads=12, fs=50).eval()
    x = torch.randn(3, 12, 250, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    with_mask = mae(x, present=torch.ones(3, 12, dtype=torch.bool)).loss
    torch.manual_seed(1)
    assert torch.allclose(with_mask, mae(x, present=None).loss, rtol=1e-5)


@pytest.mark.parametrize("drop_lead", [False, True])
def test_engine_passes_presence_only_when_a_lead_is_missing(store, tmp_path, monkeypatch, drop_lead):
    from ecgmae.data.store import Store
    from ecgmae.engine.run import pretrain
    from ecgmae.models.mae import ECGMAE

    seen: list[bool] = []
    real = ECGMAE.forward

    def spy(self, x, *args, present=None, **kw):
        seen.append(present is None)
        return real(self, x, *args, present=present, **kw)

    monkeypatch.setattr(ECGMAE, "forward", spy)
    if drop_lead:
        real_open = Store.open

        def open_missing(path):
            st = real_open(path)
            st._present[:, 3] = False
            return st

        monkeypatch.setattr(Store, "open", staticmethod(open_missing))
    torch.set_num_threads(1)
    pretrain(store, tmp_path / "m", PretrainConfig(max_steps=1, **TINY), quiet=True)
    assert seen and all(s is not drop_lead for s in seen)


def test_cli_lead_drop_reaches_the_model_and_is_checked(store, tmp_path, monkeypatch, capsys):
    import ecgmae.models.mae as mae
    from ecgmae.cli import main

    calls: list[float] = []
    real = mae.subset_leads
    monkeypatch.setattr(mae, "subset_leads", lambda present, p: calls.append(p) or real(present, p))
    torch.set_num_threads(1)
    args = [
        "pretrain",
        "--data",
        str(store),
        "--model",
        "ecgmae_tiny",
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
        "--lead-drop",
        "0.5",
    ]
    assert main([*args, "--out", str(tmp_path / "r"), "--set", "model_overrides.tokenization=time"]) == 0
    assert calls == [0.5, 0.5]  # one draw per training step
    header = json.loads((tmp_path / "r" / "config.json").read_text())
    assert header["model"]["config"]["lead_drop"] == 0.5
    assert main([*args, "--out", str(tmp_path / "bad")]) != 0  # ecgmae_tiny has lead tokens
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lead_drop" in err[0] and "tokenization='time'" in err[0]
