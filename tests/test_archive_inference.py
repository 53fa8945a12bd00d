"""Inference over an archive (issue 23): bounded reading ahead, streamed outputs, several workers, engines.

Correctness only: speed is measured by ``benchmarks/archive_inference.py``, never asserted here.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from ecgmae.data.sources import Item, Scan, reading


class _ThreadPool(ThreadPoolExecutor):
    """Stands in for the reader processes: threads share memory, so the test can count the records read."""

    def __init__(self, workers: int, mp_context: Any = None) -> None:
        super().__init__(workers)


def test_readers_stay_a_bounded_distance_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow consumer must not let the readers load the whole corpus into memory ahead of it."""
    seen: list[int] = []
    lock = threading.Lock()

    def transform(rec: Any) -> int:
        with lock:
            seen.append(1)
        return len(seen)

    monkeypatch.setattr(reading, "ProcessPoolExecutor", _ThreadPool)
    monkeypatch.setattr(reading, "load_item", lambda *a, **k: SimpleNamespace(meta={}))
    n, workers = 2000, 2
    scan = Scan([Item(f"r{i}", f"r{i}.hea") for i in range(n)])
    stream = reading.read_items("folder", scan, transform, workers=workers, quiet=True)
    first = next(stream)
    assert first.error is None
    time.sleep(0.5)  # the pool finishes whatever it was given
    chunk = max(1, min(64, n // (workers * 8)))
    assert len(seen) <= (reading.READ_AHEAD * workers + 1) * chunk < n
    rest = list(stream)
    assert len(rest) == n - 1 and len(seen) == n


def test_bounded_map_keeps_order_and_every_item() -> None:
    with ThreadPoolExecutor(3) as pool:
        out = list(reading.bounded_map(pool, lambda v: v * v, list(range(101)), chunk=7, ahead=2))
    assert out == [v * v for v in range(101)]
