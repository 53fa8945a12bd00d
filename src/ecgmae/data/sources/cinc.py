"""PhysioNet/CinC Challenge 2020-21: WFDB ``.hea`` + ``.mat`` with SNOMED-CT codes in ``# Dx:``.

Tasks (``--task``): ``all`` (default: every code, named by its abbreviation, unknown codes kept as
the code string), ``scored`` (only the 26 classes scored in 2021; other codes dropped, records keep
an all-zero row as in the challenge) and ``codes`` (the SNOMED codes themselves). Equivalent classes
of the 2021 scoring are merged in every task (see :mod:`ecgmae.data.sources.snomed`). Records must
have the 12 standard leads. A ``--labels`` CSV, when given, replaces the header codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgmae.data.io import LEADS_12, Record, read_record
from ecgmae.data.sources import Item, Scan, read_label_table, walk_files
from ecgmae.data.sources.folder import items_with_labels
from ecgmae.data.sources.snomed import SCORED_2021, code_label, merge_code, scored_labels
from ecgmae.errors import DataError

TASKS = ("all", "scored", "codes")


def dx_codes(comments: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The codes of the ``Dx:`` comment line (empty when there is none)."""
    for c in comments:
        key, _, value = c.partition(":")
        if key.strip().lower() == "dx":
            return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    return ()


def code_labels(codes: tuple[str, ...], task: str) -> tuple[str, ...]:
    """Label names of ``codes`` for ``task`` (equivalents merged, duplicates removed)."""
    if task == "codes":
        return tuple(dict.fromkeys(merge_code(c) for c in codes))
    if task == "scored":
        codes = tuple(c for c in codes if c in SCORED_2021)
    return tuple(dict.fromkeys(code_label(c) for c in codes))


def scan(
    src: Path, *, labels: Path | None = None, task: str | None = None, options: dict[str, Any] | None = None
) -> Scan:
    """List the records under ``src``; labels are read from each header by :func:`load`."""
    task = task or "all"
    if task not in TASKS:
        raise DataError(f"--task {task!r}: the cinc source has tasks {', '.join(TASKS)}")
    options = {**(options or {}), "task": task}
    files = walk_files(src)
    heads = [f for f in files if f.suffix.lower() == ".hea"]
    if not heads:
        raise DataError(f"{src}: no WFDB header (.hea) files found")
    table = read_label_table(Path(labels), options.get("classes")) if labels else None
    items = items_with_labels(src, heads, table, default=None)
    names = table.names if table else (scored_labels() if task == "scored" else None)
    return Scan(
        items,
        names,
        files + ([Path(labels)] if labels else []),
        expected_leads=LEADS_12,
        options=options,
        root=str(src),
    )


def load(item: Item, options: dict[str, Any], root: str | None = None) -> Record:
    """Read one record; its labels come from the ``# Dx:`` line."""
    rec = read_record(item.path, root=root)
    rec.labels = code_labels(dx_codes(rec.meta.get("comments", ())), options.get("task", "all"))
    return rec
