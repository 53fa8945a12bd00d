"""``ecgmae predict``: class probabilities per record of a corpus (or a prepared store) to a CSV."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, add_overwrite
from ecgmae.cli.embed import add_input_args, check_out, score_chunks


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "predict",
        run=run,
        help="class probabilities for every record of a corpus or store with a trained classifier",
        example="ecgmae predict --checkpoint runs/ft --src data/cpsc2018 --source cpsc2018 --out preds.csv",
        description="Score every record of SRC with a classifier run, applying its stored preprocessing. "
        "Window probabilities are combined per record as in the classifier's evaluation (mean or max). "
        "Writes a CSV with a `record` column (in the order of the source), one probability column per "
        "label of the classifier and a `skipped` column: empty for scored records; for records that could "
        "not be scored (--on-error skip) the one-line reason, with empty probabilities.",
    )
    add_input_args(p)
    p.add_argument("--out", required=True, type=Path, help="CSV file to write (atomically)")
    add_overwrite(p)


def run(args: argparse.Namespace) -> int:
    from ecgmae.utils import atomic_path

    check_out(args)  # before the work: an existing directory or the model's own file is refused
    model, chunks = score_chunks(args, predict=True)
    used = skipped = 0
    with atomic_path(args.out) as tmp, open(tmp, "w") as f:  # rows written chunk by chunk, renamed when complete
        for c in chunks:
            f.write(_csv_rows(c, model.label_names, header=used + skipped == 0))
            used, skipped = used + len(c.ids), skipped + len(c.skipped)
    print(
        f"{args.out}: {used} records x {len(model.label_names)} labels" + (f" ({skipped} skipped)" if skipped else "")
    )
    return 0


def _csv_rows(chunk: Any, label_names: list[str], *, header: bool) -> str:
    """A chunk's rows in source order: record, one probability per label, and why a skipped record was skipped."""
    import numpy as np
    import pandas as pd

    from ecgmae.utils import escape_table

    rows = sorted(
        [(p, i, chunk.ids[i], "") for i, p in enumerate(chunk.positions)]
        + [(k.position, -1, k.record, k.reason) for k in chunk.skipped]
    )
    probs = np.full((len(rows), len(label_names)), np.nan)
    scored = [(j, i) for j, (_, i, _, _) in enumerate(rows) if i >= 0]
    if scored:
        probs[[j for j, _ in scored]] = chunk.values[[i for _, i in scored]]
    table = pd.DataFrame(probs, columns=label_names)
    table.insert(0, "record", [r[2] for r in rows])
    table["skipped"] = [r[3] for r in rows]
    # record names, label names and reasons as text if the table is opened in a spreadsheet
    return str(escape_table(table).to_csv(index=False, header=header, float_format="%.6f"))
