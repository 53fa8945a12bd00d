"""Guards for reading corpora nobody vetted: what a file is before it is read, where it lies, what it says.

* :func:`check_file`: a record file must be a regular file (after following links), and a header must be
  small, before a byte of it is read; a FIFO, a device (``/dev/zero``) or a folder is refused by name.
* :func:`confine`: a file a header names must stay inside the header's folder or the corpus root; an
  absolute name, a ``..`` that climbs out, or a link pointing elsewhere is refused.
* :func:`safe_name` and :func:`clip`: text taken from a file (a name, a header line) is escaped and
  shortened before it reaches a terminal, a log or ``skipped.csv``.

Every refusal is a one-line :class:`~ecgmae.data.io.RecordError` naming the file and the problem.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

# A WFDB header is a few hundred bytes (a 12-lead one with comments about 1 kB); a sidecar JSON no more.
HEADER_MAX_BYTES = 1 << 20
# File-derived text kept in one message.
TEXT_MAX = 200


def safe_name(text: object) -> str:
    """``text`` with every non-printable character (control codes, escape sequences, bidi overrides,
    undecodable bytes) written as its Python escape, so it prints as what it is, on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def clip(text: object, limit: int = TEXT_MAX) -> str:
    """:func:`safe_name` of ``text``, cut to ``limit`` characters with a note of how much was left out."""
    out = safe_name(text)
    if len(out) <= limit:
        return out
    return f"{out[:limit]}... ({len(out) - limit} more characters)"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
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
    from ecgmae.data.io import RecordError

    try:
        st = os.stat(path)  # follows links: a link to /dev/zero is a character device
    except FileNotFoundError:
        raise RecordError(where, f"{label} not found", "missing_file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise RecordError(where, f"cannot read {label} ({getattr(exc, 'strerror', None) or exc})", "missing_file") \
            from None
    if not stat.S_ISREG(st.st_mode):
        raise RecordError(where, f"{label} is {_kind(st.st_mode)}, not a regular file", "unreadable")
    if max_bytes is not None and st.st_size > max_bytes:
        raise RecordError(where, f"{label} is {st.st_size} bytes, more than the {max_bytes} any {label} needs",
                          "size")
    return int(st.st_size)


def read_small_text(path: str | Path, where: str, label: str, max_bytes: int = HEADER_MAX_BYTES) -> str:
    """The text of a small file (a header, a sidecar), checked by :func:`check_file` and read with a bound
    (a file that grows, or a ``/proc`` file that claims 0 bytes, is cut off rather than read forever)."""
    from ecgmae.data.io import RecordError

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
    from ecgmae.data.io import RecordError

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
        raise RecordError(where, f"signal file '{clip(name)}' cannot be resolved (a link loop?)", "unreadable") \
            from None
    if not _within(real, bases):
        raise RecordError(where, f"signal file '{clip(name)}' links to {clip(real)}, outside the corpus folder",
                          "outside")
    return path


def check_wfdb_files(hea: Path, rec: dict[str, Any], sigs: list[Any], text: str, root: str | Path | None) -> None:
    """Before the wfdb package reads a record: every file it would open is confined, regular and sized
    for what the header declares (segments of a multi-segment record included)."""
    from ecgmae.data.io import MAX_RECORD_VALUES, RecordError, parse_header

    where = hea.name
    sizes: list[int] = []
    if rec["multi"]:
        lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        for tok in lines[1:]:
            if not tok or tok[0] == "~":
                continue
            seg = confine(hea, f"{tok[0]}.hea", root)
            seg_rec, seg_sigs, _ = parse_header(read_small_text(seg, where, f"segment header {tok[0]}.hea"),
                                                seg.name)
            if seg_rec["multi"]:
                raise RecordError(where, f"segment {clip(tok[0])} is itself multi-segment", "header")
            sizes += [check_file(confine(seg, f, root), where, f"data file {f}")
                      for f in dict.fromkeys(s.file for s in seg_sigs) if f != "~"]
    else:
        sizes += [check_file(confine(hea, f, root), where, f"data file {f}")
                  for f in dict.fromkeys(s.file for s in sigs) if f != "~"]
    nsamp, nsig = rec["nsamp"] or 0, max(rec["nsig"], 1)
    values = nsamp * nsig
    # 64 values per stored byte is far beyond any WFDB encoding (FLAC of a flat line included).
    limit = min(MAX_RECORD_VALUES, max(1 << 20, 64 * sum(sizes)))
    if values > limit:
        raise RecordError(where, f"header declares {nsamp} samples x {nsig} signals, more than its "
                          f"data files ({sum(sizes)} bytes) can hold", "length")
