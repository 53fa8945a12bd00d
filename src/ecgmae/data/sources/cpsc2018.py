"""China Physiological Signal Challenge 2018: MATLAB ``.mat`` files + ``REFERENCE.csv``.

Each ``.mat`` holds a struct ``ECG`` with ``data`` (12, N) in mV at 500 Hz, ``sex`` and ``age``.
``REFERENCE.csv`` (``Recording,First_label,Second_label,Third_label``) gives up to three of the nine
classes, coded 1-9: Normal, AF, I-AVB, LBBB, RBBB, PAC, PVC, STD, STE. Without a reference file the
records are prepared unlabelled. Records must have the 12 standard leads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgmae.data.io import read_record
from ecgmae.data.record import LEADS_12, Record
from ecgmae.data.sources import Item, Scan, walk_files
from ecgmae.errors import DataError
from ecgmae.utils import log

CLASSES: tuple[str, ...] = ("Normal", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")


def read_reference(path: Path) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Labels per recording from REFERENCE.csv, and the problems (recording -> message) found."""
    import pandas as pd

    from ecgmae.data.safety import check_table

    check_table(path, "reference CSV")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable reference CSV ({exc})") from None
    if df.shape[1] < 2:
        raise DataError(f"{path}: expected columns Recording,First_label[,Second_label,Third_label]")
    labels, problems = {}, {}
    for row in df.itertuples(index=False):
        rid, codes = str(row[0]).strip(), [str(v).strip() for v in row[1:] if str(v).strip()]
        names = []
        for code in codes:
            try:
                value = float(code)
            except ValueError:
                value = -1.0
            if value != int(value) or not 1 <= value <= len(CLASSES):
                problems[rid] = f"{path.name}: {rid}: unknown label code {code!r} (expected 1-9)"
                break
            names.append(CLASSES[int(value) - 1])
        labels[rid] = tuple(dict.fromkeys(names))
    return labels, problems


def scan(
    src: Path, *, labels: Path | None = None, task: str | None = None, options: dict[str, Any] | None = None
) -> Scan:
    """List the ``.mat`` records under ``src`` with their REFERENCE.csv labels."""
    if task:
        raise DataError(f"--task {task!r}: the cpsc2018 source has a single task (the nine classes)")
    files = walk_files(src)
    options = dict(options or {})
    mats = [f for f in files if f.suffix.lower() == ".mat"]
    if not mats:
        raise DataError(f"{src}: no .mat files found")
    ref = Path(labels) if labels else next((f for f in files if f.name.lower() == "reference.csv"), None)
    items, problems = [], []
    if ref is None:
        log.warning("%s: no REFERENCE.csv: records are prepared without labels", src)
        return Scan(
            [Item(m.stem, str(m), labels=()) for m in mats],
            (),
            files,
            expected_leads=LEADS_12,
            options=options,
            root=str(src),
        )
    table, bad = read_reference(ref)
    for m in mats:
        if m.stem in bad:
            problems.append((m.stem, str(m), "labels", bad[m.stem]))
            continue
        items.append(Item(m.stem, str(m), labels=table.get(m.stem, ())))
    missing = sum(1 for m in mats if m.stem not in table)
    if missing:
        log.warning("%d record(s) are not in %s: kept without labels", missing, ref.name)
    inputs = files if ref in files else [*files, ref]
    return Scan(items, CLASSES, inputs, problems, expected_leads=LEADS_12, options=options, root=str(src))


def load(item: Item, options: dict[str, Any], root: str | None = None) -> Record:
    """Read one ``.mat`` record."""
    return read_record(item.path, root=root)
