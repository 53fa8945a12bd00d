"""Chapman-Shaoxing (Zheng et al. 2020, 10,646 12-lead ECGs, 10 s at 500 Hz), in either release form.

* WFDB (as in CinC 2021 or PhysioNet's ``ecg-arrhythmia``): ``.hea``/``.mat`` with ``# Dx:`` SNOMED
  codes; read exactly like the ``cinc`` source (same tasks: all, scored, codes).
* The original figshare form: ``ECGDataDenoised/`` (used when present) or ``ECGData/`` with one CSV per
  record (5000 rows x 12 columns I..V6; ``ECGData`` has a header row, ``ECGDataDenoised`` has none) and
  ``Diagnostics.xlsx`` (or ``Diagnostics.csv`` with the same columns, needed when openpyxl is missing)
  with ``FileName, Rhythm, Beat, PatientAge, Gender``. Tasks: ``all`` (rhythm + beat acronyms, default),
  ``rhythm``, ``beat``; a ``NONE`` beat adds nothing.

Units of the CSV form: the data paper gives microvolts, and the amplitudes (R waves of hundreds to
thousands) agree, but converted copies in mV circulate. ``--src-units auto`` (the default) therefore
decides per record: a peak above 50 means uV (no real ECG reaches 50 mV, and a uV record peaking below
50 uV is flat anyway), otherwise mV. Force either with ``--src-units uV|mV``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.record import LEADS_12, Record, RecordError, make_record, unit_scale
from ecgmae.data.safety import check_table
from ecgmae.data.sources import Item, Scan, cinc, walk_files
from ecgmae.errors import DataError

CSV_TASKS = ("all", "rhythm", "beat")
FS = 500.0


def _diagnostics(folder: Path) -> Any:
    import pandas as pd

    csv, xlsx = folder / "Diagnostics.csv", folder / "Diagnostics.xlsx"
    try:
        if csv.is_file():
            check_table(csv, "diagnostics CSV")
            return pd.read_csv(csv, dtype=str, keep_default_na=False), csv
        if xlsx.is_file():
            try:
                return pd.read_excel(xlsx, dtype=str, engine="openpyxl").fillna(""), xlsx
            except ImportError:
                raise DataError(
                    f"{xlsx}: reading .xlsx needs openpyxl; save the sheet as Diagnostics.csv (same "
                    "columns) beside it, or pip install openpyxl"
                ) from None
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{folder}: unreadable Diagnostics table ({exc}); a Diagnostics.csv with the same "
            "columns is read instead when present"
        ) from None
    raise DataError(f"{folder}: no Diagnostics.csv or Diagnostics.xlsx")


def scan(
    src: Path, *, labels: Path | None = None, task: str | None = None, options: dict[str, Any] | None = None
) -> Scan:
    """WFDB form: as the cinc source. CSV form: the records listed in the Diagnostics table."""
    files = walk_files(src)
    if any(f.suffix.lower() == ".hea" for f in files):
        return cinc.scan(src, labels=labels, task=task, options={**(options or {}), "form": "wfdb"})
    task = task or "all"
    if task not in CSV_TASKS:
        raise DataError(f"--task {task!r}: the Chapman CSV form has tasks {', '.join(CSV_TASKS)}")
    data = next((src / d for d in ("ECGDataDenoised", "ECGData") if (src / d).is_dir()), None)
    if data is None:
        raise DataError(f"{src}: no .hea files and no ECGDataDenoised/ or ECGData/ folder of CSV files")
    table, table_path = _diagnostics(src)
    missing_cols = sorted({"FileName", "Rhythm", "Beat"} - set(table.columns))
    if missing_cols:
        raise DataError(f"{table_path}: missing column(s) {', '.join(missing_cols)}")
    options = {**(options or {}), "task": task, "form": "csv", "folder": data.name}
    items, problems = [], []
    for row in table.to_dict("records"):
        rid = str(row["FileName"]).strip()
        path = data / f"{rid}.csv"
        if not path.is_file():
            problems.append((rid, str(path), "missing_file", f"{table_path.name}: {rid}: no {data.name}/{rid}.csv"))
            continue
        rhythm = [row["Rhythm"].strip()] if task in ("all", "rhythm") and row["Rhythm"].strip() else []
        beats = row["Beat"].split() if task in ("all", "beat") else []
        names = tuple(dict.fromkeys(n for n in rhythm + beats if n.upper() != "NONE"))
        meta: dict[str, Any] = {}
        if str(row.get("PatientAge", "")).strip():
            meta["age"] = float(row["PatientAge"])
        if str(row.get("Gender", "")).strip():
            meta["sex"] = str(row["Gender"]).strip()[:1].upper()
        items.append(Item(rid, str(path), labels=names, meta=meta))
    return Scan(
        items,
        None,
        [table_path, *(f for f in files if f.parent == data)],
        problems,
        expected_leads=LEADS_12,
        options=options,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv_record(path: Path, units: str = "auto") -> Record:
    """One Chapman CSV (5000 x 12, with or without a header row) in mV."""
    import pandas as pd

    from ecgmae.data.safety import check_file

    check_file(path, path.name, "file")  # a FIFO would block the reader forever
    with open(path, errors="replace") as fh:
        has_header = not all(_is_number(v) for v in fh.readline().split(",") if v.strip())
    try:
        df = pd.read_csv(path, header=0 if has_header else None)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RecordError(path.name, f"unreadable CSV ({exc})") from None
    names = [str(c).strip() for c in df.columns] if has_header else list(LEADS_12[: df.shape[1]])
    try:
        x = df.to_numpy(dtype=np.float64).T
    except ValueError as exc:
        raise RecordError(path.name, f"non-numeric values ({exc})") from None
    if units == "auto":
        peak = float(np.nanmax(np.abs(x))) if x.size else 0.0
        units = "uV" if peak > 50 else "mV"
    return make_record(
        path.stem,
        x,
        FS,
        names,
        path.name,
        scale=unit_scale(units, path.name),
        meta={"format": "chapman-csv", "units": units},
    )


def load(item: Item, options: dict[str, Any], root: str | None = None) -> Record:
    """Read one record in either form."""
    if options.get("form") == "wfdb":
        return cinc.load(item, options, root)
    return read_csv_record(Path(item.path), options.get("src_units") or "auto")
