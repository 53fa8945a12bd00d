"""``ecgmae reconstruct``: mask a record, let the masked autoencoder fill it in, draw both."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, add_overwrite


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "reconstruct",
        run=run,
        help="mask a record and draw the MAE's reconstruction over it (12-lead layout, masked spans shaded)",
        example="ecgmae reconstruct --checkpoint runs/mae --record data/cinc/E07500.hea --out recon.png",
        description="Read one record (WFDB .hea/.mat, CPSC .mat, .npy, .h5), apply the checkpoint's stored "
        "preprocessing, hide --mask-ratio of its patches at random (seeded) and draw the reconstruction "
        "(red, on masked spans) over the original (black) in the usual 3 x 4 clinical layout plus a rhythm "
        "strip, in mV on ECG paper. Needs a pre-training run (its mae.safetensors).",
    )
    p.add_argument("--checkpoint", required=True, help="pre-training run directory (or its mae.safetensors)")
    p.add_argument("--record", required=True, type=Path, help="record file")
    p.add_argument("--out", required=True, type=Path, help="PNG to write (atomically)")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="fraction of patches hidden (default 0.75)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mask (default 0)")
    p.add_argument("--start", type=float, default=0.0, help="first second drawn (default 0)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds drawn (default 10)")
    p.add_argument("--rhythm", default="II", help="lead of the rhythm strip, or 'none' (default II)")
    p.add_argument(
        "--show-visible",
        action="store_true",
        help="also draw the decoder output over visible spans (untrained there: usually noise)",
    )
    p.add_argument("--npz", type=Path, help="also save original, reconstruction, mask, present, fs, leads here")
    p.add_argument("--src-fs", type=float, help="sampling rate of a .npy/.h5 record without one")
    p.add_argument("--src-leads", help="lead names of a .npy/.h5 record's rows, comma-separated")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:1 ...")
    add_overwrite(p, "--out or --npz")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ecgmae.api import load
    from ecgmae.checkpoint import checkpoint_files
    from ecgmae.data.io import read_record
    from ecgmae.guards import check_output_file
    from ecgmae.utils import atomic_path
    from ecgmae.viz import plot_reconstruction

    reads = [args.record, *checkpoint_files(args.checkpoint)]
    check_output_file(args.out, reads, overwrite=args.overwrite)
    if args.npz:
        check_output_file(args.npz, [*reads, args.out], flag="--npz", overwrite=args.overwrite)
    model = load(args.checkpoint, device=args.device)
    leads = tuple(n.strip() for n in args.src_leads.split(",")) if args.src_leads else None
    rec = read_record(args.record, fs=args.src_fs, leads=leads)
    r = model.reconstruct(rec, mask_ratio=args.mask_ratio, seed=args.seed)
    rhythm = None if args.rhythm.lower() == "none" else args.rhythm
    plot_reconstruction(
        r, args.out, start=args.start, seconds=args.seconds, rhythm=rhythm, show_visible=args.show_visible
    )
    if args.npz:
        with atomic_path(args.npz) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                original=r.original,
                reconstruction=r.reconstruction,
                mask=r.mask,
                present=r.present,
                fs=np.float64(r.fs),
                leads=np.array(r.leads, dtype=str),
            )
    print(
        f"{args.out}: {r.name}, {r.mask.sum() / max(1, r.present.sum() * r.mask.shape[1]):.0%} of samples "
        f"masked, masked RMSE {r.masked_rmse():.4f} mV"
    )
    return 0
