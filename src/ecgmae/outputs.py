"""What a command may write over: only ecgmae's own outputs are ever replaced or deleted.

:func:`check_own_folder` refuses to replace (or write into) a folder that ecgmae did not write: a folder
counts as ecgmae's own ``what`` (a store, a synth folder, a run, a demo) only when the marker its writer
puts there last is present and, where the folder is replaced whole, every entry in it is a name that
writer produces. Anything else (a thesis beside a stray ``meta.json``) is refused in one line and kept.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ecgmae.errors import DataError, safe_name

LOCK_NAME = ".ecgmae.lock"  # the lock file a run folder holds while a command writes it


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or not JSON (a marker check, never an error)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _scratch(name: str) -> bool:
    """A name ecgmae itself leaves behind while writing: the lock, or a hidden temporary file."""
    return name == LOCK_NAME or (name.startswith(".") and name.endswith(".tmp"))


def check_own_folder(folder: Path, what: str, *, marked: Callable[[Path], bool],
                     names: Iterable[str] | None = None, flag: str = "--out") -> None:
    """Refuse ``folder`` unless it is absent, empty, or ecgmae's own ``what``.

    Args:
        folder: the folder a command is about to replace or write into.
        what: what the command writes, for the message (``prepared store``, ``run folder``...).
        marked: true when the folder holds the marker that ecgmae's writer of ``what`` puts there.
        names: glob patterns of every entry that writer produces; when given (the folder is replaced
            whole, so all it holds is deleted), any other entry is refused too.
        flag: the option that named ``folder``.

    Raises:
        DataError: naming the folder and why it is not replaced.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise DataError(f"{flag} {folder}: exists and is not a folder; not overwriting it")
    entries = sorted(p.name for p in folder.iterdir() if not _scratch(p.name))
    if not entries:
        return
    if not marked(folder):
        raise DataError(f"{flag} {folder}: exists and is not an ecgmae {what} (it holds {_some(entries)}); "
                        "not overwriting it: choose another folder")
    if names is not None:
        patterns = tuple(names)
        foreign = [n for n in entries if not any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if foreign:
            raise DataError(f"{flag} {folder}: holds files that ecgmae did not write ({_some(foreign)}); not "
                            f"replacing this {what}: move them out or choose another folder")


def _some(names: list[str], k: int = 3) -> str:
    shown = ", ".join(safe_name(n) for n in names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")
