"""Guards for reading corpora nobody vetted: what a file is before it is read, where it lies, what it says.

* :func:`check_file`: a record file must be a regular file (after following links), and a header must be
  small, before a byte of it is read; a FIFO, a device (``/dev/zero``) or a folder is refused by name.
* :func:`confine`: a file a header names must stay inside the header's folder or the corpus root; an
  absolute name, a ``..`` that climbs out, or a link pointing elsewhere is refused.
* :func:`check_table`: a CSV table read whole (labels, a reference list) is at most
  ``TABLE_MAX_BYTES`` and no cell of it longer than ``CELL_MAX_BYTES``, checked in bounded memory
  before pandas reads it.
* :func:`safe_name` and :func:`clip`: text taken from a file (a name, a header line) is escaped and
  shortened before it reaches a terminal, a log or ``skipped.csv``.

Every refusal is a one-line :class:`~ecgmae.data.record.RecordError` naming the file and the problem.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from ecgmae.data.record import RecordError
from ecgmae.errors import TEXT_MAX, clip, safe_name

__all__ = [
    "CELL_MAX_BYTES",
    "HEADER_MAX_BYTES",
    "TABLE_MAX_BYTES",
    "TEXT_MAX",
    "check_file",
    "check_table",
    "clip",
    "confine",
    "read_small_text",
    "safe_name",
]

# A WFDB header is a few hundred bytes (a 12-lead one with comments about 1 kB); a sidecar JSON no more.
HEADER_MAX_BYTES = 1 << 20
# A label table read whole: CODE-15's exams.csv is 35 MB, PTB-XL's database 6 MB; a cell (a record's
# labels, a report) a few hundred bytes. pandas holds a table in about 10-25 times its size.
TABLE_MAX_BYTES = 256 << 20
CELL_MAX_BYTES = 1 << 16


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def check_file(path: str | Path, where: str, label: str, *, max_bytes: int | None = None) -> int:
    """Size of ``path`` once it is known to be a regular file (links followed) of at most ``max_bytes``.

    Args:
        path: the file.
        where: the file named in messages (a record's header, usually).
        label: how messages call it, e.g. ``header`` or ``data file x.dat``.
        max_bytes: refuse larger files (None: any size).

    Raises:
        RecordError: kind ``missing_file`` when it does not exist, ``unreadable`` when it is not a regular
            file, ``size`` when it is too large.
    """
    try:
        st = os.stat(path)  # follows links: a link to /dev/zero is a character device
    except FileNotFoundError:
        raise RecordError(where, f"{label} not found", "missing_file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise RecordError(
            where, f"cannot read {label} ({getattr(exc, 'strerror', None) or exc})", "missing_file"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise RecordError(where, f"{label} is {_kind(st.st_mode)}, not a regular file", "unreadable")
    if max_bytes is not None and st.st_size > max_bytes:
        raise RecordError(where, f"{label} is {st.st_size} bytes, more than the {max_bytes} any {label} needs", "size")
    return int(st.st_size)


def check_table(path: str | Path, label: str = "labels CSV") -> None:
    """Before pandas reads the CSV ``path`` whole: a regular file of at most ``TABLE_MAX_BYTES`` whose
    cells are at most ``CELL_MAX_BYTES`` each (quoted commas and newlines stay inside their cell), read in
    1 MiB chunks.

    Raises:
        RecordError: naming the file and, for a long cell, the byte where it starts.
    """
    where = str(path)
    check_file(path, where, label, max_bytes=TABLE_MAX_BYTES)
    quoted, run, done = False, 0, 0  # inside quotes; bytes of the cell so far; bytes before this chunk
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            b = np.frombuffer(chunk, np.uint8)
            inside = ((np.cumsum(b == ord('"')) + quoted) & 1).astype(bool)  # a quote byte itself never ends a cell
            ends = np.flatnonzero(np.isin(b, (ord(","), ord("\n"), ord("\r"))) & ~inside)
            starts = np.concatenate(([-run - 1], ends))  # where each cell of this chunk begins (minus one)
            lengths = np.diff(np.concatenate((starts, [len(b)]))) - 1
            longest = int(lengths.argmax())
            if lengths[longest] > CELL_MAX_BYTES:
                raise RecordError(
                    where,
                    f"a cell of more than {CELL_MAX_BYTES} bytes (from byte "
                    f"{done + int(starts[longest]) + 1}): not a {label}",
                    "size",
                )
            run = int(lengths[-1])
            quoted, done = bool(inside[-1]), done + len(b)


def read_small_text(path: str | Path, where: str, label: str, max_bytes: int = HEADER_MAX_BYTES) -> str:
    """The text of a small file (a header, a sidecar), checked by :func:`check_file` and read with a bound
    (a file that grows, or a ``/proc`` file that claims 0 bytes, is cut off rather than read forever)."""
    check_file(path, where, label, max_bytes=max_bytes)
    try:
        # Non-blocking open and a second look at what was opened: a file swapped for a FIFO after the
        # check above still cannot block.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise RecordError(where, f"{label} is not a regular file", "unreadable")
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise RecordError(where, f"cannot read {label} ({exc.strerror})", "missing_file") from None
    if len(data) > max_bytes:
        raise RecordError(where, f"{label} is more than the {max_bytes} bytes any {label} needs", "size")
    return data.decode("utf-8", errors="replace")


def _within(path: Path, bases: list[Path]) -> bool:
    return any(path == b or path.is_relative_to(b) for b in bases)


def confine(header: Path, name: str, root: str | Path | None = None) -> Path:
    """The path of file ``name`` that ``header`` names, refusing one outside the corpus.

    The name must be relative, and both the path it spells (``..`` included) and the file it resolves to
    (links followed) must lie inside the header's folder or the corpus ``root``; a linked header's real
    folder counts too.

    Raises:
        RecordError: kind ``outside``, e.g. ``x.hea: signal file '../../etc/hostname' is outside the corpus
            folder``.
    """
    folder, where = header.parent, header.name
    path = folder / name
    try:
        spelled = Path(os.path.normpath(os.path.abspath(path)))
        lexical = [Path(os.path.abspath(folder))] + ([Path(os.path.abspath(root))] if root is not None else [])
        if not name or os.path.isabs(name) or not _within(spelled, lexical):
            raise RecordError(where, f"signal file '{clip(name)}' is outside the corpus folder", "outside")
        real = path.resolve()
        bases = [folder.resolve(), header.resolve().parent] + ([Path(root).resolve()] if root is not None else [])
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte
        raise RecordError(
            where, f"signal file '{clip(name)}' cannot be resolved (a link loop?)", "unreadable"
        ) from None
    if not _within(real, bases):
        raise RecordError(
            where, f"signal file '{clip(name)}' links to {clip(real)}, outside the corpus folder", "outside"
        )
    return path
