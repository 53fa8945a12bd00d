"""``ecgmae synth``: write synthetic 12-lead ECGs as a WFDB folder (built-in labelled model or deepfake-ecg)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, positive_int


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "synth",
        run=run,
        help="write synthetic 12-lead ECGs as WFDB: labelled (built-in model) or unlabelled (deepfake-ecg GAN)",
        description=(
            "Write N synthetic 12-lead ECGs as a WFDB folder (.hea/.dat per record, format 16, 1 uV steps,\n"
            "mV) plus RECORDS. Record i depends only on (seed, i). The folder is written beside OUT under a\n"
            "hidden name and renamed only when complete.\n\n"
            "--engine builtin (default): a 3-D dipole heart model with 11 classes (multi-label):\n"
            "NORM SB STach AF IAVB RBBB LBBB PVC LVH STE STD; also labels.csv (record,labels; labels joined\n"
            "by ';') and classes.json (definitions, SNOMED codes, counts). Any --fs and --seconds >= 2.\n\n"
            "--engine deepfake: realistic unlabelled ECGs for pre-training from the deepfake-ecg GAN\n"
            "(MIT; pip install 'ecgmae[deepfake]'): 10 s at 500 Hz, leads I, II, V1-V6 generated, III, aVR,\n"
            "aVL, aVF derived; also source.json. --seconds is fixed at 10, other --fs are resampled\n"
            "(e.g. 100, 250), --noise does not apply; values change with --batch-size by float rounding only."
        ),
        example="ecgmae synth --out data/synth --n 200 --noise realistic --seed 0\n"
        "  ecgmae synth --engine deepfake --out data/deepfake --n 1000",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (absent or empty unless --overwrite)")
    p.add_argument("--n", required=True, type=positive_int, help="number of records")
    p.add_argument(
        "--engine",
        choices=("builtin", "deepfake"),
        default="builtin",
        help="builtin: labelled dipole model; deepfake: unlabelled GAN ECGs (needs ecgmae[deepfake]). Default builtin",
    )
    p.add_argument("--fs", type=float, default=500.0, help="sampling rate in Hz (default 500)")
    p.add_argument("--seconds", type=float, default=None, help="record length in seconds (default 10; builtin only)")
    p.add_argument("--seed", type=int, default=0, help="set seed (default 0)")
    p.add_argument(
        "--noise",
        choices=("none", "low", "realistic"),
        default=None,
        help="builtin only: none; low (baseline wander + white); realistic (wander, 50/60 Hz, EMG, "
        "electrode pops, amplitude drift). Default realistic",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=50, help="deepfake only: records per generator call (default 50)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing `ecgmae synth` folder")


def run(args: argparse.Namespace) -> int:
    from ecgmae.config import ConfigError

    if args.engine == "deepfake":
        from ecgmae.data.sources.deepfake import write_wfdb_folder as write_deepfake

        if args.noise is not None:
            raise ConfigError("--noise does not apply to --engine deepfake (the GAN's ECGs carry their own noise)")
        if args.seconds is not None and args.seconds != 10.0:
            raise ConfigError(f"--engine deepfake makes 10 s records only; got --seconds {args.seconds:g}")
        write_deepfake(
            args.out,
            args.n,
            fs=args.fs,
            seed=args.seed,
            batch_size=args.batch_size,
            quiet=args.quiet,
            overwrite=args.overwrite,
        )
        return 0
    from ecgmae.data.sources.synthetic import write_wfdb_folder

    write_wfdb_folder(
        args.out,
        args.n,
        fs=args.fs,
        seconds=10.0 if args.seconds is None else args.seconds,
        seed=args.seed,
        noise=args.noise or "realistic",
        quiet=args.quiet,
        overwrite=args.overwrite,
    )
    return 0
