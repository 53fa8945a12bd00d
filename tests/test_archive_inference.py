"""Inference over an archive (issue 23): bounded reading ahead, streamed outputs, several workers, engines.

Correctness only: speed is measured by ``benchmarks/archive_inference.py``, never asserted here.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ecgmae.data.sources import Item, Scan, reading
from ecgmae.streamed import npz_rows


class _ThreadPool(ThreadPoolExecutor):
    """Stands in for the reader processes: threads share memory, so the test can count the records read."""

    def __init__(self, workers: int, mp_context: Any = None) -> None:
        super().__init__(workers)


def test_readers_stay_a_bounded_distance_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow consumer must not let the readers load the whole corpus into memory ahead of it."""
    seen: list[int] = []
    lock = threading.Lock()

    def transform(rec: Any) -> int:
        with lock:
            seen.append(1)
        return len(seen)

    monkeypatch.setattr(reading, "ProcessPoolExecutor", _ThreadPool)
    monkeypatch.setattr(reading, "load_item", lambda *a, **k: SimpleNamespace(meta={}))
    n, workers = 2000, 2
    scan = Scan([Item(f"r{i}", f"r{i}.hea") for i in range(n)])
    stream = reading.read_items("folder", scan, transform, workers=workers, quiet=True)
    first = next(stream)
    assert first.error is None
    time.sleep(0.5)  # the pool finishes whatever it was given
    chunk = max(1, min(64, n // (workers * 8)))
    assert len(seen) <= (reading.READ_AHEAD * workers + 1) * chunk < n
    rest = list(stream)
    assert len(rest) == n - 1 and len(seen) == n


def test_bounded_map_keeps_order_and_every_item() -> None:
    with ThreadPoolExecutor(3) as pool:
        out = list(reading.bounded_map(pool, lambda v: v * v, list(range(101)), chunk=7, ahead=2))
    assert out == [v * v for v in range(101)]


# ------------------------------------------------------------------------------------------ streamed .npz
def test_npz_rows_reads_back_as_savez(tmp_path: Path) -> None:
    """Chunks of rows (ids growing wider, float rows) give the arrays np.savez gives for the whole."""
    ids = [["a", "bb"], ["c"], ["dddd", "e", "ffffff"]]
    rows = [np.arange(2 * 3, dtype=np.float32).reshape(2, 3) + 10 * k for k in range(3)]
    rows[1] = rows[1][:1]
    with npz_rows(tmp_path / "out.npz") as npz:
        for i, r in zip(ids, rows, strict=True):
            npz.append(record=i, embedding=r)
        npz.put(skipped=np.array([], dtype=str), skipped_reason=np.array(["x: why"], dtype=str))
    every = np.array([r for i in ids for r in i], dtype=str)
    np.savez(tmp_path / "ref.npz", record=every, embedding=np.concatenate(rows), skipped=np.array([], dtype=str),
             skipped_reason=np.array(["x: why"], dtype=str))  # fmt: skip
    with np.load(tmp_path / "out.npz") as got, np.load(tmp_path / "ref.npz") as ref:
        assert got.files == ref.files
        for name in ref.files:
            assert got[name].dtype == ref[name].dtype and got[name].shape == ref[name].shape
            assert got[name].tobytes() == ref[name].tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz", "ref.npz"]  # no parts left behind


def test_npz_rows_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    (tmp_path / "out.npz").write_bytes(b"old")
    with pytest.raises(RuntimeError), npz_rows(tmp_path / "out.npz") as npz:
        npz.append(record=["a"], embedding=np.zeros((1, 2), np.float32))
        raise RuntimeError("stopped")
    assert (tmp_path / "out.npz").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]
    with pytest.raises(ValueError, match="appended"), npz_rows(tmp_path / "x.npz") as npz:
        npz.append(embedding=np.zeros((1, 2), np.float32))
        npz.append(embedding=np.zeros((1, 3), np.float32))


# ------------------------------------------------------------------------------------------ embed / predict
@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic 500 Hz records in two folders; the 13th truncated, the 30th's header garbage."""
    from ecgmae.data.sources.synthetic import write_wfdb_folder

    root = tmp_path_factory.mktemp("archive")
    write_wfdb_folder(root / "gen", 40, fs=500, seconds=10, quiet=True)
    for i, hea in enumerate(sorted((root / "gen").glob("*.hea"))):
        folder = root / "src" / ("a" if i < 20 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        for f in (hea, hea.with_suffix(".dat")):
            f.rename(folder / f.name)
    dat = sorted((root / "src").rglob("*.dat"))[12]
    dat.write_bytes(dat.read_bytes()[:1000])
    sorted((root / "src").rglob("*.hea"))[29].write_text("garbage\n")
    return root / "src"


def _embed(src: Path, out: Path, *flags: str) -> dict[str, np.ndarray]:
    from ecgmae.cli import main

    assert main(["embed", "--checkpoint", "ecgmae-small", "--src", str(src), "--out", str(out), "--quiet",
                 *flags]) == 0  # fmt: skip
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def test_embed_with_reader_processes_equals_one_process_in_order(archive: Path, tmp_path: Path) -> None:
    import ecgmae

    one = _embed(archive, tmp_path / "one.npz", "--workers", "0", "--threads", "2")  # the model's process reads
    for w in ("1", "2", "auto"):  # reader processes
        got = _embed(archive, tmp_path / f"w{w}.npz", "--workers", w)
        assert list(got) == list(one) == ["record", "embedding", "skipped", "skipped_reason"]
        for k in one:
            assert one[k].dtype == got[k].dtype and one[k].tobytes() == got[k].tobytes(), (w, k)
    ids = [h.relative_to(archive).with_suffix("").as_posix() for h in sorted(archive.rglob("*.hea"))]
    assert list(one["record"]) == [s for i, s in enumerate(ids) if i not in (12, 29)]  # source order, paths as ids
    assert list(one["skipped"]) == [ids[12], ids[29]] and ids[12].startswith("a/") and ids[29].startswith("b/")
    assert "truncated" in one["skipped_reason"][0] and "bad record line" in one["skipped_reason"][1]
    g = ecgmae.load("ecgmae-small").run_source("folder", archive, quiet=True)  # the API, in memory
    assert g.ids == list(one["record"]) and g.values.astype(np.float32).tobytes() == one["embedding"].tobytes()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ecgmae-small`` fine-tuned for two steps on a tiny 100 Hz store."""
    from conftest import synth_store
    from ecgmae.engine.config import FinetuneConfig, TrainerConfig
    from ecgmae.engine.run import finetune

    root = tmp_path_factory.mktemp("clf")
    store = synth_store(root, 24, seed=1, synth_fs=200, fs=100, seconds=10)
    cpu = TrainerConfig(accelerator="cpu", devices="1", precision="32")
    finetune(store, root / "ft", FinetuneConfig(max_steps=2, batch_size=8, trainer=cpu, n_boot=10),
             encoder="ecgmae-small", quiet=True)  # fmt: skip
    return root / "ft"


def test_predict_csv_keeps_skipped_rows_in_place(
    archive: Path, classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written chunk by chunk, the CSV is the table the whole run gave at once: every record at its place."""
    import pandas as pd

    import ecgmae
    from ecgmae.cli import main
    from ecgmae.data import corpus
    from ecgmae.utils import escape_table

    model = ecgmae.load(classifier)
    for chunk, batch in ((256, 64), (8, 8), (1, 1)):  # one chunk; several, skipped records between; one record each
        # the whole table as the CLI built it before streaming; the same model batches (the head's last bits
        # depend on how many windows share a batch: not what this test is about)
        ids, probs, skipped = model.run_source("folder", archive, predict=True, batch_size=batch, quiet=True)
        table = pd.DataFrame(probs, columns=model.label_names)
        table.insert(0, "record", ids)
        table["skipped"] = ""
        gone = {k.position for k in skipped}
        table.index = [i for i in range(len(ids) + len(skipped)) if i not in gone]
        rows = pd.DataFrame({"record": [k.record for k in skipped], "skipped": [k.reason for k in skipped]},
                            index=[k.position for k in skipped])  # fmt: skip
        whole = escape_table(pd.concat([table, rows]).sort_index()).to_csv(index=False, float_format="%.6f")
        monkeypatch.setattr(corpus, "CHUNK", chunk)
        path = tmp_path / f"p{chunk}.csv"
        assert main(["predict", "--checkpoint", str(classifier), "--src", str(archive), "--out", str(path),
                     "--quiet", "--workers", "2", "--batch-size", str(batch)]) == 0  # fmt: skip
        assert path.read_text() == whole, chunk
    got = pd.read_csv(tmp_path / "p8.csv", keep_default_na=False)
    assert len(got) == 40 and got["skipped"].astype(bool).tolist() == [i in (12, 29) for i in range(40)]


# ------------------------------------------------------------------------------------------ the model
def test_inference_patch_embedding_is_the_training_one_bit_for_bit() -> None:
    """Inference writes the sliding windows once and embeds patches a cache-sized block at a time; the numbers
    must be those of the path training takes (and ONNX export traces), on one thread and on two."""
    import torch

    from ecgmae.models import layers

    torch.manual_seed(0)
    emb = layers.MultiScaleConvEmbed(12, 25, 128, fs=100.0, kernels=(3, 7, 15), channels=16, bottleneck=16, pool=5)
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for m in (40, layers.INFER_PATCHES + 1, 3 * layers.INFER_PATCHES + 7, 2560, 64 * 40 + 17 * 40):
                patches = torch.randn(m, 12, 25)
                with torch.no_grad():
                    fast = emb(patches)
                with torch.enable_grad():
                    ref = emb(patches).detach()
                assert fast.shape == ref.shape and torch.equal(fast, ref), (n_threads, m)
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize(
    ("fs_in", "fs_out", "n", "leads"),
    [(500, 100, 5000, 12), (500, 100, 4999, 12), (500, 100, 5003, 8), (1000, 100, 10000, 12), (500, 250, 5000, 12),
     (250, 100, 2500, 12), (400, 100, 4000, 12), (500, 200, 5000, 12), (360, 100, 3600, 2), (360, 100, 36000, 12),
     (257, 100, 2570, 12), (500, 100, 37, 12), (300, 100, 10, 1), (1000, 500, 20000, 1)],
)  # fmt: skip
def test_resample_is_scipy_bit_for_bit(fs_in: int, fs_out: int, n: int, leads: int) -> None:
    from scipy.signal import resample_poly

    from ecgmae.data.signal import _fir, _ratio, resample

    rng = np.random.default_rng(n + leads)
    x = (rng.standard_normal((leads, n)) * rng.uniform(0.01, 5)).astype(np.float32)
    x[0, : n // 3] = 0.0  # exact zeros (a flat start) and a flat lead: signed zeros must match too
    if leads > 1:
        x[-1] = 0.0
    up, down = _ratio(fs_in, fs_out)
    ref = resample_poly(x, up, down, axis=-1, window=_fir(up, down)).astype(np.float32)
    got = resample(x, fs_in, fs_out)
    assert got.dtype == ref.dtype and got.shape == ref.shape and got.tobytes() == ref.tobytes()


@pytest.mark.parametrize(
    ("n", "band", "fs"),
    [(1000, (0.5, 40.0), 100.0), (1001, (0.5, 40.0), 100.0), (7, (0.5, 40.0), 100.0), (2, (0.5, 40.0), 100.0),
     (5000, (0.0, 40.0), 500.0), (2500, (0.5, 100.0), 250.0)],
)  # fmt: skip
def test_bandpass_is_scipy_bit_for_bit(n: int, band: tuple[float, float], fs: float) -> None:
    from scipy.signal import sosfiltfilt

    from ecgmae.data.signal import _sos, bandpass

    x = np.random.default_rng(n).standard_normal((12, n)).astype(np.float32)
    sos = _sos(band[0], band[1], fs, 2)
    ref = sosfiltfilt(sos, x, axis=-1, padlen=min(3 * (2 * len(sos) + 1), n - 1)).astype(np.float32)
    for _ in range(2):  # the second time with the filter's cached initial conditions
        got = bandpass(x, fs, *band)
        assert got.dtype == ref.dtype and got.tobytes() == ref.tobytes()


def test_wfdb_reading_is_the_same_arithmetic(tmp_path: Path) -> None:
    """Format 16 read as stored (int16, time-major) gives exactly ``((d - baseline) * unit / gain)`` in float64,
    rounded once to float32, as before; whole NaN leads, and records split over two data files, too."""
    from ecgmae.data.io import read_record
    from ecgmae.data.wfdb_write import write_wfdb16

    rng = np.random.default_rng(5)
    sig = rng.standard_normal((3, 777)) * 2
    gains, bases = [200.0, 1000.0, 12.5], [0, -7, 1024]
    write_wfdb16(tmp_path / "one", sig, 500, ["I", "II", "V1"], [], adc_gain=gains, baseline=bases)
    d = np.fromfile(tmp_path / "one.dat", "<i2").reshape(-1, 3).T
    ref = ((d.astype(np.int32) - np.array(bases, float)[:, None]) * (1.0 / np.array(gains))[:, None]).astype(np.float32)
    assert read_record(tmp_path / "one.hea").signal.tobytes() == ref.tobytes()
    raw = np.fromfile(tmp_path / "one.dat", "<i2").reshape(-1, 3)
    raw[:, 1] = -32768  # lead II all invalid: dropped as missing
    raw.tofile(tmp_path / "one.dat")
    rec = read_record(tmp_path / "one.hea")
    assert rec.leads == ("I", "V1") and rec.signal.tobytes() == ref[[0, 2]].tobytes()
    # two data files: I and V1 in a.dat, II in b.dat (the signals put back in header order)
    a, b = d[[0, 2]].T.astype("<i2"), d[[1]].T.astype("<i2")
    a.tofile(tmp_path / "a.dat")
    b.tofile(tmp_path / "b.dat")
    lines = [f"two 3 500 {d.shape[1]}"] + [
        f"{f} 16 {g}({z})/mV 16 0 0 0 0 {n}" for f, g, z, n in
        (("a.dat", 200, 0, "I"), ("b.dat", 1000, -7, "II"), ("a.dat", 12.5, 1024, "V1"))
    ]  # fmt: skip
    (tmp_path / "two.hea").write_text("\n".join(lines) + "\n")
    assert read_record(tmp_path / "two.hea").signal.tobytes() == ref.tobytes()


def test_auto_parallelism_splits_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    from argparse import Namespace

    from ecgmae.cli.embed import parallelism

    def split(cpus: int, **kw: Any) -> tuple[int, int]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cpus)))
        flags = {"source": "folder", "workers": None, "threads": None} | {k: v for k, v in kw.items() if k in
                 ("source", "workers", "threads")}  # fmt: skip
        return parallelism(Namespace(**flags), gpu=kw.get("gpu", False), model=kw.get("model", True))

    assert split(1) == (1, 1) and split(2) == (1, 1) and split(16) == (8, 8)
    assert split(2, workers=2) == (2, 1) and split(2, workers=0) == (0, 2) and split(4, threads=1) == (2, 1)
    assert split(8, gpu=True) == (7, 1) and split(4, model=False)[0] == 4
    assert split(4, source="store") == (0, 4)  # a store is read in the model's process


# ------------------------------------------------------------------------------------------ bf16
def test_bf16_is_opt_in_and_agrees(archive: Path, tmp_path: Path) -> None:
    """``--precision bf16`` is never the default; where it is asked for, embeddings agree with fp32 to a cosine
    of 0.9999 (0.99999 on real recordings, docs/inference-speed.md) and nothing else changes."""
    import ecgmae
    from ecgmae.errors import DataError

    fp32 = _embed(archive, tmp_path / "fp32.npz", "--workers", "0")
    bf16 = _embed(archive, tmp_path / "bf16.npz", "--workers", "0", "--precision", "bf16")
    assert list(bf16["record"]) == list(fp32["record"]) and list(bf16["skipped"]) == list(fp32["skipped"])
    a, b = fp32["embedding"].astype(np.float64), bf16["embedding"].astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert bf16["embedding"].dtype == np.float32 and cos.min() > 0.9999 and not np.array_equal(a, b)
    with pytest.raises(DataError, match="precision"):
        ecgmae.load("ecgmae-small").stream_source("folder", archive, precision="fp8")
