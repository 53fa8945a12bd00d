"""An ``.npz`` written while its rows arrive, in bounded memory, and put in place only when complete.

``ecgmae embed`` over an archive cannot hold every embedding (a million records x 512 float32 is 2 GB):
:func:`npz_rows` appends each chunk of rows to a part file beside the output, then writes the archive
``np.savez`` would have written (uncompressed zip, one ``.npy`` per array, read back by ``np.load``) by
copying the parts in, and renames it onto the output. Text rows (record ids) are stored as fixed-width
unicode like ``np.array(ids, dtype=str)``: the width is known only at the end, so their parts are widened
chunk by chunk while copying.

    with npz_rows(out) as npz:
        for chunk in chunks:
            npz.append(record=chunk.ids, embedding=chunk.values)
        npz.put(skipped=np.array(skipped_ids, dtype=str))
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ecgmae.utils import atomic_path

__all__ = ["NpzRows", "npz_rows"]

_COPY = 1 << 20  # bytes per read when copying a part into the archive


class _Part:
    """The rows of one array so far: raw bytes (numbers) or a sequence of saved chunks (text)."""

    def __init__(self, path: Path, first: np.ndarray) -> None:
        self.path = path
        self.text = first.dtype.kind == "U"
        self.dtype = first.dtype
        self.row_shape = first.shape[1:]
        self.rows = 0
        self.width = 1  # characters of the longest text row (np.array([], dtype=str) is <U1 too)
        self.file: BinaryIO = open(path, "wb")

    def add(self, rows: np.ndarray) -> None:
        if self.text:
            self.width = max(self.width, rows.dtype.itemsize // 4)
            np.save(self.file, rows, allow_pickle=False)
        else:
            if rows.dtype != self.dtype or rows.shape[1:] != self.row_shape:
                raise ValueError(f"rows of {rows.dtype}{rows.shape[1:]} appended to {self.dtype}{self.row_shape}")
            self.file.write(np.ascontiguousarray(rows).tobytes())
        self.rows += len(rows)

    def copy_into(self, out: BinaryIO) -> None:
        self.file.close()
        dtype = np.dtype(f"<U{self.width}") if self.text else self.dtype
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(out, {**header, "shape": (self.rows, *self.row_shape)})
        with open(self.path, "rb") as f:
            if not self.text:
                shutil.copyfileobj(f, out, _COPY)
                return
            done = 0
            while done < self.rows:  # one saved chunk at a time, widened to the final width
                rows = np.load(f, allow_pickle=False)
                out.write(rows.astype(dtype).tobytes())
                done += len(rows)


class NpzRows:
    """Arrays of an ``.npz`` grown by rows (:meth:`append`) plus whole small ones (:meth:`put`); see the module."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._parts: dict[str, _Part] = {}
        self._whole: dict[str, np.ndarray] = {}
        self._order: list[str] = []

    def append(self, **rows: Sequence[Any] | np.ndarray) -> None:
        """Append rows to each named array (strings become fixed-width text, as ``np.array(..., dtype=str)``)."""
        for name, value in rows.items():
            arr = np.array(value, dtype=str) if _is_text(value) else np.asarray(value)
            if arr.ndim == 0:
                raise ValueError(f"{name}: rows must have at least one dimension")
            if name in self._whole:
                raise ValueError(f"{name}: already put whole")
            if name not in self._parts:
                self._parts[name] = _Part(self._folder / f"{len(self._order)}.part", arr)
                self._order.append(name)
            self._parts[name].add(arr)

    def put(self, **arrays: np.ndarray) -> None:
        """Whole arrays, written as they are (keep these small)."""
        for name, value in arrays.items():
            if name in self._parts or name in self._whole:
                raise ValueError(f"{name}: given twice")
            self._whole[name] = np.asarray(value)
            self._order.append(name)

    def rows(self, name: str) -> int:
        """Rows appended to ``name`` so far."""
        return self._parts[name].rows if name in self._parts else 0

    def write(self, target: Path) -> None:
        """The archive, as ``np.savez(target, **arrays)`` in the order the arrays were first named."""
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name in self._order:
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    if name in self._parts:
                        self._parts[name].copy_into(member)  # type: ignore[arg-type]
                    else:
                        np.lib.format.write_array(member, self._whole[name], allow_pickle=False)

    def close(self) -> None:
        for part in self._parts.values():
            part.file.close()


def _is_text(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "US"
    return isinstance(value, (list, tuple)) and (not value or isinstance(value[0], str))


@contextlib.contextmanager
def npz_rows(path: str | Path) -> Iterator[NpzRows]:
    """An :class:`NpzRows` whose archive is written onto ``path`` atomically when the block succeeds.

    The parts live in a hidden folder beside ``path`` (the same disk) and are removed either way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".parts", dir=path.parent) as folder:
        npz = NpzRows(Path(folder))
        try:
            yield npz
            with atomic_path(path) as tmp:
                npz.write(tmp)
        finally:
            npz.close()
