"""``ecgmae evaluate``: score a classifier run on a store split with bootstrap confidence intervals."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, add_overwrite


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "evaluate",
        run=run,
        help="score a classifier on a store split (AUROC, F1, Fmax, bootstrap 95%% CIs)",
        example="ecgmae evaluate --checkpoint runs/ft10 --data stores/synth --split test --out eval.json",
    )
    p.add_argument("--checkpoint", required=True, help="classifier run directory or classifier.safetensors")
    p.add_argument("--data", required=True, help="prepared store directory")
    p.add_argument("--split", default="test", help="train | val | test (default test)")
    p.add_argument("--aggregate", choices=("mean", "max"), help="window -> record (default: as trained)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", type=Path, help="also write the full report as JSON here")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    from ecgmae.engine.run import evaluate
    from ecgmae.guards import check_output_file
    from ecgmae.utils import write_json_atomic

    if args.out:
        check_output_file(args.out, [args.checkpoint], overwrite=args.overwrite)
    rep = evaluate(
        args.checkpoint,
        args.data,
        split=args.split,
        aggregate=args.aggregate,
        n_boot=args.n_boot,
        seed=args.seed,
        quiet=args.quiet,
    )
    if args.out:
        write_json_atomic(args.out, rep)
    lo, hi = rep["macro_auroc_ci95"]
    print(
        f"{args.split}: {rep['n_records']} records, macro AUROC {rep['macro_auroc']:.4f} "
        f"(95% CI {lo:.4f}-{hi:.4f}), macro F1 {rep['macro_f1']:.4f}, Fmax {rep['fmax']:.4f}"
    )
    for name, auc in rep["per_class_auroc"].items():
        print(f"  {name:<12} AUROC {'n/a' if auc is None else f'{auc:.4f}'}  (positives {rep['positives'][name]})")
    if not args.out:
        print(json.dumps({k: rep[k] for k in ("macro_auroc", "macro_auroc_ci95", "fmax")}))
    return 0
