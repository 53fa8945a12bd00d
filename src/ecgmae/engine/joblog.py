"""Run logs and seeding of training jobs: what the engine needs from the process, kept out of the ground floor.

:func:`job_log` appends everything logged, Lightning's lines included, to a run's ``log.txt``;
:func:`seed_everything` seeds Python, numpy and torch.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch  # noqa: F401 - Lightning adds its terminal handler on import; job_log filters it
import numpy as np
import torch

from ecgmae.utils import StderrHandler, lightning_bars

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so the same command gives the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may use the legacy global RNG
    torch.manual_seed(seed)


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
