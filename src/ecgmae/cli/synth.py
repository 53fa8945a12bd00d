"""``ecgmae synth``: write a labelled synthetic 12-lead ECG set as a WFDB folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(sub: Any) -> None:
    p = add_command(
        sub, "synth", run=run,
        help="write labelled synthetic 12-lead ECGs (WFDB .hea/.dat + labels.csv + classes.json)",
        description=(
            "Write N synthetic 12-lead ECGs from a 3-D dipole heart model, 11 classes (multi-label):\n"
            "NORM SB STach AF IAVB RBBB LBBB PVC LVH STE STD. Output: WFDB .hea/.dat per record (format 16,\n"
            "1 uV steps, mV), labels.csv (record,labels; labels joined by ';'), classes.json (definitions,\n"
            "SNOMED codes, counts) and RECORDS. Record i depends only on (seed, i). The folder is written\n"
            "beside OUT under a hidden name and renamed only when complete."
        ),
        example="ecgmae synth --out data/synth --n 200 --noise realistic --seed 0",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (absent or empty unless --overwrite)")
    p.add_argument("--n", required=True, type=_positive_int, help="number of records")
    p.add_argument("--fs", type=float, default=500.0, help="sampling rate in Hz (default 500)")
    p.add_argument("--seconds", type=float, default=10.0, help="record length in seconds (default 10)")
    p.add_argument("--seed", type=int, default=0, help="set seed (default 0)")
    p.add_argument("--noise", choices=("none", "low", "realistic"), default="realistic",
                   help="none; low (baseline wander + white); realistic (wander, 50/60 Hz, EMG, electrode "
                        "pops, amplitude drift). Default realistic")
    p.add_argument("--overwrite", action="store_true", help="replace an existing `ecgmae synth` folder")


def run(args: argparse.Namespace) -> int:
    from ecgmae.data.sources.synthetic import write_wfdb_folder

    write_wfdb_folder(args.out, args.n, fs=args.fs, seconds=args.seconds, seed=args.seed, noise=args.noise,
                      quiet=args.quiet, overwrite=args.overwrite)
    return 0
