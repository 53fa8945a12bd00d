"""Helpers shared by the serve tests: tiny runs to serve and a server in a thread on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SERVE_MISSING = "the serve extra is not installed (pip install 'ecgmae[serve]')"


def need_serve() -> None:
    """Skip the module when Starlette, uvicorn or python-multipart is missing."""
    for module in ("starlette", "uvicorn", "python_multipart", "httpx"):
        pytest.importorskip(module, reason=SERVE_MISSING + (" (tests also need httpx)" if module == "httpx" else ""))


@contextlib.contextmanager
def running(model: Any, mae: Any = None, examples: Path | None = None, **limits: Any) -> Iterator[str]:
    """Base URL of ``model`` served on 127.0.0.1 with ``limits`` (:class:`ecgmae.serve.limits.Limits` fields)."""
    from ecgmae.serve.limits import Limits
    from ecgmae.serve.server import background

    with background(model, Limits(**limits), mae=mae, examples=examples) as url:
        yield url
