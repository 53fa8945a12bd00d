"""Any folder tree of ECG records: WFDB records (by their ``.hea``) and one-file exports (GE MUSE ``.xml``,
DICOM ``.dcm``: :data:`ecgmae.data.exports.RECORD_SUFFIXES`); other files are ignored.

Record ids are paths relative to the folder without the suffix (``sub/rec1``). A WFDB record is read once:
a file beside its ``.hea`` with the same stem (``rec1.xml``) is taken as part of it, not as a record. Two
exports of one stem in one folder (``a.xml`` and ``a.dcm``) keep their suffix in the id (``a.xml``,
``a.dcm``) so ids stay unique.

Labels come from ``--labels CSV`` (or ``SRC/labels.csv`` when present): either ``record,labels``
with ``;``-separated names, or one 0/1 column per class. A ``patient``/``patient_id``, ``split`` or
``fold`` column in that table is used too; the table may name records by id, by file stem, or by file
name with its suffix. With the option ``labels_from="statements"`` (``prepare --labels-from
statements``) each record's labels are instead the interpretation statements its file carries (MUSE
``<Diagnosis>`` lines, DICOM text annotations), and no table is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgmae.data.exports import RECORD_SUFFIXES
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
    src: Path,
    paths: list[Path],
    table: LabelTable | None,
    default: tuple[str, ...] | None = (),
    ids: dict[Path, str] | None = None,
) -> list[Item]:
    """Items for ``paths`` (records under ``src``) with labels, patient, split and fold from ``table``.

    A record the table does not list (or every record, without a table) gets ``default`` labels:
    ``()`` for unlabelled, None for "the loader reads them from the record". ``ids`` gives a path's
    record id (default: its path relative to ``src`` without the suffix).
    """
    items = []
    found: set[str] = set()
    unlabelled = 0
    for path in paths:
        rel = path.relative_to(src)
        rid = (ids or {}).get(path) or rel.with_suffix("").as_posix()
        key = table.lookup(rid) or table.lookup(rel.as_posix()) if table is not None else None
        if table is None or key is None:
            unlabelled += table is not None
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
        if unlabelled:
            log.warning("%d record(s) are not in the labels table: kept without labels", unlabelled)
        orphans = len(set(table.labels) - found)
        if orphans:
            log.warning("%d labels-table row(s) name no record found under %s", orphans, src)
    return items


def record_files(files: list[Path]) -> tuple[list[Path], set[Path], int]:
    """The files among ``files`` that are records, those whose id keeps its suffix, and how many same-stem
    companions of a WFDB header were left out.

    A ``.hea`` takes every same-stem file of its folder as its own; exports sharing a stem in one folder
    keep their suffix in the id.
    """
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    for f in files:
        if f.suffix.lower() in RECORD_SUFFIXES:
            by_stem.setdefault((f.parent, f.stem), []).append(f)
    paths: list[Path] = []
    keep_suffix: set[Path] = set()
    companions = 0
    for group in by_stem.values():
        heads = [f for f in group if f.suffix.lower() == ".hea"]
        if heads:
            paths.extend(heads)
            companions += len(group) - len(heads)
            continue
        paths.extend(group)
        if len(group) > 1:
            keep_suffix.update(group)
    return sorted(paths), keep_suffix, companions


def scan(
    src: Path, *, labels: Path | None = None, task: str | None = None, options: dict[str, Any] | None = None
) -> Scan:
    """List the records under ``src`` (WFDB and one-file exports) with their labels."""
    if task:
        raise DataError(f"--task {task!r}: the folder source has no label tasks (labels come from the CSV)")
    options = dict(options or {})
    labels_from = options.get("labels_from", "csv")
    if labels_from not in ("csv", "statements"):
        raise DataError(f"labels_from {labels_from!r}: choose csv or statements")
    statements = labels_from == "statements"
    files = walk_files(src)
    paths, keep_suffix, companions = record_files(files)
    if not paths:
        raise DataError(f"{src}: no record files found ({', '.join(RECORD_SUFFIXES)})")
    if companions:
        log.info("%d file(s) beside a WFDB header of the same name were taken as part of that record", companions)
    if statements and labels is not None:
        raise DataError("--labels and --labels-from statements both give labels: choose one")
    label_path = None if statements else find_labels(src, labels)
    table = read_label_table(label_path, options.get("classes")) if label_path else None
    ids = {p: p.relative_to(src).as_posix() for p in keep_suffix}
    items = items_with_labels(src, paths, table, None if statements else (), ids=ids)
    inputs = files + ([label_path] if label_path and label_path not in files else [])
    # header-named files may lie anywhere under src
    return Scan(items, table.names if table else None, inputs, options=options, root=str(src))


def load(item: Item, options: dict[str, Any], root: str | None = None) -> Record:
    """Read one record (files its header names may lie anywhere under ``root``), named by its id (its
    path in the folder, so ``embed`` and a store name it alike); with ``labels_from="statements"`` its
    labels are the statements its file carries."""
    rec = read_record(item.path, root=root)
    rec.record = item.record
    if options.get("labels_from") == "statements":
        rec.labels = rec.meta.get("statements", ())  # already one per line, without repeats (statement_lines)
    return rec
