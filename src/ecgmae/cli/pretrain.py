"""``ecgmae pretrain``: masked-autoencoder (or contrastive) pre-training on a prepared store."""

from __future__ import annotations

import argparse
from typing import Any

from ecgmae.cli._common import add_command
from ecgmae.cli._config import LOOP_FLAGS, add_config_args, add_loop_args, build_config, print_config

FLAGS = ("method", "model", "model_overrides.mask_ratio", "model_overrides.lead_drop", "temperature", *LOOP_FLAGS)


def add_parser(sub: Any) -> None:
    from ecgmae.engine.config import PretrainConfig

    d = PretrainConfig()  # help shows the config's defaults
    p = add_command(
        sub,
        "pretrain",
        run=run,
        help="pre-train an encoder (masked autoencoder, SimCLR or CMSC) on a prepared store",
        example="ecgmae pretrain --data stores/synth --out runs/mae --model ecgmae_small --epochs 20",
        description="Pre-train a masked autoencoder (multi-scale conv + transformer encoder) on a store made "
        "by `ecgmae prepare`, or the same encoder with a contrastive objective (--method simclr: two "
        "augmented crops; --method cmsc: two adjacent segments of a record, CLOCS). Writes "
        "RUN/encoder.safetensors (weights + config + preprocessing), RUN/mae.safetensors (mae only), "
        "RUN/last.ckpt (resume), RUN/metrics.csv and TensorBoard logs in RUN/logs.",
    )
    p.add_argument("--data", required=True, help="prepared store directory")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument(
        "--method",
        choices=("mae", "simclr", "cmsc"),
        help=f"pre-training objective (default {d.method}); e.g. --method cmsc",
    )
    p.add_argument(
        "--temperature",
        type=float,
        metavar="T",
        help=f"contrastive softmax temperature (simclr, cmsc; default {d.temperature:g})",
    )
    p.add_argument(
        "--model",
        help=f"registered model (ecgmae_tiny, ecgmae_small, ecgmae_small_lead, ecgmae_base); default {d.model}",
    )
    p.add_argument(
        "--mask-ratio",
        dest="model_overrides.mask_ratio",
        metavar="F",
        type=float,
        help="fraction of tokens hidden (default: the model's, 0.5 for ecgmae_small)",
    )
    p.add_argument(
        "--lead-drop",
        dest="model_overrides.lead_drop",
        metavar="P",
        type=float,
        help="mae: share of examples shown only a random subset of their leads, so recordings with "
        "fewer leads embed well (default: the model's, 0.25 for ecgmae_small)",
    )
    add_loop_args(
        p,
        d,
        max_steps_help="optimiser steps instead of epochs; 0 writes the untrained encoder (a baseline)",
        seed_help="seed for init, data order, crops and masks",
    )
    add_config_args(p)


def run(args: argparse.Namespace) -> int:
    from ecgmae.engine.config import PretrainConfig

    cfg = build_config(PretrainConfig, args, FLAGS)
    if args.print_config:
        print_config(cfg)
        return 0
    from ecgmae.engine.run import pretrain

    out = pretrain(args.data, args.out, cfg, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    print(f"encoder: {out / 'encoder.safetensors'}")
    return 0
