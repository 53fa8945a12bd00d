"""Every record of a corpus or a prepared store, in source order, and the loop that consumes them.

:func:`iter_records` is the one streaming path: raw corpora are read by their source
(:mod:`ecgmae.data.sources`, several processes if asked), stores row by row; each record goes through a
caller's transform. :func:`iter_source` is it with the model's preprocessing (what ``embed``/``predict``
and :meth:`ecgmae.api.Model.run_source` score); ``embed --features`` uses it with hand-made features.
:func:`scored_chunks` runs a function over chunks of the usable records as they come and decides skip or fail
for the others; :func:`gather` collects its chunks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ecgmae.data.prepared import Prepared, from_store, prepare_record
from ecgmae.data.signal import FS_TOL, PreprocessConfig
from ecgmae.data.store_reader import Store
from ecgmae.errors import DataError, clip
from ecgmae.utils import log, progress

T = TypeVar("T")
CHUNK = 256  # usable records handed to the consumer at once


def iter_records(
    source: str,
    src: str | Path,
    *,
    read: Callable[[Any], T],
    row: Callable[[Store, int], T],
    labels: str | Path | None = None,
    task: str | None = None,
    options: dict[str, Any] | None = None,
    split: str | None = None,
    workers: int = 0,
    quiet: bool = False,
    desc: str = "store",
    check_store: Callable[[Store], None] | None = None,
) -> Iterator[T | tuple[str, str]]:
    """Every record of a corpus (or a store, ``source="store"``) through ``read`` (or ``row``), in source order.

    Records that cannot be used come as ``(record, message)`` instead, so the caller decides between
    skipping and failing.

    Args:
        source: ``store`` or one of :data:`ecgmae.data.sources.SOURCES`.
        src: corpus folder or file, or a store folder.
        read: a raw :class:`~ecgmae.data.record.Record` -> item (picklable: it runs in reader processes).
        row: ``(store, index)`` -> item, for a store.
        labels, task, options: as for ``ecgmae prepare``.
        split: with a store, only this split (train, val, test).
        workers: reader processes, reading ahead while the caller consumes (sources only; 0: read in this
            process).
        quiet: no progress bar.
        desc: the store progress bar's label.
        check_store: called with the opened store before its first record.
    """
    if source == "store":
        store = Store.open(src)
        if check_store is not None:
            check_store(store)
        indices = store.split_indices(split) if split else np.arange(len(store))
        for i in progress(indices, quiet=quiet, unit="rec", desc=desc):
            yield row(store, int(i))
        return
    if split:
        raise DataError(f"--split {split!r} needs --source store (raw corpora have no splits yet)")
    from ecgmae.data.sources import get_source
    from ecgmae.data.sources.reading import read_items

    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: not found")
    scan = get_source(source).scan(src, labels=Path(labels) if labels else None, task=task, options=options or {})
    scan.inputs = []  # every file of the corpus (prepare fingerprints them): not needed here, ~0.5 KB per record
    for record, _, _, message in scan.problems:
        yield record, clip(message, 800)
    for done in read_items(source, scan, read, workers=workers, quiet=quiet, processes=True):
        yield done.value if done.error is None else (done.item.record, done.error[1])


def iter_source(
    source: str,
    src: str | Path,
    cfg: PreprocessConfig,
    *,
    labels: str | Path | None = None,
    task: str | None = None,
    options: dict[str, Any] | None = None,
    split: str | None = None,
    workers: int = 0,
    quiet: bool = False,
) -> Iterator[Prepared | tuple[str, str]]:
    """:func:`iter_records` with the model's preprocessing ``cfg``: each record as a :class:`Prepared`.

    A store must be at the model's rate (a warning when its filters or normalisation differ); raw
    records are resampled, filtered and mapped onto ``cfg.leads``.
    """
    return iter_records(
        source,
        src,
        read=functools.partial(prepare_record, cfg),
        row=functools.partial(_store_row, cfg),
        labels=labels,
        task=task,
        options={**(options or {}), "target_fs": cfg.fs},
        split=split,
        workers=workers,
        quiet=quiet,
        check_store=functools.partial(_check_store, cfg),
    )


def _store_row(cfg: PreprocessConfig, store: Store, i: int) -> Prepared:
    return from_store(store, i, cfg.leads)


def _check_store(cfg: PreprocessConfig, store: Store) -> None:
    if abs(store.fs - cfg.fs) > FS_TOL * cfg.fs:
        raise DataError(
            f"{store.path}: store is at {store.fs:g} Hz but the model expects {cfg.fs:g} Hz; "
            f"prepare it with --fs {cfg.fs:g} (or pass the raw corpus with --source)"
        )
    theirs = store.preprocess_config
    differ = [k for k in ("bandpass", "baseline", "normalise") if getattr(theirs, k) != getattr(cfg, k)]
    if differ:
        log.warning(
            "%s: preprocessing differs from the model's (%s); results may be off",
            store.path,
            ", ".join(f"{k} {getattr(theirs, k)!r} vs {getattr(cfg, k)!r}" for k in differ),
        )


class Skipped(NamedTuple):
    """A record left out: its place in the source order (counting every record), id and the reason."""

    position: int
    record: str
    reason: str


class Gathered(NamedTuple):
    """What :func:`gather` returns: ids of the used records, their stacked outputs, the skipped ones."""

    ids: list[str]
    values: np.ndarray
    skipped: list[Skipped]


class Chunk(NamedTuple):
    """One step of :func:`scored_chunks`: usable records (ids, places in the source order, their outputs) and the
    records skipped since the previous chunk; every place in a chunk comes before every place in the next."""

    ids: list[str]
    positions: list[int]
    values: np.ndarray | None  # (len(ids), F); None when the chunk holds skipped records only
    skipped: list[Skipped]


def scored_chunks(
    stream: Iterator[Any],
    fn: Callable[[list[Any]], np.ndarray],
    *,
    on_error: str = "skip",
    where: str | Path = "input",
    chunk: int | None = None,
) -> Iterator[Chunk]:
    """Run ``fn`` over chunks of the usable items of ``stream`` (each with a ``name``), in order, as they come.

    What an archive-sized run writes as it goes: nothing but the current chunk is held.

    Args:
        stream: items and ``(record, message)`` pairs for unusable records (as :func:`iter_records` yields).
        fn: a list of items -> ``(len, F)`` array.
        on_error: ``skip`` (warn for the first ten, keep the reasons) or ``fail`` (raise the first).
        where: named when no record is usable.
        chunk: items per call of ``fn`` (default :data:`CHUNK`).

    Raises:
        DataError: an unusable record with ``on_error="fail"``, or no usable record at all (after the
            chunks of skipped records).
    """
    if on_error not in ("skip", "fail"):
        raise DataError(f"on_error must be skip or fail, got {on_error!r}")
    chunk = chunk or CHUNK
    used, n_skipped = 0, 0
    skipped: list[Skipped] = []
    buf: list[Any] = []
    places: list[int] = []
    for position, item in enumerate(stream):
        if isinstance(item, tuple):
            record, message = item
            if on_error == "fail":
                raise DataError(message)
            skipped.append(Skipped(position, record, message))
            n_skipped += 1
            if n_skipped <= 10:
                log.warning("skipped %s", message)
            continue
        buf.append(item)
        places.append(position)
        if len(buf) >= chunk:
            yield Chunk([p.name for p in buf], places, fn(buf), skipped)
            used += len(buf)
            buf, places, skipped = [], [], []
    if buf or skipped:
        yield Chunk([p.name for p in buf], places, fn(buf) if buf else None, skipped)
        used += len(buf)
    if n_skipped > 10:
        log.warning("... and %d more skipped records (every reason is in the output)", n_skipped - 10)
    if not used:
        raise DataError(f"{where}: no usable record ({n_skipped} skipped)")


def gather(
    stream: Iterator[Any],
    fn: Callable[[list[Any]], np.ndarray],
    *,
    on_error: str = "skip",
    where: str | Path = "input",
    chunk: int | None = None,
) -> Gathered:
    """:func:`scored_chunks`, every chunk collected: ids of the used records, their stacked outputs, the
    skipped ones (held in memory: for a corpus of any size, write the chunks as they come instead)."""
    return collect(scored_chunks(stream, fn, on_error=on_error, where=where, chunk=chunk))


def collect(chunks: Iterable[Chunk]) -> Gathered:
    """Every chunk of :func:`scored_chunks` in one :class:`Gathered`."""
    ids: list[str] = []
    outs: list[np.ndarray] = []
    skipped: list[Skipped] = []
    for c in chunks:
        ids += c.ids
        skipped += c.skipped
        if c.values is not None:
            outs.append(c.values)
    return Gathered(ids, np.concatenate(outs), skipped)
