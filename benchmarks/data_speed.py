"""Data-path throughput: WFDB reading, ``prepare`` and random training crops from a store.

Writes N synthetic 10 s, 12-lead, 500 Hz WFDB records (sinusoids + noise, ``wfdb.wrsamp``) in a temp
folder, then prints one JSON line per measurement. Targets (not asserted): prepare to 100 Hz at
>= 200 records/s per worker; random crops from the store at >= 5,000 samples/s on one core.

    PYTHONPATH=src .venv/bin/python benchmarks/data_speed.py --n 400 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def write_corpus(folder: Path, n: int, fs: int = 500, seconds: int = 10, start: int = 0) -> None:
    """Write records ``r{start:05d}`` .. ``r{start + n - 1:05d}`` (WFDB format 16) into ``folder``."""
    import wfdb

    t = np.arange(fs * seconds) / fs
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        x = np.stack([np.sin(2 * np.pi * (1.1 + 0.05 * k) * t) for k in range(12)], 1)
        x += rng.normal(0, 0.05, x.shape)
        wfdb.wrsamp(
            f"r{i:05d}", fs=fs, units=["mV"] * 12, sig_name=LEADS, p_signal=x, fmt=["16"] * 12, write_dir=str(folder)
        )


def prepare_rate(src: Path, out: Path, workers: int, fs: float = 100, seconds: float = 10) -> float:
    """Records/s of ``prepare_store("folder", src, out)`` to ``fs`` Hz with ``workers`` readers."""
    from ecgmae.data.signal import PreprocessConfig
    from ecgmae.data.store import prepare_store

    n = len(list(src.glob("*.hea")))
    t0 = time.perf_counter()
    cfg = PreprocessConfig(fs=fs, seconds=seconds, bandpass=None)  # reading and resampling only
    prepare_store("folder", src, out, cfg, workers=workers, quiet=True)
    return n / (time.perf_counter() - t0)


def loader_rate(store_path: Path, window: int, batch: int, workers: int, epochs: int = 3) -> float:
    """Samples/s from the store through the engine's DataLoader (``make_loader``) + ``CropDataset``.

    Worker start-up is included (the engine's workers are not persistent across epochs).
    """
    from ecgmae.data.dataset import CropDataset
    from ecgmae.data.store import Store
    from ecgmae.engine.data import make_loader

    store = Store.open(store_path)
    ds = CropDataset(store, np.arange(len(store)), window, train=True, seed=0)
    loader = make_loader(ds, batch_size=batch, train=True, seed=0, num_workers=workers)
    t0, seen = time.perf_counter(), 0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for item in loader:
            seen += item["x"].shape[0]
    return seen / (time.perf_counter() - t0)


def emit(**row: object) -> None:
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="records to generate (default 400)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="worker counts to time (default 1)")
    parser.add_argument("--crop-seconds", type=float, default=2.5, help="crop length (default 2.5 s)")
    args = parser.parse_args()

    import torch
    import wfdb

    from ecgmae.data.dataset import CropDataset
    from ecgmae.data.io import read_record
    from ecgmae.data.signal import PreprocessConfig, preprocess
    from ecgmae.data.store import Store, prepare_store

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "raw"
        src.mkdir()
        write_corpus(src, args.n)
        heads = sorted(src.glob("*.hea"))
        for _ in range(2):  # the second pass is the warm one that is reported
            t0 = time.perf_counter()
            for h in heads:
                wfdb.rdrecord(str(h.with_suffix("")))
            t_wfdb = time.perf_counter() - t0
            t0 = time.perf_counter()
            recs = [read_record(h) for h in heads]
            t_read = time.perf_counter() - t0
        emit(metric="wfdb.rdrecord", records_per_s=round(args.n / t_wfdb, 1))
        emit(metric="read_record", records_per_s=round(args.n / t_read, 1))
        cfg = PreprocessConfig(fs=100, seconds=10, bandpass=None)
        t0 = time.perf_counter()
        for r in recs:
            preprocess(r.signal, r.fs, r.leads, cfg)
        emit(metric="preprocess 500->100 Hz", records_per_s=round(args.n / (time.perf_counter() - t0), 1))
        filt = PreprocessConfig(fs=100, seconds=10, bandpass=(0.5, 40), baseline="highpass", normalise="record")
        t0 = time.perf_counter()
        for r in recs:
            preprocess(r.signal, r.fs, r.leads, filt)
        rate = round(args.n / (time.perf_counter() - t0), 1)
        emit(metric="preprocess + highpass + bandpass + z-score", records_per_s=rate)
        store_path = Path(tmp) / "store"
        for workers in args.workers:
            out = Path(tmp) / f"store_w{workers}"
            t0 = time.perf_counter()
            prepare_store("folder", src, out, cfg, workers=workers, quiet=True)
            dt = time.perf_counter() - t0
            emit(
                metric="prepare folder 500->100 Hz",
                workers=workers,
                records=args.n,
                records_per_s=round(args.n / dt, 1),
                records_per_s_per_worker=round(args.n / dt / workers, 1),
                cpu_count=os.cpu_count(),
            )
            store_path = out
        t0 = time.perf_counter()
        prepare_store("folder", src, store_path, cfg, workers=args.workers[-1], quiet=True)
        emit(metric="prepare re-run (up to date)", seconds=round(time.perf_counter() - t0, 3))

        store = Store.open(store_path)
        window = int(args.crop_seconds * store.fs)
        ds = CropDataset(store, np.arange(len(store)), window, train=True, seed=0)
        order = np.random.default_rng(0).integers(0, len(ds), 20000)
        t0 = time.perf_counter()
        for i in order:
            ds[int(i)]
        emit(
            metric="random training crops, one core",
            window=window,
            samples_per_s=round(len(order) / (time.perf_counter() - t0), 1),
        )
        for workers in (0, 1):
            rate = loader_rate(store_path, window, 64, workers)
            emit(metric=f"engine DataLoader batches of 64, {workers} workers", samples_per_s=round(rate, 1))


if __name__ == "__main__":
    main()
