"""HDF5 in the CODE / CODE-15% layout (Ribeiro et al. 2020): ``tracings`` (N, samples, leads) + ``exam_id``.

``SRC`` is one ``.hdf5``/``.h5`` file or a folder of them (CODE-15%: ``exams_part0.hdf5`` ...). Labels
come from ``--labels`` (or ``SRC/exams.csv`` beside the parts), keyed by ``exam_id``; its 0/1 or
True/False class columns become the labels (the six CODE classes ``1dAVb RBBB LBBB SB AF ST`` when all
present) and ``patient_id`` is kept. Defaults follow the CODE description: 400 Hz, lead order
``DI DII DIII AVL AVF AVR V1-V6`` (note aVL/aVF/aVR), zero padding on both sides (trimmed here).
Units: the release says "1e-4 V" while its own conversion note and the amplitudes (R waves near 1)
match mV, so mV is assumed; ``--src-units`` overrides. Exams whose tracing is all zeros are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgmae.data.formats import import_h5py, read_h5_record, tracings
from ecgmae.data.record import Record, unit_scale
from ecgmae.data.safety import check_file, check_table
from ecgmae.data.sources import Item, Scan, read_label_table
from ecgmae.errors import DataError
from ecgmae.utils import log

CODE_CLASSES: tuple[str, ...] = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")


def scan(
    src: Path, *, labels: Path | None = None, task: str | None = None, options: dict[str, Any] | None = None
) -> Scan:
    """List the exams of every file, with labels and patients from the exams table."""
    if task:
        raise DataError(f"--task {task!r}: the hdf5 source takes its classes from the labels CSV")
    h5py = import_h5py()
    options = dict(options or {})
    unit_scale(options.get("src_units") or "mV", str(src))
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.suffix.lower() in (".h5", ".hdf5"))
    if not files:
        raise DataError(f"{src}: no .h5/.hdf5 files")
    folder = src if src.is_dir() else src.parent
    label_path = Path(labels) if labels else (folder / "exams.csv" if (folder / "exams.csv").is_file() else None)
    classes = options.get("classes")
    table = None
    if label_path is not None:
        if not classes:
            import pandas as pd

            check_table(label_path)
            header = set(pd.read_csv(label_path, nrows=0).columns)
            classes = CODE_CLASSES if set(CODE_CLASSES) <= header else None
        table = read_label_table(label_path, tuple(classes) if classes else None)
    items = []
    for path in files:
        check_file(path, path.name, "file")
        try:
            with h5py.File(path, "r") as f:
                n = tracings(f, path.name).shape[0]
                ids = [str(int(v)) for v in f["exam_id"][:]] if "exam_id" in f else None
        except OSError as exc:
            raise DataError(f"{path}: unreadable HDF5 file ({exc})") from None
        for i in range(n):
            rid = ids[i] if ids else (f"{path.stem}:{i}" if len(files) > 1 else str(i))
            key = table.lookup(rid) if table is not None else None
            if table is not None and key is not None:
                items.append(Item(rid, str(path), labels=table.labels[key], key=i, patient=table.patients.get(key)))
            else:
                items.append(Item(rid, str(path), labels=(), key=i))
    if table is not None and label_path is not None:
        missing = sum(1 for it in items if table.lookup(it.record) is None)
        if missing:
            log.warning("%d exam(s) have no row in %s: kept without labels", missing, label_path.name)
    inputs = files + ([label_path] if label_path else [])
    return Scan(items, table.names if table else None, inputs, options=options)


def load(item: Item, options: dict[str, Any], root: str | None = None) -> Record:
    """Read one exam."""
    return read_h5_record(
        item.path,
        int(item.key),
        fs=options.get("src_fs"),
        leads=options.get("src_leads"),
        units=options.get("src_units"),
        record=item.record,
    )
