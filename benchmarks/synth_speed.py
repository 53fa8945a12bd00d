"""Synthetic ECG throughput on one core: records/s per noise level, and WFDB folder writing.

Usage: PYTHONPATH=src python benchmarks/synth_speed.py [--n 200] [--fs 500] [--seconds 10]
Prints one JSON object. Targets at 500 Hz, 10 s, on one core: generation >= 50 records/s, and
``ecgmae synth`` (generate + write, realistic noise) >= 100 records/s. ``write_only_rec_per_s`` is the
WFDB writer alone on records already in memory.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, set before numpy loads

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--fs", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()

    from ecgmae.data.sources.synthetic import generate, generate_record, write_wfdb_folder

    generate_record(0, 0, fs=args.fs, seconds=args.seconds)  # warm imports and caches
    result: dict[str, object] = {
        "n": args.n,
        "fs": args.fs,
        "seconds": args.seconds,
        "python": platform.python_version(),
        "machine": platform.processor() or "?",
    }
    for noise in ("none", "low", "realistic"):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _rec in generate(args.n, seed=0, fs=args.fs, seconds=args.seconds, noise=noise):
                pass
            best = min(best, time.perf_counter() - t0)
        result[f"generate_{noise}_rec_per_s"] = round(args.n / best, 1)
    best = float("inf")
    for k in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_wfdb_folder(Path(tmp) / f"synth{k}", args.n, fs=args.fs, seconds=args.seconds, quiet=True)
            best = min(best, time.perf_counter() - t0)
    result["write_wfdb_realistic_rec_per_s"] = round(args.n / best, 1)

    from ecgmae.data.wfdb_write import write_wfdb16

    recs = list(generate(min(args.n, 50), seed=0, fs=args.fs, seconds=args.seconds))
    best = float("inf")
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            for rec in recs:
                write_wfdb16(Path(tmp) / rec.record, rec.signal, rec.fs, rec.leads, ["labels: x"], 1000.0)
            best = min(best, time.perf_counter() - t0)
    result["write_only_rec_per_s"] = round(len(recs) / best, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
