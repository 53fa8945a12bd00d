"""What a command may write over, and one writer per folder.

* :func:`check_own_folder` refuses to replace (or write into) a folder that ecgmae did not write: a
  folder counts as ecgmae's own ``what`` (a store, a synth folder, a run, a demo) only when the marker its
  writer puts there is present and, where the folder is replaced whole, every entry in it is a name that
  writer produces. Anything else (a thesis beside a stray ``meta.json``) is refused in one line and kept.
* :func:`locked` holds an exclusive ``flock`` on a folder while a command writes it, so a second
  command on the same folder refuses at once instead of mixing its files with the first one's. The
  kernel drops the lock when the process ends, however it ends (``kill -9`` included): no stale locks.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ecgmae.errors import DataError, ECGMAEError, safe_name

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


def check_own_folder(
    folder: Path, what: str, *, marked: Callable[[Path], bool], names: Iterable[str] | None = None, flag: str = "--out"
) -> None:
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
        raise DataError(
            f"{flag} {folder}: exists and is not an ecgmae {what} (it holds {_some(entries)}); "
            "not overwriting it: choose another folder"
        )
    if names is not None:
        patterns = tuple(names)
        foreign = [n for n in entries if not any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if foreign:
            raise DataError(
                f"{flag} {folder}: holds files that ecgmae did not write ({_some(foreign)}); not "
                f"replacing this {what}: move them out or choose another folder"
            )


def _some(names: list[str], k: int = 3) -> str:
    shown = ", ".join(safe_name(n) for n in names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")


def lock_beside(folder: Path) -> Path:
    """The lock file of a folder that is replaced whole: ``.NAME.lock`` beside it, which outlives the swap."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def first_process() -> bool:
    """False in the second and later processes of a multi-process (DDP) run, which each run the command
    again: the first process holds the folder's lock for all of them."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


@contextlib.contextmanager
def locked(folder: Path, lock: Path | None = None, flag: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while the block runs; refuse at once if another process holds it.

    Args:
        folder: the folder a command writes (named in the refusal).
        lock: the lock file: ``FOLDER/.ecgmae.lock`` by default; a folder that is replaced whole (a store)
            is locked through a file beside it (:func:`lock_beside`).
        flag: the option that named ``folder``.

    Raises:
        ECGMAEError: another command is writing ``folder``.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): one writer per folder is up to the user
        yield
        return
    lock = Path(folder) / LOCK_NAME if lock is None else Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            who = f" (process {holder})" if holder.isdigit() else ""
            raise ECGMAEError(
                f"{flag} {folder}: another ecgmae command is writing it{who}; wait for it to end "
                "or choose another folder"
            ) from None
        try:  # the previous holder removes the file as it ends: lock the file that is there now
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
