"""Read the items of a :class:`~ecgmae.data.sources.Scan`, in this process or several, in item order.

Each record is loaded by its source, checked against what the corpus promises (its leads, its
classes) and passed through the caller's transform in the worker; errors come back as values so the
caller decides between skipping and failing.
"""

from __future__ import annotations

import functools
import gc
import itertools
import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgmae.data.record import RecordError
from ecgmae.data.sources import Item, Scan, get_source
from ecgmae.errors import DataError, clip
from ecgmae.utils import log

# Chunks of items each reader process may have queued or finished but not yet consumed: enough to keep them
# busy while the consumer (the model) works on a chunk, few enough that memory does not grow with the corpus.
READ_AHEAD = 8


def load_item(
    source: str,
    item: Item,
    options: dict[str, Any],
    *,
    root: str | None = None,
    expected_leads: tuple[str, ...] | None = None,
    classes: tuple[str, ...] | None = None,
) -> Any:
    """Read ``item`` with ``source`` and check what the corpus promises.

    The record's labels become the item's (from an index table) when it has them. A corpus with a
    fixed montage (``expected_leads``) must deliver all of it; with ``classes`` every label must be
    one of them.

    Raises:
        RecordError: naming the file, e.g. ``E07500.hea: 11 leads, expected 12 (missing V6)``.
    """
    rec = get_source(source).load(item, options, root)
    if item.labels is not None:
        rec.labels = item.labels
    if item.patient is not None:
        rec.patient = item.patient
    rec.meta.update(item.meta)  # the corpus index (age, sex...) wins over what the file says
    where = Path(item.path).name
    if expected_leads:
        missing = [lead for lead in expected_leads if lead not in rec.leads]
        if missing:
            nan = set(rec.meta.get("nan_leads", ()))
            note = ", ".join(f"{m} (all NaN)" if m in nan else m for m in missing)
            raise RecordError(
                where, f"{len(rec.leads)} leads, expected {len(expected_leads)} (missing {note})", "leads"
            )
    if classes is not None:
        unknown = [n for n in rec.labels if n not in classes]
        if unknown:
            raise RecordError(
                where, f"unknown label name(s) {', '.join(map(repr, unknown))}; known: {', '.join(classes)}", "labels"
            )
    return rec


@dataclass
class Loaded:
    """Outcome of one item: ``value`` (what the transform returned) or ``error`` ``(kind, message)``."""

    item: Item
    value: Any = None
    error: tuple[str, str] | None = None


def _load_one(
    source: str,
    scan_options: dict[str, Any],
    root: str | None,
    expected: tuple[str, ...] | None,
    classes: tuple[str, ...] | None,
    transform: Callable[[Any], Any],
    item: Item,
) -> Loaded:
    where = Path(item.path).name
    try:
        rec = load_item(source, item, scan_options, root=root, expected_leads=expected, classes=classes)
        rec.meta["file"] = where
        return Loaded(item, transform(rec))
    except RecordError as exc:
        return Loaded(item, error=(exc.kind, clip(exc, 800)))
    except DataError as exc:
        return Loaded(item, error=("invalid", clip(f"{where}: {exc}", 800)))
    except Exception as exc:  # one odd file must not end a long run; the message says what happened
        log.debug("unexpected error on %s", item.path, exc_info=True)
        return Loaded(item, error=("unexpected", clip(f"{where}: unexpected {type(exc).__name__}: {exc}", 800)))


def read_items(
    source: str,
    scan: Scan,
    transform: Callable[[Any], Any],
    *,
    workers: int = 1,
    quiet: bool = False,
    processes: bool = False,
) -> Iterator[Loaded]:
    """Load every item of ``scan`` and apply ``transform`` to each record, in ``workers`` processes.

    Results come in item order whatever ``workers`` is, so outputs do not depend on it. Errors are
    returned (not raised) so the caller decides between skipping and failing. ``transform`` runs in
    the worker and must be picklable (a module-level function or a ``functools.partial`` of one).
    One worker reads in this process unless ``processes`` (then one reader process works while the
    caller consumes; ``workers=0`` reads in this process).
    """
    from tqdm.auto import tqdm

    classes = tuple(scan.options.get("classes") or ()) or None
    fn = functools.partial(_load_one, source, scan.options, scan.root, scan.expected_leads, classes, transform)
    bar = tqdm(total=len(scan.items), disable=quiet, unit="rec", desc="prepare", dynamic_ncols=True)
    try:
        if workers < (1 if processes else 2):
            for item in scan.items:
                yield fn(item)
                bar.update()
            return
        # fork on Linux (as torch's DataLoader): no __main__ guard needed and no re-imports per worker
        method = "fork" if sys.platform.startswith("linux") else None
        chunk = max(1, min(64, len(scan.items) // (workers * 8)))  # 8 chunks each, at most 64 records
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        # The forked readers share this process's memory (the scan's items: ~0.7 KB per record) until they write
        # to it, and the cyclic garbage collector writes to every object it visits: frozen, those are left alone.
        gc.freeze()
        try:
            for done in bounded_map(pool, fn, scan.items, chunk=chunk, ahead=READ_AHEAD * workers):
                gc.unfreeze()  # the readers have started (the first results are in)
                yield done
                bar.update()
        finally:
            gc.unfreeze()
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def _run_chunk(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(item) for item in items]


def bounded_map(
    pool: Executor, fn: Callable[[Any], Any], items: Sequence[Any], *, chunk: int, ahead: int
) -> Iterator[Any]:
    """``fn`` over ``items`` in ``pool``, results in item order, with at most ``ahead`` chunks of ``chunk`` items
    submitted and not yet consumed (``Executor.map`` submits every item at once, so results pile up in memory
    whenever the consumer is slower than the pool)."""
    starts = iter(range(0, len(items), chunk))
    pending: deque[Future[list[Any]]] = deque(
        pool.submit(_run_chunk, fn, items[i : i + chunk]) for i in itertools.islice(starts, max(1, ahead))
    )
    while pending:
        results = pending.popleft().result()
        nxt = next(starts, None)
        if nxt is not None:  # before yielding, so the pool works while the consumer does
            pending.append(pool.submit(_run_chunk, fn, items[nxt : nxt + chunk]))
        yield from results
