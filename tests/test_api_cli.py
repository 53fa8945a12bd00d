"""The embed / predict / reconstruct commands, ``Model.reconstruct`` and the model cards, on the tiny runs of
``test_api.build_runs`` (the API itself: ``test_api.py``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import ecgmae
from conftest import shared_path, sklearn_macro_auroc
from ecgmae.checkpoint import load_checkpoint, save_checkpoint
from ecgmae.cli import main
from ecgmae.errors import CheckpointError, DataError
from test_api import _ecg, build_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return build_runs(tmp_path_factory.mktemp("api_cli"))


def test_embed_cli_on_the_real_cinc_folder(runs, tmp_path, capsys):
    from ecgmae.data.io import read_record

    folder = shared_path("cinc2021-sample")
    out = tmp_path / "emb.npz"
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(runs["mae"]),
                "--src",
                str(folder),
                "--out",
                str(out),
                "--quiet",
                "--device",
                "cpu",
                "--batch-size",
                "7",
            ]
        )
        == 0
    )
    assert "50 records x 32 dims" in capsys.readouterr().out
    data = np.load(out)
    stems = sorted(p.stem for p in folder.glob("*.hea"))
    assert data["record"].tolist() == stems and data["embedding"].shape == (50, 32)
    assert data["embedding"].dtype == np.float32 and len(data["skipped"]) == 0
    model = ecgmae.load(runs["mae"])
    for i in (0, 27, 49):
        np.testing.assert_allclose(
            data["embedding"][i], model.embed(read_record(folder / f"{stems[i]}.hea")), atol=1e-5
        )
    # one embedding per distinct signal (the sample holds one duplicate: E07509 and E07510 are identical)
    distinct = len({read_record(f).signal.tobytes() for f in sorted(folder.glob("*.hea"))})
    assert len(np.unique(data["embedding"].round(5), axis=0)) == distinct >= 49
    # the cinc source (labels from the headers) lists the same records in the same order
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(runs["ft"]),
                "--src",
                str(folder),
                "--source",
                "cinc",
                "--out",
                str(tmp_path / "c.npz"),
                "--quiet",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "c.npz")["record"].tolist() == stems


def test_predict_cli_from_store_and_folder(runs, tmp_path):
    import pandas as pd

    model = ecgmae.load(runs["ft"])
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(runs["ft"]),
                "--src",
                str(runs["store"]),
                "--source",
                "store",
                "--split",
                "test",
                "--out",
                str(tmp_path / "p.csv"),
                "--quiet",
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == ["record", *model.label_names, "skipped"] and table["skipped"].isna().all()
    metrics = json.loads((runs["ft"] / "metrics.json").read_text())
    assert len(table) == metrics["n_records"] and table[model.label_names].to_numpy().max() <= 1.0
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(runs["ft"]),
                "--src",
                str(runs["src"]),
                "--out",
                str(tmp_path / "raw.csv"),
                "--quiet",
            ]
        )
        == 0
    )
    raw = pd.read_csv(tmp_path / "raw.csv").set_index("record")
    # the raw 200 Hz files give what the 100 Hz store gives (float16 storage aside)
    both = raw.loc[table["record"], model.label_names].to_numpy()
    np.testing.assert_allclose(both, table[model.label_names].to_numpy(), atol=2e-3)
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(runs["mae"]),
                "--src",
                str(runs["src"]),
                "--out",
                str(tmp_path / "x.csv"),
                "--quiet",
            ]
        )
        == 2
    )


def test_predict_keeps_a_row_and_the_reason_for_every_skipped_record(runs, tmp_path):
    """12 unreadable records among good ones: each keeps its row, in source order, with its reason."""
    import shutil

    import pandas as pd

    src = tmp_path / "src"
    shutil.copytree(runs["src"], src)
    heads = sorted(src.glob("*.hea"))[:14]
    bad = {h.stem for h in heads[1:13]}
    for h in heads:
        if h.stem in bad:
            h.with_suffix(".dat").write_bytes(b"\x00" * 10)  # truncated signal file
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(runs["ft"]), "--src", str(src), "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table["record"].tolist() == sorted(h.stem for h in src.glob("*.hea"))
    model = ecgmae.load(runs["ft"])
    lost = table[table["skipped"] != ""]
    assert set(lost["record"]) == bad and all(".dat" in r or "truncat" in r for r in lost["skipped"])
    assert (lost[model.label_names] == "").all().all()
    kept = table[table["skipped"] == ""]
    assert len(kept) == len(table) - 12 and kept[model.label_names].astype(float).to_numpy().max() <= 1.0
    emb = tmp_path / "e.npz"
    assert main(["embed", "--checkpoint", str(runs["mae"]), "--src", str(src), "--out", str(emb), "--quiet"]) == 0
    data = np.load(emb)
    assert set(data["skipped"].tolist()) == bad and len(data["skipped_reason"]) == 12


def _perfect(model) -> None:
    """Make the model's MAE predict exactly its target (a perfect decoder)."""
    mae = model._load_mae()
    real = mae.forward

    def forward(*args, **kwargs):
        out = real(*args, **kwargs)
        return out._replace(pred=out.target)

    mae.forward = forward


@pytest.mark.parametrize("run", ["mae", "time"])
def test_reconstruct_returns_mv_and_a_perfect_decoder_recovers_the_original(runs, run, tmp_path):
    src = runs[run]
    if run == "time":  # norm_target model + stored per-lead z-scoring: both must be undone
        state, meta = load_checkpoint(src / "mae.safetensors")
        norm = {**meta.data.preprocessing, "normalise": "record"}
        meta = dataclasses.replace(meta, data=dataclasses.replace(meta.data, preprocessing=norm))
        src = tmp_path / "norm"
        save_checkpoint(src / "mae.safetensors", state, meta)
    model = ecgmae.load(src)
    x = 0.5 + 2.0 * _ecg(8, n=1300)  # offset and scale: normalisation would show if not undone
    r = model.reconstruct(x[[0, 1, 6, 9]], fs=100, leads=["I", "II", "V1", "V4"], mask_ratio=0.5, seed=3)
    assert r.original.shape == r.reconstruction.shape == r.mask.shape == (12, 1300)
    assert r.present.tolist() == [i in (0, 1, 6, 9) for i in range(12)] and not r.mask[~r.present].any()
    np.testing.assert_allclose(r.original[[0, 1, 6, 9]], x[[0, 1, 6, 9]], atol=1e-5)
    frac = r.mask[r.present].mean()
    assert 0.4 < frac < 0.65, frac
    p = model.encoder_config.patch_size
    assert (r.mask[:, :1000].reshape(12, -1, p).std(axis=2) == 0).all()  # whole patches are masked
    again = model.reconstruct(x[[0, 1, 6, 9]], fs=100, leads=["I", "II", "V1", "V4"], mask_ratio=0.5, seed=3)
    assert np.array_equal(again.mask, r.mask) and np.array_equal(again.reconstruction, r.reconstruction)
    other = model.reconstruct(x[[0, 1, 6, 9]], fs=100, leads=["I", "II", "V1", "V4"], mask_ratio=0.5, seed=4)
    assert not np.array_equal(other.mask, r.mask)
    _perfect(model)
    r = model.reconstruct(x[[0, 1, 6, 9]], fs=100, leads=["I", "II", "V1", "V4"], mask_ratio=0.5, seed=3)
    np.testing.assert_allclose(r.reconstruction[r.present], r.original[r.present], atol=2e-4)
    assert r.masked_rmse() < 2e-4


def test_reconstruct_errors(runs):
    with pytest.raises(CheckpointError, match="needs the whole masked autoencoder"):
        ecgmae.load(runs["ft"]).reconstruct(_ecg(0), fs=100)
    with pytest.raises(DataError, match="one record"):
        ecgmae.load(runs["mae"]).reconstruct(np.stack([_ecg(0), _ecg(1)]), fs=100)
    with pytest.raises(DataError, match="mask_ratio"):
        ecgmae.load(runs["mae"]).reconstruct(_ecg(0), fs=100, mask_ratio=1.0)


def test_reconstruct_cli_writes_a_png(runs, tmp_path, capsys):
    folder = shared_path("cinc2021-sample")
    out = tmp_path / "fig.png"
    assert (
        main(
            [
                "reconstruct",
                "--checkpoint",
                str(runs["mae"]),
                "--record",
                str(folder / "E07500.hea"),
                "--out",
                str(out),
                "--npz",
                str(tmp_path / "r.npz"),
                "--quiet",
            ]
        )
        == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.shape[0] > 500 and img.shape[1] > 1000
    arrays = np.load(tmp_path / "r.npz")
    assert arrays["original"].shape == (12, 1000) and arrays["leads"].tolist()[0] == "I"
    assert "masked RMSE" in capsys.readouterr().out


def test_model_cards_describe_the_runs(runs):
    for run, kind in (("mae", "encoder"), ("ft", "classifier")):
        card = json.loads((runs[run] / "model_card.json").read_text())
        assert card["kind"] == kind and card["ecgmae_version"] == ecgmae.__version__ and card["seed"] == 0
        assert card["data"]["records"] > 0 and card["data"]["patients"] > 0 and card["data"]["sources"] == ["folder"]
        assert card["data"]["preprocessing"]["fs"] == 100 and "metrics" in card and "label_names" in card
        assert card["model"]["name"]
    ft = json.loads((runs["ft"] / "model_card.json").read_text())
    assert ft["label_names"] and ft["metrics"]["macro_auroc"] == pytest.approx(
        sklearn_macro_auroc(runs["ft"], runs["store"])[0], abs=1e-6
    )
    assert json.loads((runs["mae"] / "model_card.json").read_text())["metrics"]["final_train_loss"] > 0
