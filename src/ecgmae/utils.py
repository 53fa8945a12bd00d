"""Small shared helpers: atomic writes, table cells, logging, progress. No heavy imports; no Lightning (run logs
and seeding live in :mod:`ecgmae.engine.joblog`)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("ecgmae")


def swap_folder(tmp: Path, out: Path, *, check: Callable[[Path], object]) -> None:
    """Rename the finished folder ``tmp`` onto ``out``; an existing ``out`` is moved aside to
    ``OUT.old-*`` first and deleted after, so ``out`` is always either the old or the new one whole.

    ``check(out)`` runs just before an existing ``out`` is moved aside and raises to refuse it: the
    caller's rule for what it may delete (:func:`ecgmae.outputs.check_own_folder`), checked again at the
    last moment because the folder may have changed while the new one was built.
    """
    old = None
    if out.exists() or out.is_symlink():
        check(out)
        old = out.parent / f"{out.name}.old-{secrets.token_hex(4)}"
    try:
        if old is not None:
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:  # a signal or an error between the two renames: the old folder goes back
        if old is not None and (old.exists() or old.is_symlink()) and not (out.exists() or out.is_symlink()):
            os.replace(old, out)
        raise
    if old is not None:
        if old.is_symlink():  # a link to a folder: the link goes, never what it points to
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)


def write_error(exc: BaseException, path: str | Path) -> OSError:
    """A writer's failure as an OSError naming ``path`` (the output, not its temporary name).

    ``exc`` is an OSError (a full disk: ENOSPC; a file-size limit: EFBIG) or a library's own error that
    carries the system's code in its text (safetensors: ``I/O error: No space left on device (os error 28)``).
    """
    code = getattr(exc, "errno", None)
    if code is None:
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code), str(path))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file, and an interrupted write leaves the old file intact. An OSError
    that names no file, or the temporary one (a full disk), is raised again naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes 0600, and a writer may replace the file with its own (safetensors does): outputs
        # get the usual permissions once written
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.filename in (None, tmp, str(tmp_path)):
            raise write_error(exc, path) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


# A spreadsheet runs a cell starting with = + - @, a tab or a CR as a formula (CSV injection): a leading
# apostrophe makes it text. A cell that already starts with one gets another, so that unescape_cell
# undoes escape_cell exactly (the store's index.csv is read back).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def escape_cell(value: Any) -> Any:
    """``value`` safe to open in a spreadsheet: text starting with ``= + - @``, a tab, a CR or ``'`` gets a
    leading ``'``; numbers and other text are returned unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def unescape_cell(value: Any) -> Any:
    """The text :func:`escape_cell` was given (one leading ``'`` removed)."""
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def escape_table(table: Any) -> Any:
    """A copy of the DataFrame ``table`` with :func:`escape_cell` applied to its column names and the cells
    of its text columns (numeric columns keep their dtype, and so their float format)."""
    import pandas as pd

    out = table.copy()
    for name in out.columns:
        if not pd.api.types.is_numeric_dtype(out[name]):
            out[name] = out[name].map(escape_cell)
    out.columns = [escape_cell(str(c)) for c in table.columns]
    return out


def unescape_table(table: Any) -> Any:
    """The DataFrame :func:`escape_table` wrote, read back with ``dtype=str``: :func:`unescape_cell` on its
    column names and, vectorised, on every cell (a store's index holds millions of cells)."""
    out = table.copy()
    for name in out.columns:
        col = out[name].astype(str)
        quoted = col.str.startswith("'")
        if quoted.any():
            out[name] = col.where(~quoted, col.str[1:])
    out.columns = [unescape_cell(str(c)) for c in table.columns]
    return out


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# How training shows progress: Lightning's own bars (``--verbose``) or one ecgmae bar per run; and whether
# a multi-step job (demo, benchmark) is running, whose stage lines replace the finished runs' bars.
_PROGRESS: dict[str, bool] = {"lightning_bars": False, "in_stages": False}


class StderrHandler(logging.StreamHandler):
    """A stream handler that writes to ``sys.stderr`` as it is when a record is emitted, so a handler set up
    by one command keeps working after stderr is replaced (a notebook, a test's captured stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ and setStream assign it: always stderr
        pass


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Configure the ``ecgmae`` logger for command-line use; ``verbose`` also brings back Lightning's bars."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)
    root = logging.getLogger("ecgmae")
    root.handlers[:] = [handler]
    root.setLevel(level)
    _PROGRESS["lightning_bars"] = verbose


def lightning_bars() -> bool:
    """True when training should draw Lightning's own progress bars (``--verbose``)."""
    return _PROGRESS["lightning_bars"]


def in_stages() -> bool:
    """True inside :class:`Stages` (a demo or benchmark): a run's bar is cleared when the run ends."""
    return _PROGRESS["in_stages"]


class Stages:
    """One line per stage of a multi-step job: ``[k/N] what | elapsed, ETA``.

    ``weights`` are the stages' expected costs in any unit (e.g. optimiser steps); the ETA extrapolates
    the time per unit of the stages run so far (stages skipped because their results exist do not count).
    While a job runs, training draws one bar per run and clears it when the run ends.
    """

    def __init__(self, weights: list[float]) -> None:
        import time

        self._clock = time.perf_counter
        self.weights = list(weights)
        self.t0 = self._clock()
        self.k = 0
        self._started: float | None = None
        self._spent = 0.0  # seconds of the measured stages
        self._done = 0.0  # their weight
        self._outer = False

    def __enter__(self) -> Stages:
        self._outer = _PROGRESS["in_stages"]
        _PROGRESS["in_stages"] = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()
        _PROGRESS["in_stages"] = self._outer

    def _close(self) -> None:
        if self._started is not None and self.k:
            w = self.weights[self.k - 1]
            if w > 0:
                self._spent += self._clock() - self._started
                self._done += w
        self._started = None

    def start(self, what: str) -> None:
        """Log the next stage's line; its time counts until the next :meth:`start` (or :meth:`skip`)."""
        self._close()
        self.k += 1
        log.info("[%d/%d] %s | %s", self.k, len(self.weights), what, self._clock_text())
        self._started = self._clock()

    def skip(self, what: str) -> None:
        """A stage whose results exist: logged at debug level, not timed."""
        self._close()
        self.k += 1
        log.debug("[%d/%d] %s: reused", self.k, len(self.weights), what)

    def _clock_text(self) -> str:
        text = f"{fmt_seconds(self._clock() - self.t0)} elapsed"
        left = sum(self.weights[self.k - 1 :])
        if self._done > 0:
            text += f", ETA ~{fmt_seconds(self._spent / self._done * left)}"
        return text

    def finish(self, what: str = "done") -> None:
        self._close()
        log.info("%s in %s", what, fmt_seconds(self._clock() - self.t0))


def fmt_seconds(s: float) -> str:
    """``42 s``, ``3m05s``, ``1h02m``."""
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def progress(iterable: Any = None, *, quiet: bool = False, **kwargs: Any) -> Any:
    """A tqdm progress bar on stderr, silent with ``quiet``."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=quiet, dynamic_ncols=True, **kwargs)
