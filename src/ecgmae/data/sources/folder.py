"""Any folder tree of WFDB records, found by their ``.hea`` files (other files are ignored).

Labels come from ``--labels CSV`` (or ``SRC/labels.csv`` when present): either ``record,labels``
with ``;``-separated names, or one 0/1 column per class. A ``patient``/``patient_id``, ``split`` or
``fold`` column in that table is used too. Record ids are paths relative to the folder without the
suffix (``sub/rec1``); the table may name records by that id or by the file stem alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgmae.data.io import Record, read_record
from ecgmae.data.sources import Item, LabelTable, Scan, read_label_table, walk_files
from ecgmae.errors import DataError
from ecgmae.utils import log


def find_labels(src: Path, labels: Path | None) -> Path | None:
    """The labels CSV to use: ``labels`` if given, else ``src/labels.csv`` when it exists."""
    if labels is not None:
        if not Path(labels).is_file():
            raise DataError(f"{labels}: labels CSV not found")
        return Path(labels)
    default = src / "labels.csv"
    return default if default.is_file() else None


def items_with_labels(
    src: Path, paths: list[Path], table: LabelTable | None, default: tuple[str, ...] | None = ()
) -> list[Item]:
    """Items for ``paths`` (records under ``src``) with labels, patient, split and fold from ``table``.

    A record the table does not list (or every record, without a table) gets ``default`` labels:
    ``()`` for unlabelled, None for "the loader reads them from the record".
    """
    items = []
    found: set[str] = set()
    for path in paths:
        rid = path.relative_to(src).with_suffix("").as_posix()
        key = table.lookup(rid) if table is not None else None
        if table is None or key is None:
            items.append(Item(rid, str(path), labels=default if table is None else ()))
            continue
        found.add(key)
        items.append(
            Item(
                rid,
                str(path),
                labels=table.labels[key],
                patient=table.patients.get(key),
                split=table.splits.get(key),
                fold=table.folds.get(key),
                meta=table.meta.get(key, {}),
            )
        )
    if table is not None:
        unlabelled = sum(1 for it in items if it.labels == () and table.lookup(it.record) is None)
        if unlabelled:
            log.warning("%d record(s) are not in the labels table: kept without labels", unlabelled)
        orphans = len(set(table.labels) - found)
        if orphans:
            log.warning("%d labels-table row(s) name no record found under %s", orphans, src)
    return items


def scan(
    src: Path, *, labels: Path | None = None, task: str | None = None, options: dict[str, Any] | None = None
) -> Scan:
    """List the WFDB records under ``src`` with their labels."""
    if task:
        raise DataError(f"--task {task!r}: the folder source has no label tasks (labels come from the CSV)")
    options = dict(options or {})
    files = walk_files(src)
    heads = [f for f in files if f.suffix.lower() == ".hea"]
    if not heads:
        raise DataError(f"{src}: no WFDB header (.hea) files found")
    label_path = find_labels(src, labels)
    table = read_label_table(label_path, options.get("classes")) if label_path else None
    items = items_with_labels(src, heads, table)
    inputs = files + ([label_path] if label_path and label_path not in files else [])
    # header-named files may lie anywhere under src
    return Scan(items, table.names if table else None, inputs, options=options, root=str(src))


def load(item: Item, options: dict[str, Any], root: str | None = None) -> Record:
    """Read one record (files its header names may lie anywhere under ``root``)."""
    return read_record(item.path, root=root)
