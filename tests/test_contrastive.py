"""Contrastive pre-training (SimCLR, CMSC): losses, augmentations, two-window dataset, engine runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import sklearn_macro_auroc, synth_store
from ecgmae.cli import main
from ecgmae.config import ConfigError
from ecgmae.engine.augment import augment, lead_dropout, random_crop, time_mask
from ecgmae.engine.config import AugmentConfig, OptimConfig, PretrainConfig, TrainerConfig
from ecgmae.models.contrastive import cmsc_loss, nt_xent

CPU = TrainerConfig(accelerator="cpu", devices="1", precision="32", log_every=1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("loss", [nt_xent, cmsc_loss])
def test_losses_reward_matching_views(loss):
    z = torch.randn(16, 8, generator=_gen())
    matched = loss(z, z + 0.01 * torch.randn(16, 8, generator=_gen(1)), 0.1)
    shuffled = loss(z, z[torch.randperm(16, generator=_gen(2))], 0.1)
    assert matched < 0.1 < shuffled, (matched, shuffled)


@pytest.mark.parametrize("loss", [nt_xent, cmsc_loss])
def test_a_record_twice_in_a_batch_is_not_its_own_negative(loss):
    z = torch.randn(6, 8, generator=_gen())
    z[3] = z[0]  # the same record drawn twice (the sampler wraps around)
    ids = torch.tensor([0, 1, 2, 0, 4, 5])
    assert loss(z, z, 0.1, ids=ids) < loss(z, z, 0.1) - 0.1


def test_nt_xent_matches_a_direct_computation():
    z1, z2 = torch.randn(4, 5, generator=_gen()), torch.randn(4, 5, generator=_gen(1))
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=-1)
    sim = torch.exp(z @ z.T / 0.5)
    terms = []
    for i in range(8):
        j = (i + 4) % 8
        terms.append(-torch.log(sim[i, j] / (sim[i].sum() - sim[i, i])))
    assert torch.allclose(nt_xent(z1, z2, 0.5), torch.stack(terms).mean(), atol=1e-5)


# ------------------------------------------------------------------------------------ augmentations
def test_augmentations_are_seeded_and_keep_shapes():
    x = torch.randn(4, 3, 100, generator=_gen())
    a, b = augment(x, _gen(5)), augment(x, _gen(5))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, augment(x, _gen(6)))
    assert torch.equal(augment(x, _gen(5), AugmentConfig(0, 0, 0, 0, 0)), x)


def test_random_crop_takes_a_slice_of_each_example():
    x = torch.arange(2 * 60, dtype=torch.float32).reshape(2, 1, 60).repeat(1, 3, 1)
    out = random_crop(x, 25, _gen())
    assert out.shape == (2, 3, 25)
    for b in range(2):
        start = int(out[b, 0, 0] - x[b, 0, 0])
        assert torch.equal(out[b], x[b, :, start : start + 25])


def test_lead_dropout_keeps_a_lead_and_time_mask_one_short_stretch():
    x = torch.ones(64, 12, 200)
    dropped = lead_dropout(x, _gen(), p=0.99)
    assert (dropped.abs().sum(-1) > 0).sum(-1).min() >= 1
    assert 0 < (dropped == 0).float().mean() < 1
    masked = time_mask(x, _gen(), max_frac=0.2)
    zeros = masked[:, 0] == 0  # (B, T)
    assert zeros.sum(-1).max() <= 40 and zeros.any()
    for row in zeros:  # one contiguous stretch at most
        idx = torch.nonzero(row).flatten()
        assert len(idx) == 0 or int(idx[-1] - idx[0]) + 1 == len(idx)
    assert torch.equal(masked[:, 0], masked[:, 11])  # all leads hidden together


# ------------------------------------------------------------------------------------------- engine
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synth_store(tmp_path_factory.mktemp("contrastive"), 60, seed=4)


def _pre(**kw) -> PretrainConfig:
    base = dict(model="ecgmae_tiny", epochs=1, batch_size=16, trainer=CPU, optim=OptimConfig(lr=2e-3))
    return PretrainConfig(**{**base, **kw})


def test_pair_dataset_gives_adjacent_segments_or_first_and_last_window(store):
    from ecgmae.data.dataset import CropDataset
    from ecgmae.data.store import Store
    from ecgmae.engine.data import PairSpanDataset

    st = Store.open(store)
    idx = st.split_indices("train")
    adjacent = PairSpanDataset(CropDataset(st, idx, 125, train=True, seed=0))  # 2 x 125 = the 250 samples
    item = adjacent[0]
    assert item["x"].shape == (len(st.leads), 250)
    assert np.array_equal(item["x"].numpy(), st.signal(int(idx[0]), 0, 250))
    short = PairSpanDataset(CropDataset(st, idx, 150, train=True, seed=0))  # 300 > 250: two overlapping crops
    x = short[1]["x"].numpy()
    rec = int(idx[1])
    assert np.array_equal(x[:, :150], st.signal(rec, 0, 150))
    assert np.array_equal(x[:, 150:], st.signal(rec, 100, 250))


def test_method_is_checked():
    with pytest.raises(ConfigError, match="method must be one of"):
        PretrainConfig(method="byol")


@pytest.mark.parametrize("method", ["simclr", "cmsc"])
def test_contrastive_pretrain_writes_an_encoder_that_finetune_loads(store, tmp_path, method):
    torch.set_num_threads(1)
    from ecgmae.api import load
    from ecgmae.checkpoint import read_header

    args = [
        "--data",
        str(store),
        "--max-steps",
        "3",
        "--batch-size",
        "16",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--precision",
        "32",
        "--quiet",
        "--model",
        "ecgmae_tiny",
    ]
    assert main(["pretrain", "--out", str(tmp_path / method), "--method", method, "--temperature", "0.2", *args]) == 0
    run = tmp_path / method
    header = read_header(run / "encoder.safetensors")
    assert header.kind == "encoder" and header.train.method == method
    assert header.train.config["temperature"] == 0.2 and header.train.steps == 3
    assert header.data.window_samples == 125  # half the 5 s records at 50 Hz
    assert not (run / "mae.safetensors").exists()
    assert load(run).embed(np.zeros((12, 250), np.float32), fs=50).shape == (32,)
    assert (
        main(
            [
                "finetune",
                "--out",
                str(tmp_path / "lp"),
                "--mode",
                "linprobe",
                "--encoder",
                str(run),
                "--set",
                "n_boot=5",
                *[a for a in args if a not in ("--model", "ecgmae_tiny")],
            ]
        )
        == 0
    )
    macro, _ = sklearn_macro_auroc(tmp_path / "lp", store)
    assert json.loads((tmp_path / "lp" / "metrics.json").read_text())["macro_auroc"] == pytest.approx(macro, abs=1e-6)


def test_contrastive_runs_are_deterministic_and_learn(store, tmp_path):
    import pandas as pd

    from ecgmae.engine.run import pretrain

    torch.set_num_threads(1)
    a = pretrain(store, tmp_path / "a", _pre(method="simclr", max_steps=2), quiet=True)
    b = pretrain(store, tmp_path / "b", _pre(method="simclr", max_steps=2), quiet=True)
    wa, wb = load_file(a / "encoder.safetensors"), load_file(b / "encoder.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = pretrain(store, tmp_path / "c", _pre(method="cmsc", epochs=6, splits=("train", "val", "test")), quiet=True)
    ep = pd.read_csv(c / "metrics.csv").dropna(subset=["train/loss_epoch"])["train/loss_epoch"].to_numpy()
    assert len(ep) == 6 and ep[-1] < 0.9 * ep[0], ep
