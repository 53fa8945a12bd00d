"""Helpers shared by the serve tests: tiny runs to serve, a server in a thread on a free loopback port, requests."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SERVE_MISSING = "the serve extra is not installed (pip install 'ecgmae[serve]')"
_RUNS: dict[str, dict[str, Path]] = {}


def need_serve() -> None:
    """Skip the module when Starlette, uvicorn, httptools, python-multipart or httpx is missing."""
    for module in ("starlette", "uvicorn", "httptools", "python_multipart", "httpx"):
        pytest.importorskip(module, reason=SERVE_MISSING + (" (tests also need httpx)" if module == "httpx" else ""))


def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``test_api.build_runs`` once per session for every serve test module (MAE run, classifier, records)."""
    if "runs" not in _RUNS:
        from test_api import build_runs

        _RUNS["runs"] = build_runs(tmp_path_factory.mktemp("serve"))
    return _RUNS["runs"]


@contextlib.contextmanager
def running(
    model: Any, mae: Any = None, examples: Path | None = None, hosts: tuple[str, ...] = (), **limits: Any
) -> Iterator[str]:
    """Base URL of ``model`` served on 127.0.0.1 with ``limits`` (:class:`ecgmae.serve.limits.Limits` fields),
    answering the ``Host`` names ``hosts`` besides the loopback ones."""
    from ecgmae.serve.limits import Limits
    from ecgmae.serve.server import background

    with background(model, Limits(**limits), mae=mae, examples=examples, allowed=hosts) as url:
        yield url


def client(url: str) -> Any:
    import httpx

    return httpx.Client(base_url=url, timeout=60)


def wfdb(src: Path, name: str) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (f"{name}{ext}", (src / f"{name}{ext}").read_bytes())) for ext in (".hea", ".dat")]


def records(runs, n: int) -> list[str]:
    return sorted(p.stem for p in runs["src"].glob("*.hea"))[:n]


def ecg(seed: int, leads: int = 12, n: int = 700) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 0.05, (leads, n)), axis=1).astype(np.float32)


def npy(x: np.ndarray, name: str = "rec.npy") -> tuple[str, tuple[str, bytes]]:
    buf = io.BytesIO()
    np.save(buf, x)
    return ("files", (name, buf.getvalue()))


def refused(r: Any, status: int, fragment: str) -> str:
    """The one-line error of a refused request."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    text = r.json()["error"]
    assert fragment in text, text
    assert "\n" not in text and "Traceback" not in text and "ecgmae-serve-" not in text  # no temp paths leak
    return text


def get_metrics(c: Any) -> dict[str, Any]:
    return c.get("/metrics").json()


def until(c: Any, check, what: str) -> dict[str, Any]:
    """Poll /metrics until ``check(metrics)`` holds (a state wait, not a timing assertion)."""
    for _ in range(3000):
        m = get_metrics(c)
        if check(m):
            return m
        time.sleep(0.01)
    raise AssertionError(f"server never reached: {what}; last metrics {m}")


class Gate:
    """Wraps a model method so that calls block until :meth:`open` (deterministic batching and limits)."""

    def __init__(self, model: Any, name: str) -> None:
        self.event, self.calls = threading.Event(), []
        inner = getattr(model, name)

        def gated(items, *args, **kw):
            self.calls.append(len(items))
            assert self.event.wait(60), "gate never opened"
            return inner(items, *args, **kw)

        setattr(model, name, gated)

    def open(self) -> None:
        self.event.set()


# Module-scoped fixtures shared by the serve test modules (import them by name into a test module).
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def clf(runs: dict[str, Path]) -> Any:
    import ecgmae

    return ecgmae.load(runs["ft"])


@pytest.fixture(scope="module")
def enc(runs: dict[str, Path]) -> Any:
    import ecgmae

    return ecgmae.load(runs["mae"])


@pytest.fixture(scope="module")
def clf_url(clf: Any, runs: dict[str, Path]) -> Iterator[str]:
    with running(clf, examples=runs["src"]) as url:
        yield url


@pytest.fixture(scope="module")
def enc_url(enc: Any) -> Iterator[str]:
    with running(enc) as url:
        yield url
