"""``ecgmae plot-curves``: training and validation curves of one or more runs in one PNG."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, add_overwrite


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "plot-curves",
        run=run,
        help="plot training loss, validation loss (and validation AUROC) of runs",
        example="ecgmae plot-curves runs/mae runs/ft --out curves.png",
        description="Read RUN/metrics.csv (the Lightning CSV log) of each run and draw training loss, "
        "validation loss and, for classifier runs, validation macro AUROC per step.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    p.add_argument("--out", required=True, type=Path, help="PNG to write (atomically)")
    p.add_argument("--labels", help="legend names, comma-separated (default: the directory names)")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    from ecgmae.errors import DataError
    from ecgmae.guards import check_output_file
    from ecgmae.viz import plot_curves

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise DataError(f"--labels: {len(labels)} names for {len(args.runs)} runs")
    check_output_file(args.out, [r / "metrics.csv" for r in args.runs], overwrite=args.overwrite)
    try:
        plot_curves(args.runs, args.out, labels=labels)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None
    print(f"{args.out}: curves of {len(args.runs)} run(s)")
    return 0
