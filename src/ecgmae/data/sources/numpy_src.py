"""A numpy ``.npy`` array ``(N, leads, samples)`` of records, with a labels CSV.

The sampling rate is ``--src-fs``, else ``fs`` in a ``.json`` sidecar beside the array, else ``--fs``
(no resampling). Lead names: ``--src-leads``, the sidecar's ``leads``, or the 12 standard leads for a
12-row array; units: ``--src-units``, the sidecar's ``units``, or mV. The labels CSV (``--labels`` or
``ARRAY.csv`` beside it) has one row per record in array order; a ``record`` column names the records,
or, when it holds integers 0..N-1, says which array row each label row belongs to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.record import LEADS_12, Record, make_record, unit_scale
from ecgmae.data.safety import check_file, read_small_text
from ecgmae.data.sources import Item, Scan, read_label_table
from ecgmae.errors import DataError
from ecgmae.utils import log


def _open(path: Path) -> np.ndarray:
    check_file(path, path.name, "file")  # a FIFO would block np.load forever
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable .npy file ({exc})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"{path}: expected an array (records, leads, samples), got shape {arr.shape}")
    return arr


def scan(
    src: Path, *, labels: Path | None = None, task: str | None = None, options: dict[str, Any] | None = None
) -> Scan:
    """List the records of the array with their labels."""
    if task:
        raise DataError(f"--task {task!r}: the numpy source takes its labels from the CSV")
    if src.suffix.lower() != ".npy" or not src.is_file():
        raise DataError(f"{src}: the numpy source reads one .npy file (records, leads, samples)")
    options = dict(options or {})
    arr = _open(src)
    n, n_leads = arr.shape[0], arr.shape[1]
    side: dict[str, Any] = {}
    if src.with_suffix(".json").is_file():
        try:
            side = json.loads(read_small_text(src.with_suffix(".json"), src.with_suffix(".json").name, "sidecar JSON"))
        except ValueError as exc:
            raise DataError(f"{src.with_suffix('.json')}: unreadable JSON ({exc})") from None
    if options.get("src_fs") is None:
        options["src_fs"] = side.get("fs") or options.get("target_fs")
        if not side.get("fs"):
            log.info("%s: no --src-fs and no sidecar fs: assuming %g Hz (no resampling)", src.name, options["src_fs"])
    leads = options.get("src_leads") or side.get("leads") or (LEADS_12 if n_leads == 12 else None)
    if leads is None or len(leads) != n_leads:
        raise DataError(f"{src}: {n_leads} leads per record; name them with --src-leads (got {leads})")
    options["src_leads"] = tuple(leads)
    options["src_units"] = options.get("src_units") or side.get("units", "mV")
    unit_scale(options["src_units"], src.name)
    label_path = Path(labels) if labels else (src.with_suffix(".csv") if src.with_suffix(".csv").is_file() else None)
    names = [str(i) for i in range(n)]
    rows: dict[int, str] = {}
    table = None
    if label_path is not None:
        table = read_label_table(label_path, options.get("classes"), row_ids=True)
        keys = list(table.labels)
        if all(k.isdigit() and int(k) < n for k in keys):
            rows = {int(k): k for k in keys}
        elif len(keys) == n:
            names, rows = keys, dict(enumerate(keys))
        else:
            raise DataError(
                f"{label_path}: {len(keys)} rows for {n} records (and its record column is not a row number)"
            )
    items = []
    for i in range(n):
        key = rows.get(i)
        items.append(
            Item(
                names[i],
                str(src),
                labels=table.labels[key] if table and key else (),
                key=i,
                patient=table.patients.get(key) if table and key else None,
                split=table.splits.get(key) if table and key else None,
            )
        )
    return Scan(items, table.names if table else None, [src, *([label_path] if label_path else [])], options=options)


def load(item: Item, options: dict[str, Any], root: str | None = None) -> Record:
    """Read one record (a row of the memory-mapped array)."""
    arr = _open(Path(item.path))
    where = f"{Path(item.path).name}[{item.key}]"
    return make_record(
        item.record,
        np.asarray(arr[int(item.key)]),
        options["src_fs"],
        options["src_leads"],
        where,
        scale=unit_scale(options["src_units"], where),
        meta={"format": "npy"},
    )
