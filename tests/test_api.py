"""The user API (ecgmae.load -> embed / predict / reconstruct) and the embed / predict / reconstruct commands."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ecgmae
from conftest import save_raw_checkpoint, shared_path, synth_store
from ecgmae.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from ecgmae.cli import main
from ecgmae.errors import CheckpointError, DataError, ECGMAEError
from ecgmae.header import RunHeader

SRC = Path(__file__).resolve().parents[1] / "src"


def build_runs(root: Path) -> dict[str, Path]:
    """Tiny synthetic store (100 Hz, 5 s) + MAE run + fine-tuned classifier + untrained time-tokenised MAE."""
    from ecgmae.engine.config import FinetuneConfig, OptimConfig, PretrainConfig, TrainerConfig
    from ecgmae.engine.run import finetune, pretrain

    torch.set_num_threads(1)
    cpu = TrainerConfig(accelerator="cpu", devices="1", precision="32", log_every=1)
    store = synth_store(root, 48, seed=3, synth_fs=200, fs=100)
    src = root / "synth"
    opt = OptimConfig(lr=2e-3)
    mae = pretrain(
        store,
        root / "mae",
        PretrainConfig(model="ecgmae_tiny", max_steps=8, batch_size=16, trainer=cpu, optim=opt),
        quiet=True,
    )
    finetune(
        store,
        root / "ft",
        FinetuneConfig(mode="finetune", max_steps=6, batch_size=16, trainer=cpu, n_boot=10, optim=opt),
        encoder=mae,
        quiet=True,
    )
    pretrain(
        store,
        root / "time",
        PretrainConfig(
            model="ecgmae_tiny", max_steps=0, trainer=cpu, model_overrides={"tokenization": "time", "norm_target": True}
        ),
        quiet=True,
    )
    return {"src": src, "store": store, "mae": mae, "ft": root / "ft", "time": root / "time"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return build_runs(tmp_path_factory.mktemp("api"))


def _ecg(seed: int, n: int = 500, leads: int = 12) -> np.ndarray:
    """A smooth random (leads, n) signal in mV."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 0.05, (leads, n)), axis=1).astype(np.float32)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_round_trip_and_embedding_is_the_encoder_output(runs, tmp_path):
    model = ecgmae.load(runs["mae"])
    assert model.kind == "encoder" and model.fs == 100 and model.window == 500 and model.label_names == []
    x = _ecg(0)  # exactly one window at the model's rate; stored preprocessing is resampling only
    z = model.embed(x, fs=100)
    state, _ = load_checkpoint(runs["mae"] / "encoder.safetensors")
    from ecgmae.models import ECGEncoder

    enc = ECGEncoder(model.encoder_config)
    enc.load_state_dict(state)
    with torch.no_grad():
        ref = enc.eval()(torch.from_numpy(x)[None], lead_idx=torch.arange(12))[0].numpy()
    np.testing.assert_allclose(z, ref, rtol=0, atol=1e-6)
    # save -> load gives identical embeddings
    save_checkpoint(tmp_path / "copy.safetensors", model.module.state_dict(), model.header)
    assert RunHeader.from_dict(model.info) == model.header  # info is the stored form of the typed header
    again = ecgmae.load(tmp_path / "copy.safetensors")
    assert np.array_equal(again.embed(x, fs=100), z)
    assert np.array_equal(ecgmae.load(runs["mae"]).embed(x, fs=100), z)


def test_batches_lists_lengths_and_records(runs):
    from ecgmae.data.io import Record

    model = ecgmae.load(runs["mae"])
    xs = np.stack([_ecg(1), _ecg(2), _ecg(3)])
    batch = model.embed(xs, fs=100)
    assert batch.shape == (3, 32) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[1], model.embed(xs[1], fs=100), atol=1e-6)
    np.testing.assert_allclose(model.embed(torch.from_numpy(xs), 100), batch, atol=1e-6)
    # a long record is the mean of its windows (the last one aligned to the end)
    long = _ecg(4, n=1234)
    expect = np.mean([model.embed(long[:, s : s + 500], fs=100) for s in (0, 500, 734)], axis=0)
    np.testing.assert_allclose(model.embed(long, fs=100), expect, atol=1e-5)
    # a short record is zero-padded to one window
    short = _ecg(5, n=321)
    np.testing.assert_allclose(
        model.embed(short, fs=100), model.embed(np.pad(short, ((0, 0), (0, 179))), fs=100), atol=1e-6
    )
    mixed = model.embed([long, short, Record("r", xs[0], 100.0, model.leads)], fs=[100, 100, None])
    np.testing.assert_allclose(mixed, np.stack([expect, model.embed(short, 100), batch[0]]), atol=1e-5)
    # per-record rates: a 200 Hz copy is resampled to the model's 100 Hz
    from scipy.signal import resample_poly

    up = resample_poly(long, 2, 1, axis=1)
    both = model.embed([long, up], fs=[100, 200])
    assert _cos(both[0], both[1]) > 0.99


def test_lead_subset_of_a_lead_tokenised_model(runs):
    model = ecgmae.load(runs["mae"])
    assert model.encoder_config.tokenization == "lead"
    x = _ecg(6)
    sub = model.embed(x[[0, 1, 6]], fs=100, leads=["i", "II", "v1"])
    with torch.no_grad():
        ref = model.encoder(torch.from_numpy(x[[0, 1, 6]])[None], lead_idx=torch.tensor([0, 1, 6]))[0].numpy()
    np.testing.assert_allclose(sub, ref, atol=1e-6)
    # the names are honoured: permuted rows named accordingly give the same embedding
    perm = model.embed(x[[6, 0, 1]], fs=100, leads="V1,I,II")
    np.testing.assert_allclose(perm, sub, atol=1e-5)
    wrong = model.embed(x[[6, 0, 1]], fs=100, leads="I,II,V1")  # same rows, wrong names
    assert np.abs(wrong - sub).max() > 1e-3
    # leads the model does not know are dropped; a subset is not the full record
    assert np.abs(sub - model.embed(x, fs=100)).max() > 1e-4


def test_a_record_shorter_than_a_second_is_embedded_with_a_warning(runs, caplog):
    model = ecgmae.load(runs["mae"])
    x = _ecg(3)
    with caplog.at_level("WARNING", logger="ecgmae"):
        model.embed(x, fs=100)
    assert "less than 1 s" not in caplog.text  # a whole window: no warning
    with caplog.at_level("WARNING", logger="ecgmae"):
        z = model.embed([x[:, :1], x[:, :99], x[:, :100]], fs=100)
    assert z.shape[0] == 3 and np.isfinite(z).all()
    assert "2 record(s) hold less than 1 s of signal at 100 Hz" in caplog.text and "(1 samples)" in caplog.text


def test_time_tokenised_model_zero_fills_missing_leads_with_a_warning(runs, caplog):
    model = ecgmae.load(runs["time"])
    assert model.encoder_config.tokenization == "time"
    x = _ecg(7)
    with caplog.at_level("WARNING", logger="ecgmae"):
        sub = model.embed(x[[0, 1, 6]], fs=100, leads=["I", "II", "V1"])
    assert "lack lead(s) III, aVR" in caplog.text and "zero-filled" in caplog.text
    full = np.zeros_like(x)
    full[[0, 1, 6]] = x[[0, 1, 6]]
    np.testing.assert_allclose(sub, model.embed(full, fs=100), atol=1e-6)


def test_an_encoder_pre_trained_on_lead_subsets_takes_missing_leads_quietly(runs, tmp_path, caplog):
    from ecgmae.engine.config import PretrainConfig, TrainerConfig
    from ecgmae.engine.run import pretrain

    cpu = TrainerConfig(accelerator="cpu", devices="1", precision="32")
    run = pretrain(
        runs["store"],
        tmp_path / "ld",
        PretrainConfig(
            model="ecgmae_tiny", max_steps=0, trainer=cpu, model_overrides={"tokenization": "time", "lead_drop": 0.5}
        ),
        quiet=True,
    )
    x = _ecg(7)
    with caplog.at_level("INFO", logger="ecgmae"):
        ecgmae.load(run).embed(x[[0, 1, 6]], fs=100, leads=["I", "II", "V1"])
    absent = [r for r in caplog.records if "lack lead(s) III, aVR" in r.getMessage()]
    assert [r.levelname for r in absent] == ["INFO"] and "as in pre-training" in absent[0].getMessage()


def test_predict_matches_the_engine_evaluation(runs):
    from ecgmae.data.prepared import from_store
    from ecgmae.data.store import Store
    from ecgmae.engine.predict import predict_records

    model = ecgmae.load(runs["ft"])
    store = Store.open(runs["store"])
    idx = np.arange(len(store))
    class_idx = [store.label_names.index(n) for n in model.label_names]
    ref, _ = predict_records(
        model.module,
        store,
        idx,
        model.window,
        model.stride,
        aggregate=model.aggregate,
        class_idx=class_idx,
        lead_idx=model.lead_idx,
    )
    got = model.predict_prepared([from_store(store, int(i), model.leads) for i in idx])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    one = model.predict(store.signal(0), fs=100)
    assert list(one) == model.label_names and one[model.label_names[0]] == pytest.approx(ref[0, 0], abs=1e-5)
    many = model.predict(np.stack([store.signal(0), store.signal(1)]), fs=100)
    assert isinstance(many, list) and len(many) == 2
    assert model.predict_proba(store.signal(1), fs=100) == pytest.approx(ref[1], abs=1e-5)


def test_run_source_streams_a_store_or_a_corpus_through_the_model(runs, tmp_path):
    """What `embed`/`predict` run, offered by the API: same outputs as the in-memory calls, skip or fail."""
    from ecgmae.data.prepared import from_store
    from ecgmae.data.store import Store

    model = ecgmae.load(runs["ft"])
    store = Store.open(runs["store"])
    test = store.split_indices("test")
    ids, probs, skipped = model.run_source("store", runs["store"], predict=True, split="test", quiet=True)
    assert ids == [str(store.index["record"].iloc[i]) for i in test] and skipped == []
    np.testing.assert_array_equal(probs, model.predict_prepared([from_store(store, int(i), model.leads) for i in test]))
    emb = model.run_source("folder", runs["src"], quiet=True)
    assert emb.values.shape == (len(store), model.embed_dim) and emb.ids == sorted(emb.ids)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in sorted(runs["src"].glob("synth0000[01].*")):
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "broken.hea").write_text("broken 12 nonsense\n")
    got = model.run_source("folder", bad, quiet=True)
    assert len(got.ids) == 2 and [k.record for k in got.skipped] == ["broken"]
    with pytest.raises(DataError, match="broken"):
        model.run_source("folder", bad, on_error="fail", quiet=True)
    with pytest.raises(CheckpointError, match="predict needs a classifier run"):
        ecgmae.load(runs["mae"]).run_source("store", runs["store"], predict=True)


@pytest.mark.parametrize(("window", "stride"), [(160, 70), (500, 500), (700, 300)])
def test_the_api_scores_the_windows_the_dataset_yields(runs, window, stride):
    """One windowing path: the evaluation dataset and the API cut the same windows (starts and samples)."""
    from ecgmae.data.dataset import WindowDataset
    from ecgmae.data.prepared import from_store
    from ecgmae.data.store import Store
    from ecgmae.data.windows import window_starts
    from ecgmae.inference import window_batches

    model = ecgmae.load(runs["ft"])
    store = Store.open(runs["store"])
    idx = np.arange(4)
    ds = WindowDataset(store, idx, window, stride)
    items = [ds[i] for i in range(len(ds))]
    for p, rec in enumerate(idx):
        prep = from_store(store, int(rec), model.leads)
        mine = [it for it in items if it["record"] == p]
        starts = window_starts(prep.valid, window, stride)
        assert [it["start"] for it in mine] == starts
        assert starts[-1] + window >= prep.valid  # nothing left out; the last window ends at the signal's end
        api_windows = [w for _, x, _ in window_batches([prep], window, stride, 3) for w in x]
        assert len(api_windows) == len(mine)
        for it, w in zip(mine, api_windows, strict=True):
            assert w.shape == (len(model.leads), window)
            np.testing.assert_array_equal(it["x"].numpy(), w)


def test_reconstruction_cuts_the_dataset_windows(runs, monkeypatch):
    """Reconstruction uses the same window starts as the dataset (stride = window) on the same samples."""
    import ecgmae.reconstruction as recon_mod
    from ecgmae.data.dataset import WindowDataset
    from ecgmae.data.store import Store
    from ecgmae.models import ECGMAE

    seen: list[tuple[tuple[int, int, int], list[int]]] = []
    real_starts = recon_mod.window_starts

    def spy(valid, window, stride):
        out = real_starts(valid, window, stride)
        seen.append(((valid, window, stride), out))
        return out

    fed: list[np.ndarray] = []
    real_forward = ECGMAE.forward

    def forward(self, x, *args, **kwargs):
        fed.append(x.detach().cpu().numpy())
        return real_forward(self, x, *args, **kwargs)

    monkeypatch.setattr(recon_mod, "window_starts", spy)
    monkeypatch.setattr(ECGMAE, "forward", forward)
    model = ecgmae.load(runs["mae"])
    store = Store.open(runs["store"])
    x = _ecg(4, n=1234)
    r = model.reconstruct(x, fs=100)
    assert seen == [((1234, model.window, model.window), [0, 500, 734])]
    wins = np.concatenate(fed)
    assert wins.shape == (3, 12, model.window)
    for w, s in zip(wins, seen[0][1], strict=True):  # the stored preprocessing is resampling only: x itself
        np.testing.assert_array_equal(w, r.original[:, s : s + model.window])
    # the dataset gives the same starts for a record of that length
    ds = WindowDataset(store, [0], model.window, model.window)
    assert [ds[i]["start"] for i in range(len(ds))] == real_starts(store.valid_length(0), model.window, model.window)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.embed(_ecg(0), fs=50), r"sampled at 50 Hz, below the model's 100 Hz"),
        (lambda m: m.embed(_ecg(0)[:, :0], fs=100), r"empty record"),
        (lambda m: m.embed(np.where(np.arange(500) == 7, np.nan, _ecg(0)), fs=100), r"12 NaN/inf sample\(s\)"),
        (lambda m: m.embed(_ecg(0, leads=3), fs=100, leads=["I", "foo", "V1"]), r"unknown lead name 'foo'"),
        (lambda m: m.embed(_ecg(0, leads=2), fs=100, leads=["I", "i"]), r"lead\(s\) I given twice"),
        (lambda m: m.embed(_ecg(0, leads=3), fs=100), r"3 rows but the model's 12 leads"),
        (lambda m: m.embed(_ecg(0, leads=2), fs=100, leads=["V7", "X"]), r"unknown lead name 'V7'"),
        (lambda m: m.embed(_ecg(0)[0], fs=100), r"1-D array"),
        (lambda m: m.embed(_ecg(0)), r"fs is required"),
        (lambda m: m.embed([], fs=100), r"no records"),
        (lambda m: m.predict(_ecg(0), fs=100), r"predict needs a classifier"),
    ],
)
def test_bad_inputs_are_clear_errors(runs, call, match):
    with pytest.raises(ECGMAEError, match=match):
        call(ecgmae.load(runs["mae"]))


def test_unsafe_or_newer_checkpoints_are_refused(runs, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (marker.write_text, ("executed",))

    run = tmp_path / "run"
    run.mkdir()
    (run / "classifier.safetensors").write_bytes(pickle.dumps(Evil()))
    torch.save({"state_dict": Evil()}, tmp_path / "last.ckpt")
    for path in (run, run / "classifier.safetensors", tmp_path / "last.ckpt"):
        with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
            ecgmae.load(path)
    assert not marker.exists()
    state, meta = load_checkpoint(runs["mae"])
    save_raw_checkpoint(tmp_path / "newer.safetensors", state, {**meta.to_dict(), "format_version": FORMAT_VERSION + 1})
    with pytest.raises(CheckpointError, match="newer"):
        ecgmae.load(tmp_path / "newer.safetensors")
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(tmp_path / "newer.safetensors"),
                "--src",
                str(runs["src"]),
                "--out",
                str(tmp_path / "e.npz"),
                "--quiet",
            ]
        )
        == 2
    )
    assert not marker.exists()


def test_no_lightning_at_inference(runs):
    code = (
        f"import sys, numpy as np, ecgmae; assert 'torch' not in sys.modules; "
        f"m = ecgmae.load({str(runs['ft'])!r}); m.predict(np.zeros((12, 500), 'float32'), fs=100); "
        "assert 'lightning' not in sys.modules, 'lightning imported'"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]


def test_resampled_record_gives_a_close_embedding(runs):
    from scipy.signal import resample_poly

    from ecgmae.data.io import read_record

    folder = shared_path("cinc2021-sample")
    model = ecgmae.load(runs["mae"])
    rec = read_record(folder / "E07500.hea")
    assert rec.fs == 500
    z500 = model.embed(rec)
    z250 = model.embed(resample_poly(rec.signal, 1, 2, axis=1), fs=250, leads=rec.leads)
    others = model.embed([read_record(folder / f"{n}.hea") for n in ("E07501", "HR06000", "JS20000", "JS20001")])
    assert _cos(z500, z250) > 0.99
    # untrained-ish embeddings are all alike in direction: also compare with the distance between records
    spread = min(np.linalg.norm(z500 - o) for o in others)
    assert np.linalg.norm(z500 - z250) < 0.1 * spread, (np.linalg.norm(z500 - z250), spread)
