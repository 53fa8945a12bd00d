"""Readers for the two container formats that are not WFDB: a CPSC 2018 MATLAB struct and CODE-style HDF5.

:func:`ecgmae.data.io.read_record` dispatches here by suffix; the ``cpsc2018`` and ``hdf5`` sources
use them for their corpora. Each returns a :class:`~ecgmae.data.record.Record` or raises a
:class:`~ecgmae.data.record.RecordError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.matfile import load_variable
from ecgmae.data.record import LEADS_12, Record, RecordError, make_record, unit_scale
from ecgmae.data.safety import check_file
from ecgmae.errors import DataError, clip


def read_mat(path: Path) -> Record:
    """One CPSC 2018 ``.mat``: struct ``ECG`` with ``data`` (12, N) in mV, ``sex``, ``age``; 500 Hz.

    Only ``ECG`` is read, after :func:`~ecgmae.data.matfile.load_variable` has bounded its size."""
    value, names = load_variable(path, "ECG")
    if value is None:
        raise RecordError(
            path.name,
            "no 'ECG' struct and no .hea header beside it: sampling rate and "
            f"leads unknown (variables: {clip(', '.join(names))})",
        )
    try:
        ecg = value[0, 0]
        data = np.asarray(ecg["data"], dtype=np.float64)
        meta: dict[str, Any] = {"format": "cpsc2018"}
        if "sex" in ecg.dtype.names and np.size(ecg["sex"]):
            meta["sex"] = str(np.ravel(ecg["sex"])[0])[:1].upper()
        if "age" in ecg.dtype.names and np.size(ecg["age"]):
            meta["age"] = float(np.ravel(ecg["age"])[0])
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise RecordError(path.name, f"malformed ECG struct ({exc})") from None
    if data.ndim == 2 and data.shape[0] != 12 and data.shape[1] == 12:
        data = data.T
    if data.ndim != 2 or data.shape[0] != 12:
        raise RecordError(path.name, f"ECG.data has shape {data.shape}, expected (12, samples)", "leads")
    return make_record(path.stem, data, 500.0, LEADS_12, path.name, meta=meta)


CODE_LEADS: tuple[str, ...] = ("I", "II", "III", "aVL", "aVF", "aVR", "V1", "V2", "V3", "V4", "V5", "V6")
CODE_FS = 400.0


def import_h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise DataError("reading HDF5 needs h5py: pip install 'ecgmae[hdf5]'") from None
    return h5py


def tracings(f: Any, where: str) -> Any:
    if "tracings" in f:
        return f["tracings"]
    arrays = [k for k in f if getattr(f[k], "ndim", 0) == 3]
    if len(arrays) != 1:
        raise RecordError(where, f"no 'tracings' dataset (datasets: {', '.join(f)})", "shape")
    return f[arrays[0]]


def read_h5_record(
    path: str | Path,
    index: int,
    *,
    fs: float | None = None,
    leads: Any = None,
    units: str | None = None,
    record: str | None = None,
) -> Record:
    """Exam ``index`` of a CODE-style file as a :class:`Record` (zero padding at both ends removed)."""
    h5py = import_h5py()
    path = Path(path)
    where = f"{path.name}[{index}]"
    check_file(path, path.name, "file")  # a FIFO would block the reader forever
    try:
        with h5py.File(path, "r") as f:
            ds = tracings(f, path.name)
            if ds.ndim != 3 or not 0 <= index < ds.shape[0]:
                raise RecordError(where, f"no exam {index} in tracings of shape {ds.shape}", "shape")
            x = np.asarray(ds[index], dtype=np.float32)  # (samples, leads)
            if record is None and "exam_id" in f:
                record = str(int(f["exam_id"][index]))
    except OSError as exc:
        raise RecordError(path.name, f"unreadable HDF5 file ({exc})") from None
    nonzero = np.flatnonzero(np.any(x != 0, axis=1))
    if nonzero.size == 0:
        raise RecordError(where, "all samples are zero (padding, no tracing)", "empty")
    trimmed = x[nonzero[0] : nonzero[-1] + 1]
    leads = tuple(leads) if leads else (CODE_LEADS if x.shape[1] == 12 else None)
    if leads is None:
        raise RecordError(where, f"{x.shape[1]} leads but no lead names: pass --src-leads", "leads")
    meta = {"format": "hdf5", "trimmed": (int(nonzero[0]), int(x.shape[0] - nonzero[-1] - 1))}
    return make_record(
        record or str(index), trimmed.T, fs or CODE_FS, leads, where, scale=unit_scale(units or "mV", where), meta=meta
    )
