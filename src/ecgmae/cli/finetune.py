"""``ecgmae finetune``: fine-tune, linear-probe or train from scratch; scores the test split."""

from __future__ import annotations

import argparse
from typing import Any

from ecgmae.cli._common import add_command
from ecgmae.cli._config import LOOP_FLAGS, add_config_args, add_loop_args, build_config, print_config

FLAGS = ("mode", "model", "label_fraction", "optim.layer_decay", "aggregate", "classes", "leakage", *LOOP_FLAGS)


def add_parser(sub: Any) -> None:
    from ecgmae.engine.config import MODES, FinetuneConfig

    d = FinetuneConfig()  # help shows the config's defaults
    p = add_command(
        sub,
        "finetune",
        run=run,
        help="train a classifier: fine-tune / linear-probe a pre-trained encoder, or from scratch",
        example="ecgmae finetune --data stores/synth --out runs/ft10 --mode finetune --encoder runs/mae "
        "--label-fraction 0.1",
        description="Train a multi-label classifier on a store's train split, select the best epoch on "
        "validation macro AUROC (records scored by sliding windows), and report the test split. Writes "
        "RUN/classifier.safetensors, RUN/metrics.json, RUN/model_card.json and logs.",
    )
    p.add_argument("--data", required=True, help="prepared store directory (with labels)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--mode", choices=MODES, help=f"default {d.mode}")
    p.add_argument("--encoder", help="pre-training run directory or encoder.safetensors (not for scratch)")
    p.add_argument("--model", help=f"registered model for --mode scratch (default {d.model})")
    p.add_argument(
        "--classes",
        type=lambda s: [c for c in s.split(",") if c],
        help="comma-separated subset of the store's labels (default: all)",
    )
    p.add_argument(
        "--label-fraction",
        dest="label_fraction",
        type=float,
        help=f"fraction of training records used, e.g. 0.01 (default {d.label_fraction:g})",
    )
    p.add_argument(
        "--layer-decay",
        dest="optim.layer_decay",
        metavar="F",
        type=float,
        help=f"layer-wise LR decay (default {d.optim.layer_decay:g})",
    )
    p.add_argument("--aggregate", choices=("mean", "max"), help=f"window -> record score (default {d.aggregate})")
    p.add_argument(
        "--leakage",
        choices=("warn", "refuse"),
        help="test-split patients among the encoder's pre-training records: warn (default, and "
        "recorded in metrics.json) or refuse to train",
    )
    add_loop_args(
        p,
        d,
        max_steps_help="optimiser steps instead of epochs",
        seed_help="seed for the label subset, order, crops and head",
    )
    add_config_args(p)


def run(args: argparse.Namespace) -> int:
    from ecgmae.engine.config import FinetuneConfig

    cfg = build_config(FinetuneConfig, args, FLAGS)
    if args.print_config:
        print_config(cfg)
        return 0
    from ecgmae.engine.run import finetune

    rep = finetune(
        args.data, args.out, cfg, encoder=args.encoder, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet
    )
    lo, hi = rep["macro_auroc_ci95"]
    print(
        f"{cfg.mode}: test macro AUROC {rep['macro_auroc']:.4f} (95% CI {lo:.4f}-{hi:.4f}), "
        f"Fmax {rep['fmax']:.4f} -> {args.out}/metrics.json"
    )
    return 0
