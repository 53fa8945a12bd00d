"""Request counts by route and status, latency percentiles, and model-call (batch) counts, as JSON."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

WINDOW = 2048  # latencies kept per route for the percentiles


class Metrics:
    """Thread-safe counters; :meth:`snapshot` is what ``GET /metrics`` returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._status: dict[str, Counter[str]] = defaultdict(Counter)
        self._latency: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))
        self._calls: Counter[str] = Counter()
        self._items: Counter[str] = Counter()
        self._largest: Counter[str] = Counter()
        self.in_flight = 0
        self.queues: dict[str, Callable[[], int]] = {}  # records waiting for a model call, per op
        self.intake: Any = None  # bodies being received: ``.bodies`` and ``.bytes`` (serve.inputs.Intake)
        self.connections: Callable[[], dict[str, int]] | None = None  # open, refused, timed out (serve.protocol)

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._status[route][str(status)] += 1
            self._latency[route].append(seconds)

    def model_call(self, op: str, size: int) -> None:
        """One call of the model for ``op`` (predict, embed, reconstruct) over ``size`` records."""
        with self._lock:
            self._calls[op] += 1
            self._items[op] += size
            self._largest[op] = max(self._largest[op], size)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            latency = {}
            for route, values in self._latency.items():
                ms = np.asarray(values) * 1e3
                p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if ms.size else (0.0, 0.0, 0.0)
                latency[route] = {
                    "count": int(ms.size),
                    "p50": round(float(p50), 3),
                    "p95": round(float(p95), 3),
                    "p99": round(float(p99), 3),
                    "max": round(float(ms.max()), 3) if ms.size else 0.0,
                }
            return {
                "uptime_s": round(time.monotonic() - self._started, 3),
                "in_flight": self.in_flight,
                "receiving": self.intake.bodies if self.intake is not None else 0,
                "receiving_bytes": self.intake.bytes if self.intake is not None else 0,
                "connections": self.connections() if self.connections is not None else None,
                "queued": {op: fn() for op, fn in sorted(self.queues.items())},
                "requests": {route: dict(sorted(c.items())) for route, c in sorted(self._status.items())},
                "latency_ms": dict(sorted(latency.items())),
                "model_calls": {
                    op: {"calls": self._calls[op], "records": self._items[op], "largest_batch": self._largest[op]}
                    for op in sorted(self._calls)
                },
            }
