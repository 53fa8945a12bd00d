"""``ecgmae pretrained``: the pre-trained models shipped with this install, one line each."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ecgmae.cli._common import add_command


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "pretrained",
        run=run,
        help="list the pre-trained models shipped with ecgmae (usable by name wherever a run directory is)",
        example="ecgmae pretrained\n  ecgmae embed --checkpoint ecgmae-small --src my_ecgs --out emb.npz",
        description="One line per shipped model: its name (and aliases), what it was pre-trained on, leads, "
        "rate, parameters, size and its linear-probe macro AUROC on the real-recording checks of its model card. "
        "Every name works offline wherever a run directory does (ecgmae.load, embed, predict, finetune --encoder, "
        "reconstruct, serve, export); the files are checked against their sha256 on first use.",
    )
    p.add_argument("--json", action="store_true", help="print the model cards as JSON instead")


def run(args: argparse.Namespace) -> int:
    from ecgmae.pretrained import list_pretrained

    models = list_pretrained()
    if args.json:
        print(
            json.dumps(
                {m.name: {"aliases": list(m.aliases), "path": str(m.path), "card": m.card} for m in models}, indent=2
            )
        )
        return 0
    if not models:
        print("no pre-trained models are shipped with this install")
    for m in models:
        print(m.summary() + (f" (also: {', '.join(m.aliases)})" if m.aliases else ""))
    return 0
