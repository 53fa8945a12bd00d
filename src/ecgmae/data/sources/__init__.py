"""Corpus readers: one small module per corpus, all with the same two functions.

``scan(src, *, labels, task, options) -> Scan`` lists the records (cheap: file names, label tables)
and ``load(item, options) -> Record`` reads one of them (run in worker processes, so items and
options are plain picklable data). ``prepare`` does the rest (preprocessing, splits, the store).
This module also holds the helpers the sources share: walking a folder and reading label tables.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ecgmae.errors import DataError
from ecgmae.utils import log

# source name -> module in this package (``numpy`` would shadow the numpy package).
SOURCES: dict[str, str] = {
    "folder": "folder", "ptbxl": "ptbxl", "cpsc2018": "cpsc2018", "cinc": "cinc",
    "chapman": "chapman", "hdf5": "hdf5", "numpy": "numpy_src",
}
# Columns of a label table that describe the record rather than label it.
ID_COLUMNS = ("record", "ecg_id", "exam_id", "filename", "file", "id", "recording")
META_COLUMNS = {"patient", "patient_id", "split", "fold", "strat_fold", "age", "sex", "is_male", "labels",
                "trace_file", "nn_predicted_age", "death", "timey"}


@dataclass(frozen=True)
class Item:
    """One record to read: ``path`` (and ``key`` inside a multi-record file) plus what the index knows."""

    record: str
    path: str
    labels: tuple[str, ...] | None = None  # None: the loader reads them from the record itself
    patient: str | None = None
    split: str | None = None
    fold: int | None = None
    key: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scan:
    """What a source found: items, label names in order, input files, and records refused early."""

    items: list[Item]
    label_names: tuple[str, ...] | None = None  # None: the sorted union of the labels seen
    inputs: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)  # record, file, kind, message
    expected_leads: tuple[str, ...] | None = None  # the corpus promises these leads: fewer is an error
    options: dict[str, Any] = field(default_factory=dict)  # resolved options, passed on to load()


def get_source(name: str) -> ModuleType:
    """The module implementing source ``name``; DataError listing the choices for an unknown name."""
    if name not in SOURCES:
        raise DataError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    return importlib.import_module(f"ecgmae.data.sources.{SOURCES[name]}")


def walk_files(root: Path) -> list[Path]:
    """Every file under ``root`` (following no symlinked folders), sorted for a stable order."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(out)


@dataclass
class LabelTable:
    """A labels CSV: per record labels, and patient / split / fold when the table has those columns."""

    labels: dict[str, tuple[str, ...]]
    names: tuple[str, ...] | None  # column order of a multi-hot table; None for a names table
    patients: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    folds: dict[str, int] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lookup(self, record: str) -> str | None:
        """Key of ``record`` in the table: the full relative id, or its last path part."""
        if record in self.labels:
            return record
        stem = record.rsplit("/", 1)[-1]
        return stem if stem in self.labels else None


_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no", ""}


def read_label_table(path: Path, classes: tuple[str, ...] | None = None, *, row_ids: bool = False) -> LabelTable:
    """Read ``record,labels`` (``;``-separated names) or one 0/1 column per class.

    The id column is the first of ``record, ecg_id, exam_id, filename, file, id, recording`` present,
    else the first column, or (``row_ids``) the row number ``0, 1, ...``. ``patient``/``patient_id``,
    ``split`` and ``fold``/``strat_fold`` are kept.
    In a multi-hot table the classes are ``classes`` when given, else every column holding only
    0/1/true/false (minus known non-label columns such as ``is_male``).

    Raises:
        DataError: unreadable file, duplicate ids, or a class column with values other than 0/1.
    """
    import pandas as pd

    from ecgmae.data.safety import check_file

    check_file(path, str(path), "labels CSV")  # a FIFO would block the reader forever
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: unreadable labels CSV ({exc})") from None
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError(f"{path}: labels CSV is empty")
    df.columns = [str(c).strip() for c in df.columns]
    lower = {c.lower(): c for c in df.columns}
    id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None if row_ids else df.columns[0])
    ids = [_record_id(v) for v in df[id_col]] if id_col is not None else [str(i) for i in range(len(df))]
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise DataError(f"{path}: record id(s) listed twice: {', '.join(dup[:5])}")
    table = LabelTable({}, None)
    if "labels" in lower:
        for rid, value in zip(ids, df[lower["labels"]], strict=True):
            table.labels[rid] = tuple(dict.fromkeys(n.strip() for n in value.split(";") if n.strip()))
    else:
        skip = {id_col} | {c for c in df.columns if c.lower() in META_COLUMNS}
        if classes:
            missing = [c for c in classes if c not in df.columns]
            if missing:
                raise DataError(f"{path}: no column for class(es) {', '.join(missing)}")
            cols = list(classes)
        else:
            cols = [c for c in df.columns if c not in skip
                    and df[c].str.strip().str.lower().isin(_TRUE | _FALSE).all()]
        if not cols:
            raise DataError(f"{path}: no 'labels' column and no 0/1 class columns (columns: "
                            f"{', '.join(df.columns)})")
        values = {}
        for c in cols:
            v = df[c].str.strip().str.lower()
            bad = ~v.isin(_TRUE | _FALSE)
            if bad.any():
                raise DataError(f"{path}: column {c!r} row {int(bad.idxmax()) + 2}: {df[c][bad.idxmax()]!r} is "
                                "not 0/1")
            values[c] = v.isin(_TRUE).to_numpy()
        table.names = tuple(cols)
        for row, rid in enumerate(ids):
            table.labels[rid] = tuple(c for c in cols if values[c][row])
    for key in ("patient_id", "patient"):
        if key in lower:
            table.patients = {r: _record_id(p) for r, p in zip(ids, df[lower[key]], strict=True) if p.strip()}
            break
    if "split" in lower:
        table.splits = {r: s.strip().lower() for r, s in zip(ids, df[lower["split"]], strict=True) if s.strip()}
        bad_split = sorted(set(table.splits.values()) - {"train", "val", "test"})
        if bad_split:
            raise DataError(f"{path}: split values must be train/val/test, found {', '.join(bad_split)}")
    for key in ("fold", "strat_fold"):
        if key in lower:
            try:
                table.folds = {r: int(float(f)) for r, f in zip(ids, df[lower[key]], strict=True) if f.strip()}
            except ValueError as exc:
                raise DataError(f"{path}: column {key!r}: {exc}") from None
            break
    for key in ("age", "sex"):
        if key in lower:
            for r, v in zip(ids, df[lower[key]], strict=True):
                if v.strip():
                    table.meta.setdefault(r, {})[key] = v.strip()
    return table


def _record_id(value: Any) -> str:
    """Normalise an id cell: strip, drop a float's ``.0`` (pandas turns 17 into 17.0) and a suffix."""
    text = str(value).strip()
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]
    for suffix in (".hea", ".mat", ".dat", ".csv"):
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)]
    return text


def load_item(source: str, item: Item, options: dict[str, Any], *,
              expected_leads: tuple[str, ...] | None = None, classes: tuple[str, ...] | None = None) -> Any:
    """Read ``item`` with ``source`` and check what the corpus promises.

    The record's labels become the item's (from an index table) when it has them. A corpus with a
    fixed montage (``expected_leads``) must deliver all of it; with ``classes`` every label must be
    one of them.

    Raises:
        RecordError: naming the file, e.g. ``E07500.hea: 11 leads, expected 12 (missing V6)``.
    """
    from ecgmae.data.record import RecordError

    rec = get_source(source).load(item, options)
    if item.labels is not None:
        rec.labels = item.labels
    if item.patient is not None:
        rec.patient = item.patient
    rec.meta.update(item.meta)  # the corpus index (age, sex...) wins over what the file says
    where = Path(item.path).name
    if expected_leads:
        missing = [lead for lead in expected_leads if lead not in rec.leads]
        if missing:
            nan = set(rec.meta.get("nan_leads", ()))
            note = ", ".join(f"{m} (all NaN)" if m in nan else m for m in missing)
            raise RecordError(where, f"{len(rec.leads)} leads, expected {len(expected_leads)} (missing {note})",
                              "leads")
    if classes is not None:
        unknown = [n for n in rec.labels if n not in classes]
        if unknown:
            raise RecordError(where, f"unknown label name(s) {', '.join(map(repr, unknown))}; known: "
                              f"{', '.join(classes)}", "labels")
    return rec


@dataclass
class Loaded:
    """Outcome of one item: ``value`` (what the transform returned) or ``error`` ``(kind, message)``."""

    item: Item
    value: Any = None
    error: tuple[str, str] | None = None


def _load_one(source: str, scan_options: dict[str, Any], expected: tuple[str, ...] | None,
              classes: tuple[str, ...] | None, transform: Callable[[Any], Any], item: Item) -> Loaded:
    from ecgmae.data.record import RecordError
    from ecgmae.errors import clip

    where = Path(item.path).name
    try:
        rec = load_item(source, item, scan_options, expected_leads=expected, classes=classes)
        rec.meta["file"] = where
        return Loaded(item, transform(rec))
    except RecordError as exc:
        return Loaded(item, error=(exc.kind, clip(exc, 800)))
    except DataError as exc:
        return Loaded(item, error=("invalid", clip(f"{where}: {exc}", 800)))
    except Exception as exc:  # one odd file must not end a long run; the message says what happened
        log.debug("unexpected error on %s", item.path, exc_info=True)
        return Loaded(item, error=("unexpected", clip(f"{where}: unexpected {type(exc).__name__}: {exc}", 800)))


def read_items(source: str, scan: Scan, transform: Callable[[Any], Any], *, workers: int = 1,
               quiet: bool = False) -> Iterator[Loaded]:
    """Load every item of ``scan`` and apply ``transform`` to each record, in ``workers`` processes.

    Results come in item order whatever ``workers`` is, so outputs do not depend on it. Errors are
    returned (not raised) so the caller decides between skipping and failing. ``transform`` runs in
    the worker and must be picklable (a module-level function or a ``functools.partial`` of one).
    """
    from tqdm.auto import tqdm

    classes = tuple(scan.options.get("classes") or ()) or None
    fn = functools.partial(_load_one, source, scan.options, scan.expected_leads, classes, transform)
    bar = tqdm(total=len(scan.items), disable=quiet, unit="rec", desc="prepare", dynamic_ncols=True)
    try:
        if workers <= 1:
            for item in scan.items:
                yield fn(item)
                bar.update()
            return
        # fork on Linux (as torch's DataLoader): no __main__ guard needed and no re-imports per worker
        method = "fork" if sys.platform.startswith("linux") else None
        chunk = max(1, min(64, len(scan.items) // (workers * 8)))
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        try:
            for done in pool.map(fn, scan.items, chunksize=chunk):
                yield done
                bar.update()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
