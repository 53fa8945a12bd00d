"""PTB-XL (Wagner et al. 2020): ``ptbxl_database.csv`` + ``scp_statements.csv`` + ``records100/500``.

Label tasks follow Strodthoff et al. 2020 (``ecg_ptbxl_benchmarking``) exactly: every key of
``scp_codes`` counts whatever its likelihood; ``all`` = every statement; ``diagnostic`` = statements
with ``diagnostic == 1``; ``subdiagnostic`` / ``superdiagnostic`` = their ``diagnostic_subclass`` /
``diagnostic_class``; ``form`` and ``rhythm`` = statements flagged so. Records without a label in
the task are dropped for that task (listed in ``skipped.csv``); label names are sorted as
scikit-learn's MultiLabelBinarizer does. ``strat_fold`` is kept and gives the splits: train 1-8,
val 9, test 10. ``patient_id`` is kept. With ``--fs 100`` or less the 100 Hz files are read when
present (``records100``), otherwise the 500 Hz ones.
"""

from __future__ import annotations

import ast
import os
import posixpath
from pathlib import Path
from typing import Any

from ecgmae.data.io import LEADS_12, Record, read_record
from ecgmae.data.safety import check_table, clip
from ecgmae.data.sources import Item, Scan, walk_files
from ecgmae.errors import DataError

TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")


def fold_split(fold: int) -> str:
    """PTB-XL's recommended split of ``strat_fold``: 1-8 train, 9 val, 10 test."""
    return "test" if fold == 10 else "val" if fold == 9 else "train"


def read_statements(path: Path) -> Any:
    """``scp_statements.csv`` as a DataFrame indexed by statement code."""
    import pandas as pd

    check_table(path, "statements CSV")
    try:
        df = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    need = {"diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    df.index = df.index.astype(str).str.strip()
    return df


def task_labels(codes: dict[str, float], statements: Any, task: str) -> tuple[str, ...]:
    """Labels of one record's ``scp_codes`` for ``task``, as in Strodthoff et al. 2020."""
    keys = [k for k in codes if k in statements.index]
    if task == "all":
        return tuple(sorted(set(keys)))
    if task in ("form", "rhythm"):
        return tuple(sorted({k for k in keys if statements.at[k, task] == 1.0}))
    diag = [k for k in keys if statements.at[k, "diagnostic"] == 1.0]
    if task == "diagnostic":
        return tuple(sorted(set(diag)))
    column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
    values = (statements.at[k, column] for k in diag)
    return tuple(sorted({str(v) for v in values if isinstance(v, str) and v.strip()}))


def _records_dir(src: Path, fs: float | None, choice: str) -> str:
    if choice in ("100", "500"):
        return "filename_lr" if choice == "100" else "filename_hr"
    if fs is not None and fs <= 100 and (src / "records100").is_dir():
        return "filename_lr"
    return "filename_hr" if (src / "records500").is_dir() else "filename_lr"


def scan(
    src: Path, *, labels: Path | None = None, task: str | None = None, options: dict[str, Any] | None = None
) -> Scan:
    """Read the PTB-XL tables and list the records that have a label in ``task``."""
    import pandas as pd

    task = task or "all"
    if task not in TASKS:
        raise DataError(f"--task {task!r}: PTB-XL tasks are {', '.join(TASKS)}")
    if labels:
        raise DataError("--labels: PTB-XL labels come from ptbxl_database.csv and scp_statements.csv")
    options = {**(options or {}), "task": task}
    db_path, st_path = src / "ptbxl_database.csv", src / "scp_statements.csv"
    for p in (db_path, st_path):
        if not p.is_file():
            raise DataError(f"{p}: not found (expected the official PTB-XL release layout)")
    statements = read_statements(st_path)
    check_table(db_path, "database CSV")
    try:
        db = pd.read_csv(db_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{db_path}: unreadable ({exc})") from None
    need = {"ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr"}
    missing = sorted(need - set(db.columns))
    if missing:
        raise DataError(f"{db_path}: missing column(s) {', '.join(missing)}")
    column = _records_dir(src, options.get("target_fs"), str(options.get("records", "auto")))
    options["records"] = "100" if column == "filename_lr" else "500"
    items, problems = [], []
    for row in db.itertuples(index=False):
        rid, name = str(int(row.ecg_id)), str(row[db.columns.get_loc(column)])
        path = src / f"{name}.hea"
        norm = posixpath.normpath(name.replace("\\", "/"))
        if os.path.isabs(name) or norm == ".." or norm.startswith("../"):
            problems.append(
                (
                    rid,
                    name,
                    "outside",
                    f"{db_path.name}: ecg_id {rid}: record file '{clip(name)}' is outside the corpus folder",
                )
            )
            continue
        try:
            codes = ast.literal_eval(row.scp_codes)
            if not isinstance(codes, dict):
                raise ValueError("not a dict")
        except (ValueError, SyntaxError) as exc:
            problems.append(
                (rid, str(path), "labels", f"{db_path.name}: ecg_id {rid}: bad scp_codes {row.scp_codes!r} ({exc})")
            )
            continue
        unknown = sorted(str(k) for k in codes if str(k) not in statements.index)
        if unknown:
            problems.append(
                (
                    rid,
                    str(path),
                    "labels",
                    f"{db_path.name}: ecg_id {rid}: unknown SCP "
                    f"statement(s) {', '.join(unknown)} (not in {st_path.name})",
                )
            )
            continue
        names = task_labels({str(k): v for k, v in codes.items()}, statements, task)
        if not names:
            problems.append((rid, str(path), "no_label", f"ecg_id {rid}: no {task} label"))
            continue
        fold = int(row.strat_fold)
        meta: dict[str, Any] = {}
        if "age" in db.columns and pd.notna(row.age):
            meta["age"] = float(row.age)
        if "sex" in db.columns and pd.notna(row.sex):
            meta["sex"] = "M" if int(row.sex) == 0 else "F"
        patient = str(int(row.patient_id)) if pd.notna(row.patient_id) else None
        items.append(Item(rid, str(path), labels=names, patient=patient, split=fold_split(fold), fold=fold, meta=meta))
    names = tuple(sorted({n for it in items for n in it.labels or ()}))
    folder = src / ("records100" if column == "filename_lr" else "records500")
    inputs = [db_path, st_path, *(walk_files(folder) if folder.is_dir() else [])]
    return Scan(items, names, inputs, problems, expected_leads=LEADS_12, options=options, root=str(src))


def load(item: Item, options: dict[str, Any], root: str | None = None) -> Record:
    """Read one record (WFDB)."""
    return read_record(item.path, root=root)
