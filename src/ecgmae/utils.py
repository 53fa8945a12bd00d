"""Small shared helpers: atomic writes, seeding, logging. No heavy imports at module level."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
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
        os.replace(out, old)
    os.replace(tmp, out)
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


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (if importable) so the same command gives the same numbers."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may use the legacy global RNG
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


# How training shows progress: Lightning's own bars (``--verbose``) or one ecgmae bar per run; and whether
# a multi-step job (demo, benchmark) is running, whose stage lines replace the finished runs' bars.
_PROGRESS: dict[str, bool] = {"lightning_bars": False, "in_stages": False}
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to ``sys.stderr`` as it is when a record is emitted, so a handler set up
    by one command keeps working after stderr is replaced (a notebook, a test's captured stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
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


class _Console(logging.Filter):
    """On the terminal during a multi-step job: Lightning's info lines and its warnings go to the log
    file only (they repeat once per run); ecgmae's own messages and other warnings stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("lightning"):
            return record.levelno >= logging.WARNING and "Tip:" not in str(record.msg)
        if record.name == "py.warnings":
            return "lightning" not in record.getMessage()
        return True


class _Once(logging.Filter):
    """A record reaching the file through several loggers (propagation) is written once."""

    def __init__(self) -> None:
        super().__init__()
        self.last: logging.LogRecord | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record is self.last:
            return False
        self.last = record
        return True


@contextlib.contextmanager
def job_log(path: str | Path) -> Iterator[Path]:
    """Append everything logged (ecgmae at DEBUG, Lightning's info lines, Python warnings) to ``path``
    while the block runs; unless ``--verbose``, Lightning's info lines and warnings leave the terminal
    for the file (ecgmae's own messages and other warnings stay)."""
    try:  # Lightning adds its terminal handler when imported: import it now, so that the filter finds it
        import lightning.pytorch  # noqa: F401
    except ImportError:  # pragma: no cover - lightning is a dependency
        pass
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.addFilter(_Once())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("ecgmae", *LIGHTNING_LOGGERS, "py.warnings")]
    saved_levels = [lg.level for lg in loggers]
    console = _Console()
    filtered: list[logging.Handler] = []
    leveled: list[logging.Handler] = []
    for lg in loggers:
        for h in lg.handlers:
            if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler):
                continue
            if not lightning_bars():
                h.addFilter(console)
                filtered.append(h)
            if lg.name == "ecgmae" and h.level == logging.NOTSET:  # the terminal keeps its level
                h.setLevel(lg.getEffectiveLevel())
                leveled.append(h)
        lg.addHandler(handler)
    if len(loggers[0].handlers) > 1:  # the file gets ecgmae's debug lines (not a library caller's root logger)
        loggers[0].setLevel(logging.DEBUG)
    warn_log = loggers[-1]
    extra: logging.Handler | None = None
    if warn_log.handlers == [handler] and not logging.getLogger().handlers:
        extra = StderrHandler()  # warnings still reach the terminal, as before
        if not lightning_bars():
            extra.addFilter(console)
        warn_log.addHandler(extra)
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for lg, level in zip(loggers, saved_levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
        for h in filtered:
            h.removeFilter(console)
        for h in leveled:
            h.setLevel(logging.NOTSET)
        if extra is not None:
            warn_log.removeHandler(extra)
        handler.close()


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
        left = sum(self.weights[self.k - 1:])
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
