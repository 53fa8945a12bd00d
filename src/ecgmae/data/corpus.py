"""Every record of a corpus or a prepared store as a :class:`~ecgmae.data.prepared.Prepared`, in source order.

What ``embed``/``predict`` (and :meth:`ecgmae.api.Model.run_source`) stream through the model: raw
corpora are read by their source (:mod:`ecgmae.data.sources`, several processes if asked), stores are
mapped onto the model's leads.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ecgmae.data.prepared import Prepared, from_store, prepare_record
from ecgmae.data.signal import FS_TOL, PreprocessConfig
from ecgmae.data.store import Store
from ecgmae.errors import DataError, clip
from ecgmae.utils import log, progress


def iter_source(source: str, src: str | Path, cfg: PreprocessConfig, *, labels: str | Path | None = None,
                task: str | None = None, options: dict[str, Any] | None = None, split: str | None = None,
                workers: int = 1, quiet: bool = False) -> Iterator[Prepared | tuple[str, str]]:
    """Every record of a corpus (or a store, ``source="store"``) as a :class:`Prepared`, in source order.

    Records that cannot be used come as ``(record, message)`` instead, so the caller decides between
    skipping and failing.

    Args:
        source: ``store`` or one of :data:`ecgmae.data.sources.SOURCES`.
        src: corpus folder or file, or a store folder.
        cfg: the model's preprocessing (its ``fs`` and ``leads`` are the model's).
        labels, task, options: as for ``ecgmae prepare``.
        split: with a store, only this split (train, val, test).
        workers: reader processes (sources only).
        quiet: no progress bar.
    """
    if source == "store":
        yield from _iter_store(src, cfg, split, quiet)
        return
    if split:
        raise DataError(f"--split {split!r} needs --source store (raw corpora have no splits yet)")
    from ecgmae.data.sources import get_source, read_items

    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: not found")
    opts = {**(options or {}), "target_fs": cfg.fs}
    scan = get_source(source).scan(src, labels=Path(labels) if labels else None, task=task, options=opts)
    for record, _, _, message in scan.problems:
        yield record, clip(message, 800)
    for done in read_items(source, scan, functools.partial(prepare_record, cfg), workers=workers, quiet=quiet):
        yield done.value if done.error is None else (done.item.record, done.error[1])


def _iter_store(src: str | Path, cfg: PreprocessConfig, split: str | None, quiet: bool) -> Iterator[Prepared]:
    store = Store.open(src)
    if abs(store.fs - cfg.fs) > FS_TOL * cfg.fs:
        raise DataError(f"{store.path}: store is at {store.fs:g} Hz but the model expects {cfg.fs:g} Hz; "
                        f"prepare it with --fs {cfg.fs:g} (or pass the raw corpus with --source)")
    theirs = store.preprocess_config
    differ = [k for k in ("bandpass", "baseline", "normalise") if getattr(theirs, k) != getattr(cfg, k)]
    if differ:
        log.warning("%s: preprocessing differs from the model's (%s); results may be off", store.path,
                    ", ".join(f"{k} {getattr(theirs, k)!r} vs {getattr(cfg, k)!r}" for k in differ))
    indices = store.split_indices(split) if split else np.arange(len(store))
    for i in progress(indices, quiet=quiet, unit="rec", desc="store"):
        yield from_store(store, int(i), cfg.leads)
