"""One variable of a MATLAB file, looked over before scipy reads it.

``scipy.io.loadmat`` reads every variable, inflates a compressed one as far as the tags inside it say
(whatever size the variable declares) and allocates a struct or cell array by its declared shape, so a
181-byte file can ask for gigabytes and a 1 MB one can inflate to one. :func:`load_variable` walks the
file's tags itself instead: of the other variables only the names are read (the first inflated bytes);
the wanted variable may declare at most ``INFLATE_RATIO`` times the file's size (at least 8 MiB, at
most ``MAX_RECORD_VALUES`` doubles), it is inflated no further than it declares, and every array nested
in it is walked the way scipy will read it, the elements of all its arrays together bounded by that
size (8 bytes an element). Only then does scipy parse those same bytes, from memory, as a file holding
that variable alone.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path
from typing import Any

from ecgmae.data.record import MAX_RECORD_VALUES, RecordError
from ecgmae.data.safety import check_file
from ecgmae.errors import clip

__all__ = ["INFLATE_RATIO", "MAX_ARRAYS", "MAX_DEPTH", "MAX_FILE_BYTES", "load_variable", "variable_budget"]

_INT8, _INT32, _MATRIX, _COMPRESSED, _UTF8 = 1, 5, 14, 15, 16
_CELL, _STRUCT, _CHAR = 1, 2, 4
_NUMERIC = range(6, 16)  # double, single, int8 ... uint64
_CLASS_NAMES = {3: "object", 5: "sparse", 16: "function handle", 17: "opaque"}
MAX_ARRAYS = 4096  # variables in a file, arrays nested in the variable read (an ECG struct holds a handful)
MAX_DEPTH = 16
_NAME_MAX = 4096
_SLACK = 1 << 16  # bytes for tags, names and small fields beside the values
# A variable may hold at most this many times the file's size: real ECGs compress to 1-2 times.
INFLATE_RATIO = 64
MAX_FILE_BYTES = 8 * MAX_RECORD_VALUES + _SLACK  # MAX_RECORD_VALUES doubles


def variable_budget(file_bytes: int) -> int:
    """Most bytes one variable of a ``file_bytes`` file may declare: ``INFLATE_RATIO`` times the file,
    at least 8 MiB (any ECG record), at most ``MAX_RECORD_VALUES`` doubles."""
    return min(MAX_FILE_BYTES, max(8 << 20, INFLATE_RATIO * file_bytes) + _SLACK)


class _Walk:
    """Walks the miMATRIX elements in ``buf`` as scipy reads them: one after the other (the size a nested
    array declares is not what scipy follows, so it is not what is checked either), counting the elements
    scipy will allocate (a value, or a slot of a struct or cell array) against ``limit``."""

    def __init__(self, buf: bytes | memoryview, order: str, where: str, label: str, limit: int = 0) -> None:
        self.buf, self.end, self.order, self.where, self.label = buf, len(buf), order, where, label
        self.limit, self.arrays, self.elements = limit, 0, 0

    def fail(self, problem: str) -> RecordError:
        return RecordError(self.where, f"{self.label}: {problem}", "size")

    def u32(self, pos: int) -> int:
        if pos + 4 > self.end:
            raise self.fail("truncated")
        return int(struct.unpack_from(self.order + "I", self.buf, pos)[0])

    def element(self, pos: int) -> tuple[int, int, int, int]:
        """(type, byte count, where the data starts, where the next element starts) at ``pos``."""
        first = self.u32(pos)
        if first >> 16:  # a small element: 2-byte count and 2-byte type, up to 4 bytes inline
            if first >> 16 > 4:
                raise self.fail("malformed (a small element of more than 4 bytes)")
            return first & 0xFFFF, first >> 16, pos + 4, pos + 8
        count = self.u32(pos + 4)
        if pos + 8 + count > self.end:
            raise self.fail(f"an element of {count} bytes runs past the end of the variable ({self.end} bytes)")
        return first, count, pos + 8, pos + 8 + count + (-count % 8)

    def header(self, pos: int) -> tuple[int, int, tuple[int, ...], str, int]:
        """(byte count, array flags, dimensions, name, where the contents start) of the array at ``pos``;
        a count of 0 is an empty array and nothing else is read."""
        # A full tag, and its byte count taken only for "empty or not", as scipy does.
        mdtype, count, start = self.u32(pos), self.u32(pos + 4), pos + 8
        if mdtype != _MATRIX:
            raise self.fail(f"malformed (element type {mdtype} where an array belongs)")
        if count == 0:
            return 0, 0, (), "", start
        flags = self.u32(start + 8)  # scipy reads the flags' 8-byte tag and 8 bytes as they are
        mdtype, count_d, data, pos = self.element(start + 16)
        if mdtype != _INT32 or count_d % 4 or not 4 <= count_d <= 128:
            raise self.fail("malformed (array dimensions)")
        dims = struct.unpack_from(f"{self.order}{count_d // 4}i", self.buf, data)
        mdtype, count_n, data, pos = self.element(pos)
        if mdtype not in (_INT8, _UTF8) or count_n > _NAME_MAX:
            raise self.fail("malformed (array name)")
        return count, flags, dims, bytes(self.buf[data : data + count_n]).decode("latin1"), pos

    def matrix(self, pos: int, depth: int = 0) -> int:
        """Check the array at ``pos`` and everything in it; where the next element starts."""
        self.arrays += 1
        if self.arrays > MAX_ARRAYS or depth > MAX_DEPTH:
            raise self.fail(f"more than {MAX_ARRAYS} arrays or {MAX_DEPTH} levels of nesting: not an ECG record")
        count, flags, dims, name, pos = self.header(pos)
        if count == 0:
            return pos
        what = f"array {clip(name, 60)!r}" if name else "an array"
        if min(dims) < 0:
            raise self.fail(f"{what} has a negative dimension {dims}")
        n, cls = math.prod(dims), flags & 0xFF
        self.elements += n
        if self.elements > self.limit:  # before scipy allocates them, by shape alone
            raise self.fail(f"{what} declares {n} elements, more than the {self.limit} a file of this size may hold")
        if cls in _NUMERIC or cls == _CHAR:
            pos = self.element(pos)[3]
            if flags & 0x0800:  # complex: the imaginary part follows
                pos = self.element(pos)[3]
        elif cls == _CELL:
            for _ in range(n):
                pos = self.matrix(pos, depth + 1)
        elif cls == _STRUCT:
            mdtype, count, data, pos = self.element(pos)
            length = self.u32(data) if mdtype == _INT32 and count == 4 else 0
            mdtype, count, data, pos = self.element(pos)
            if length <= 0 or mdtype != _INT8 or count % length:
                raise self.fail(f"malformed struct field names in {what}")
            for _ in range(n * (count // length)):
                pos = self.matrix(pos, depth + 1)
        else:
            raise self.fail(f"{what} is a MATLAB {_CLASS_NAMES.get(cls, f'class {cls}')} array, not read here")
        return pos


def _variables(raw: Any, size: int, order: str, where: str) -> list[tuple[str, int, int, int]]:
    """(name, element type, byte count, offset of the bytes) of each top-level variable of a v5 file,
    reading only tags and, for a compressed variable, its first inflated bytes."""
    out: list[tuple[str, int, int, int]] = []
    pos = 128
    while pos + 8 <= size:
        if len(out) == MAX_ARRAYS:
            raise RecordError(where, f"more than {MAX_ARRAYS} variables: not an ECG record")
        raw.seek(pos)
        mdtype, count = struct.unpack(order + "II", raw.read(8))
        if pos + 8 + count > size:
            raise RecordError(
                where,
                f"unreadable MATLAB file: truncated (the variable at byte {pos} declares "
                f"{count} bytes, the file ends at {size})",
            )
        if count == 0 or mdtype not in (_MATRIX, _COMPRESSED):
            raise RecordError(
                where, f"unreadable MATLAB file (an element of type {mdtype} and {count} bytes at byte {pos})"
            )
        if mdtype == _COMPRESSED:
            try:
                head = zlib.decompressobj().decompress(raw.read(min(count, 1 << 16)), 1024)
            except zlib.error as exc:
                raise RecordError(where, f"corrupt compressed MATLAB variable ({exc})") from None
        else:
            head = struct.pack(order + "II", mdtype, count) + raw.read(min(count, 1024))
        try:
            name = _Walk(head, order, where, "variable").header(0)[3]
        except RecordError:
            name = "?"
        out.append((name, mdtype, count, pos + 8))
        pos += 8 + count
    return out


def _check_budget(where: str, name: str, declared: int, size: int) -> None:
    if declared > (budget := variable_budget(size)):
        raise RecordError(
            where,
            f"variable {name!r} declares {declared} bytes, more than a {size}-byte file may "
            f"hold ({budget}: {INFLATE_RATIO} times its size)",
            "size",
        )


def load_variable(path: Path, name: str) -> tuple[Any | None, list[str]]:
    """Variable ``name`` of a MATLAB file as ``scipy.io.loadmat`` gives it (None when absent), and the
    names of all the file's variables.

    Raises:
        RecordError: the file is not a regular file or not MATLAB v4/v5, is malformed, or the variable's
            declared size, or the shape of an array inside it, is beyond what the file can hold (kind
            ``size``); the message names the file.
    """
    import scipy.io
    from scipy.io.matlab import matfile_version

    where = path.name
    size = check_file(path, where, "file", max_bytes=MAX_FILE_BYTES)
    try:
        major, _ = matfile_version(str(path))
        if major == 0:  # v4: numeric matrices only (no struct to find), each read from the file's own bytes
            return None, [v[0] for v in scipy.io.whosmat(str(path))]
    except Exception as exc:  # ValueError, MatReadError... for a file that is no MATLAB file
        raise RecordError(where, f"unreadable MATLAB file ({type(exc).__name__}: {exc})") from None
    if major != 1:
        raise RecordError(where, "MATLAB v7.3 (HDF5) file: save it with -v7 to read it here")
    with open(path, "rb") as raw:
        header = raw.read(128)
        order = "<" if header[126:128] == b"IM" else ">"
        variables = _variables(raw, size, order, where)
        names = [v[0] for v in variables]
        found = next((v for v in variables if v[0] == name), None)
        if found is None:
            return None, names
        _, mdtype, count, offset = found
        if mdtype == _MATRIX:
            _check_budget(where, name, count, size)
        raw.seek(offset)
        body = raw.read(count)
    if mdtype == _COMPRESSED:
        inflate = zlib.decompressobj()
        try:
            tag = inflate.decompress(body, 8)
            declared = struct.unpack(order + "II", tag)[1] if len(tag) == 8 else 0
            _check_budget(where, name, declared, size)
            contents = inflate.decompress(inflate.unconsumed_tail, declared)  # never further than declared
        except zlib.error as exc:
            raise RecordError(where, f"corrupt compressed MATLAB variable ({exc})") from None
        del body
    else:
        tag, contents = struct.pack(order + "II", _MATRIX, count), body
    # The file scipy reads: this variable alone, uncompressed (no subsystem data).
    data = b"".join((header[:116], bytes(8), header[124:128], tag, contents))
    del contents
    _Walk(memoryview(data)[128:], order, where, f"variable {name!r}", variable_budget(size) // 8).matrix(0)
    try:
        mat = scipy.io.loadmat(io.BytesIO(data), variable_names=[name])
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for bad contents
        raise RecordError(where, f"unreadable MATLAB variable {name!r} ({type(exc).__name__}: {exc})") from None
    return mat.get(name), names
