"""Torch datasets over a store: crop shapes, seeded determinism, windows covering records, lead subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import wfdb

from ecgmae.data.dataset import CropDataset, WindowDataset, check_no_leakage
from ecgmae.data.io import LEADS_12
from ecgmae.data.signal import PreprocessConfig
from ecgmae.data.store import Store, prepare_store
from ecgmae.errors import DataError

SECONDS = (10, 4, 17, 10, 12)  # at 100 Hz: 1000, 400 (padded to 1000), 1700, 1000, 1200 samples


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("ds")
    src = root / "raw"
    src.mkdir()
    for i, seconds in enumerate(SECONDS):
        x = np.random.default_rng(i).normal(size=(seconds * 250, 12)).cumsum(0) * 0.01
        wfdb.wrsamp(
            f"r{i}", fs=250, units=["mV"] * 12, sig_name=list(LEADS_12), p_signal=x, fmt=["16"] * 12, write_dir=str(src)
        )
    (src / "labels.csv").write_text("record,labels\nr0,A\nr1,B\nr2,A;B\nr3,\nr4,B\n")
    return Store.open(prepare_store("folder", src, root / "store", PreprocessConfig(fs=100, seconds=10), quiet=True))


def test_crop_items(store: Store) -> None:
    ds = CropDataset(store, np.arange(len(store)), 250, train=True, seed=0)
    assert len(ds) == 5
    item = ds[2]
    assert item["x"].shape == (12, 250) and item["x"].dtype == torch.float32
    assert item["y"].tolist() == [1.0, 1.0] and item["present"].dtype == torch.bool and item["present"].all()
    assert item["index"] == 2 and item["valid"] == 250
    start = ds.start(2)
    assert 0 <= start <= 1700 - 250
    np.testing.assert_array_equal(item["x"].numpy(), store.signal(2)[:, start : start + 250])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert batch["x"].shape == (5, 12, 250) and batch["y"].shape == (5, 2)
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]


def test_crops_are_seeded_per_epoch(store: Store) -> None:
    idx = np.arange(len(store))
    a, b = CropDataset(store, idx, 100, train=True, seed=3), CropDataset(store, idx, 100, train=True, seed=3)
    starts = [a.start(i) for i in range(5)]
    assert starts == [b.start(i) for i in range(5)]
    assert torch.equal(a[4]["x"], b[4]["x"])
    a.set_epoch(1)
    assert a.epoch == 1 and [a.start(i) for i in range(5)] != starts
    b.set_epoch(1)
    assert [a.start(i) for i in range(5)] == [b.start(i) for i in range(5)]
    other = CropDataset(store, idx, 100, train=True, seed=4)
    assert [other.start(i) for i in range(5)] != starts
    # the short record (400 real samples) is never cropped into its padding when the window fits
    for epoch in range(20):
        a.set_epoch(epoch)
        assert 0 <= a.start(1) <= 300


def test_eval_crop_is_centred_and_long_windows_are_padded(store: Store) -> None:
    ds = CropDataset(store, [2, 1], 500, train=False)
    assert ds.start(0) == (1700 - 500) // 2 and ds.start(1) == 0
    assert ds[0]["x"].shape == (12, 500)
    wide = CropDataset(store, [1], 1500, train=False)[0]
    assert wide["x"].shape == (12, 1500) and wide["valid"] == 400
    assert not wide["x"][:, 400:].any() and wide["x"][:, :400].any()


def test_windows_cover_every_record(store: Store) -> None:
    idx = np.array([4, 1, 2])
    ds = WindowDataset(store, idx, 300, 250)
    covered: dict[int, np.ndarray] = {p: np.zeros(store.valid_length(int(r)), bool) for p, r in enumerate(idx)}
    for i in range(len(ds)):
        item = ds[i]
        rec, start = item["record"], item["start"]
        assert item["index"] == idx[rec] and item["x"].shape == (12, 300)
        np.testing.assert_array_equal(
            item["x"].numpy()[:, : item["valid"]], store.signal(int(idx[rec]))[:, start : start + item["valid"]]
        )
        covered[rec][start : start + 300] = True
    assert all(c.all() for c in covered.values())
    starts = [ds[i]["start"] for i in range(len(ds)) if ds[i]["record"] == 2]
    assert starts == [0, 250, 500, 750, 1000, 1250, 1400]  # the last one ends exactly at 1700
    assert [ds[i]["record"] for i in range(len(ds))] == sorted(ds[i]["record"] for i in range(len(ds)))


def test_lead_subset(store: Store) -> None:
    ds = CropDataset(store, [0], 200, train=False, leads=["v1", "I", "aVF"])
    item = ds[0]
    full = CropDataset(store, [0], 200, train=False)[0]
    assert ds.leads == ("V1", "I", "aVF") and item["x"].shape == (3, 200)
    assert torch.equal(item["x"], full["x"][[6, 0, 5]]) and item["present"].shape == (3,)
    assert WindowDataset(store, [0], 200, 200, leads=["II"])[0]["x"].shape == (1, 200)
    with pytest.raises(DataError, match="unknown lead name"):
        CropDataset(store, [0], 200, train=True, leads=["vx"])
    with pytest.raises(DataError, match="indices outside"):
        CropDataset(store, [9], 200, train=True)


def test_store_pickles_without_its_memmap(store: Store) -> None:
    import pickle

    store.signal(0)
    clone = pickle.loads(pickle.dumps(CropDataset(store, [0, 1], 100, train=True)))
    assert torch.equal(clone[1]["x"], CropDataset(store, [0, 1], 100, train=True)[1]["x"])
    with pytest.raises(DataError, match="also appear"):
        check_no_leakage(store, store, split_b="train")
