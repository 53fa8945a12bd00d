"""Read one ECG record: float32 ``(leads, samples)`` in mV, its sampling rate and canonical lead names.

Formats: WFDB (``.hea`` + ``.dat``/``.mat``; the common formats 16, 61, 80, 160, 212, 24 and 32 are
decoded with numpy, anything else goes through the ``wfdb`` package), numpy ``.npy`` (with a ``.json``
sidecar or explicit ``fs``), the CPSC 2018 MATLAB struct, CODE-style HDF5, and the one-file hospital
exports of :data:`ecgmae.data.exports.FILE_READERS`: ``.xml`` by its root element (GE MUSE, Philips
Sierra, HL7 aECG), DICOM ECG ``.dcm`` and EDF/EDF+ ``.edf``. docs/formats.md lists what each keeps.
Every failure is a :class:`RecordError` (a ``DataError``) naming the file and the problem. Leads that
are not standard ECG leads (Frank ``vx``, ``vy``, ``vz``...) are dropped and listed in
``meta["dropped_leads"]``; a lead that is entirely NaN is dropped too (it is missing, not zero).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.exports import FILE_READERS
from ecgmae.data.formats import read_h5_record, read_mat
from ecgmae.data.record import (
    FS_RANGE,
    LEADS_12,
    MAX_RECORD_VALUES,
    Record,
    RecordError,
    canonical_lead,
    lead_positions,
    make_record,
    unit_scale,
)
from ecgmae.data.safety import HEADER_MAX_BYTES, check_file, read_small_text
from ecgmae.data.wfdb_read import check_wfdb_files, parse_header, read_wfdb
from ecgmae.errors import DataError

# Record and friends live in ecgmae.data.record, the WFDB reader in ecgmae.data.wfdb_read; they stay importable
# from here.
__all__ = [
    "FS_RANGE",
    "LEADS_12",
    "MAX_RECORD_VALUES",
    "Record",
    "RecordError",
    "canonical_lead",
    "check_wfdb_files",
    "lead_positions",
    "make_record",
    "parse_header",
    "read_record",
    "unit_scale",
]


# -------------------------------------------------------------------------------------- numpy
def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_suffix(".json")
    if not side.exists():
        return {}
    try:
        data = json.loads(read_small_text(side, side.name, "sidecar JSON", HEADER_MAX_BYTES))
    except ValueError as exc:
        raise RecordError(side.name, f"unreadable sidecar JSON ({exc})", "header") from None
    return data if isinstance(data, dict) else {}


def _read_array(path: Path, arr: np.ndarray, *, fs: float | None, leads: Any, units: str | None, layout: str) -> Record:
    side = _sidecar(path)
    fs = fs if fs is not None else side.get("fs")
    if fs is None:
        raise RecordError(path.name, "sampling rate unknown: pass fs or write it in a .json sidecar", "header")
    if layout == "TL":
        arr = arr.T
    leads = leads or side.get("leads") or (LEADS_12 if arr.shape[0] == 12 else None)
    if leads is None:
        raise RecordError(path.name, f"{arr.shape[0]} leads but no lead names: pass leads", "leads")
    scale = unit_scale(units or side.get("units", "mV"), path.name)
    return make_record(path.stem, arr, fs, leads, path.name, scale=scale, meta={"format": path.suffix[1:]})


def read_record(
    path: str | Path,
    *,
    fs: float | None = None,
    leads: Any = None,
    units: str | None = None,
    index: int | None = None,
    root: str | Path | None = None,
) -> Record:
    """Read one record, dispatching on the suffix: ``.hea``, ``.mat``, ``.npy``, ``.h5``/``.hdf5``, and the
    exports of :data:`~ecgmae.data.exports.FILE_READERS` (``.xml``: GE MUSE, Philips Sierra, HL7 aECG;
    ``.dcm``: DICOM ECG; ``.edf``: EDF/EDF+).

    Args:
        path: the file (a WFDB record may also be given without suffix).
        fs: sampling rate for formats that do not store it (.npy; HDF5 defaults to 400 Hz, CODE).
        leads: lead names for .npy/HDF5 (default: the 12 standard leads; CODE order for HDF5).
        units: physical unit of .npy/HDF5 values (default mV).
        index: which record of an HDF5/.npy file holding several.
        root: the corpus folder: files a WFDB header names may lie anywhere inside it (default: only in
            the header's own folder).

    Raises:
        DataError: naming the file and the problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    known = (".hea", ".mat", ".npy", ".h5", ".hdf5", *FILE_READERS)
    if suffix not in known and path.with_suffix(".hea").exists():
        path, suffix = path.with_suffix(".hea"), ".hea"
    try:
        if suffix == ".hea":
            return read_wfdb(path, root)
        if suffix == ".mat":
            if path.with_suffix(".hea").exists():  # CinC-style .mat holding a WFDB signal
                return read_wfdb(path.with_suffix(".hea"), root)
            check_file(path, path.name, "file")
            return read_mat(path)
        if suffix == ".npy":
            check_file(path, path.name, "file")  # a FIFO would block the reader forever (.h5: read_h5_record)
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise RecordError(path.name, f"unreadable .npy file ({exc})") from None
            if arr.ndim == 3:
                if index is None:
                    raise RecordError(path.name, f"holds {arr.shape[0]} records: pass index", "shape")
                arr = arr[index]
            return _read_array(path, np.asarray(arr), fs=fs, leads=leads, units=units, layout="LT")
        if suffix in (".h5", ".hdf5"):
            return read_h5_record(path, index or 0, fs=fs, leads=leads, units=units)
        if suffix in FILE_READERS:
            return FILE_READERS[suffix](path)
    except DataError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # last line of defence: a corrupt file must never crash a long prepare
        raise RecordError(path.name, f"unreadable ({type(exc).__name__}: {exc})") from None
    raise RecordError(path.name, f"unknown file type {suffix or '(none)'}; expected {', '.join(known)}", "unreadable")
