"""``ecgmae predict``: class probabilities per record of a corpus (or a prepared store) to a CSV."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecgmae.cli._common import add_command, add_overwrite
from ecgmae.cli.embed import add_input_args, check_out, collect


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
    import pandas as pd

    from ecgmae.utils import escape_table, write_text_atomic

    check_out(args)  # before the work: an existing directory or the model's own file is refused
    model, ids, probs, skipped = collect(args, predict=True)
    table = pd.DataFrame(probs, columns=model.label_names)
    table.insert(0, "record", ids)
    table["skipped"] = ""
    if skipped:  # every record gets a row, at its place in the source order
        gone = {k.position for k in skipped}
        table.index = [i for i in range(len(ids) + len(skipped)) if i not in gone]
        rows = pd.DataFrame(
            {"record": [k.record for k in skipped], "skipped": [k.reason for k in skipped]},
            index=[k.position for k in skipped],
        )
        table = pd.concat([table, rows]).sort_index()
    # record names, label names and reasons as text if the table is opened in a spreadsheet
    write_text_atomic(args.out, escape_table(table).to_csv(index=False, float_format="%.6f"))
    print(
        f"{args.out}: {len(ids)} records x {len(model.label_names)} labels"
        + (f" ({len(skipped)} skipped)" if skipped else "")
    )
    return 0
