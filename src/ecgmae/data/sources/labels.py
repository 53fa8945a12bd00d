"""Label tables: a ``record,labels`` CSV or one 0/1 column per class, with patient / split / fold columns.

Sources that take ``--labels`` (folder, cinc, hdf5, numpy) read them here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgmae.errors import DataError, clip

# Distinct labels a table (and a store) may have: CinC's SNOMED codes are about 130, PTB-XL's statements 71.
MAX_LABELS = 1000
# Columns of a label table that describe the record rather than label it.
ID_COLUMNS = ("record", "ecg_id", "exam_id", "filename", "file", "id", "recording")
META_COLUMNS = {
    "patient",
    "patient_id",
    "split",
    "fold",
    "strat_fold",
    "age",
    "sex",
    "is_male",
    "labels",
    "trace_file",
    "nn_predicted_age",
    "death",
    "timey",
}


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
        DataError: unreadable file, duplicate ids, a class column with values other than 0/1, or a table
            beyond the bounds: ``TABLE_MAX_BYTES``, ``CELL_MAX_BYTES`` a cell, ``MAX_LABELS`` labels.
    """
    import pandas as pd

    from ecgmae.data.safety import check_table

    check_table(path)  # a regular file (a FIFO would block the reader forever) of bounded size and cells
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
        distinct = len({n for names in table.labels.values() for n in names})
        if distinct > MAX_LABELS:
            raise DataError(
                f"{path}: {distinct} distinct labels, more than {MAX_LABELS}: is the 'labels' column really labels?"
            )
    else:
        skip = {id_col} | {c for c in df.columns if c.lower() in META_COLUMNS}
        if classes:
            missing = [c for c in classes if c not in df.columns]
            if missing:
                raise DataError(f"{path}: no column for class(es) {', '.join(missing)}")
            cols = list(classes)
        else:
            cols = [c for c in df.columns if c not in skip and df[c].str.strip().str.lower().isin(_TRUE | _FALSE).all()]
        if not cols:
            raise DataError(
                f"{path}: no 'labels' column and no 0/1 class columns (columns: {clip(', '.join(df.columns))})"
            )
        if len(cols) > MAX_LABELS:
            raise DataError(f"{path}: {len(cols)} class columns, more than {MAX_LABELS}")
        values = {}
        for c in cols:
            v = df[c].str.strip().str.lower()
            bad = ~v.isin(_TRUE | _FALSE)
            if bad.any():
                raise DataError(f"{path}: column {c!r} row {int(bad.idxmax()) + 2}: {df[c][bad.idxmax()]!r} is not 0/1")
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
