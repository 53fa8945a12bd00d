"""``ecgmae benchmark``: pre-training methods x label fractions x seeds under one protocol, with CIs."""

from __future__ import annotations

import argparse
from typing import Any

from ecgmae.cli._common import add_command
from ecgmae.cli._config import add_config_args, build_config, print_config

FLAGS = (
    "methods",
    "fractions",
    "seeds",
    "model",
    "scratch_model",
    "pretrain_epochs",
    "finetune_epochs",
    "max_steps",
    "batch_size",
    "n_boot",
    "classes",
)


def _csv(cast: Any) -> Any:
    return lambda s: [cast(v) for v in s.split(",") if v.strip()]


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "benchmark",
        run=run,
        help="compare mae / simclr / cmsc pre-training, a supervised CNN and hand-made features at several "
        "label fractions",
        example="ecgmae benchmark --data stores/ptbxl --methods features,mae,simclr,cmsc,scratch "
        "--label-fractions 0.01,0.1,1 --seeds 3 --out runs/bench",
        description="For every seed: pre-train each method once on the store's train split, then linear-probe "
        "and fine-tune at every label fraction; `scratch` trains the reference CNN from random weights; "
        "`features` (no pre-training) fits a logistic regression (C chosen on the val split) on hand-made ECG "
        "features (spectrum, amplitudes, R-R rhythm) of the same label subset as the linear probe, the baseline "
        "every encoder has to beat (features cached in OUT/features/). "
        "Writes OUT/results.md and OUT/results.json (test macro AUROC: mean, std over seeds, bootstrap 95% "
        "CI) and OUT/auroc_vs_labels.png. Re-running reuses finished runs and may add methods, label fractions "
        "or seeds; other changed settings are refused. The terminal shows one line per run (elapsed, ETA) and "
        "one bar for the running training; everything logged goes to OUT/log.txt.",
    )
    p.add_argument("--data", required=True, help="prepared store directory (with labels)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--methods",
        type=_csv(str),
        help="comma-separated: mae,simclr,cmsc,scratch (default), features (hand-made feature baseline, "
        "reported as a linprobe row); scratch:MODEL adds any registered model from random "
        "weights, e.g. scratch:xresnet1d101",
    )
    p.add_argument("--label-fractions", dest="fractions", type=_csv(float), help="e.g. 0.01,0.1,1 (default)")
    p.add_argument("--seeds", type=int, help="number of seeds (default 3)")
    p.add_argument("--model", help="encoder every method pre-trains (default ecgmae_small)")
    p.add_argument("--scratch-model", dest="scratch_model", help="what scratch trains (default xresnet1d50)")
    p.add_argument("--pretrain-epochs", dest="pretrain_epochs", type=int, help="default 10")
    p.add_argument("--finetune-epochs", dest="finetune_epochs", type=int, help="at 100%% labels (default 10)")
    p.add_argument("--max-steps", dest="max_steps", type=int, help="cap every run at N steps (smoke tests)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="per device (default 64)")
    p.add_argument("--n-boot", dest="n_boot", type=int, help="bootstrap resamples (default 1000)")
    p.add_argument("--classes", type=_csv(str), help="comma-separated subset of the store's labels")
    p.add_argument("--overwrite", action="store_true", help="delete --out and start again")
    add_config_args(p)


def run(args: argparse.Namespace) -> int:
    from ecgmae.benchmark import BenchmarkConfig

    cfg = build_config(BenchmarkConfig, args, FLAGS)
    if args.print_config:
        print_config(cfg)
        return 0
    from ecgmae.benchmark import run_benchmark, summary_table

    result = run_benchmark(args.data, args.out, cfg, overwrite=args.overwrite, quiet=args.quiet)
    print(summary_table(result["summary"]))
    print(
        f"\nwritten: {args.out}/results.md, {args.out}/results.json, {args.out}/auroc_vs_labels.png "
        f"(full log: {args.out}/log.txt)"
    )
    return 0
