"""Run the service with uvicorn: in the foreground (``ecgmae serve``) or in a background thread."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import uvicorn

from ecgmae.api import Model
from ecgmae.errors import ECGMAEError
from ecgmae.serve.app import create_app
from ecgmae.serve.hosts import allowed_hosts
from ecgmae.serve.limits import Limits
from ecgmae.serve.protocol import ConnectionGuard
from ecgmae.utils import log


def _config(
    model: Model, limits: Limits, examples: str | Path | None, mae: Model | None, log_level: str, hosts: Sequence[str]
) -> uvicorn.Config:
    """uvicorn's settings: its keep-alive timeout is ``idle_timeout_s``; the HTTP protocol is its httptools
    one under :class:`ConnectionGuard` (connection cap, header and body deadlines); no WebSocket."""
    app = create_app(model, limits, examples=examples, mae=mae, allowed_hosts=hosts)
    guard = ConnectionGuard(limits)
    app.state.service.metrics.connections = guard.snapshot
    # uvicorn annotates an int but passes it to loop.call_later, which takes fractions of a second too
    keep_alive = cast(int, limits.idle_timeout_s)
    return uvicorn.Config(
        app,
        http=guard.protocol,
        ws="none",
        timeout_keep_alive=keep_alive,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
    )


def serve(
    model: Model,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    *,
    examples: str | Path | None = None,
    mae: Model | None = None,
    log_level: str = "info",
    allowed: Sequence[str] = (),
) -> None:
    """Serve ``model`` on ``host:port`` until interrupted (Ctrl-C); arguments as :func:`create_app`'s.

    The ``Host`` names answered are the loopback ones, ``host`` and ``allowed``
    (:func:`ecgmae.serve.hosts.allowed_hosts`).
    """
    config = _config(model, limits or Limits(), examples, mae, log_level, allowed_hosts(host, allowed))
    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise ECGMAEError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    with sock:
        _warn_if_reachable(sock)
        uvicorn.Server(config).run(sockets=[sock])


def reachable_warning(address: str, port: int) -> str | None:
    """The warning for a listening address that other machines can reach (None for loopback)."""
    if ipaddress.ip_address(address.split("%")[0]).is_loopback:
        return None
    where = f"[{address}]" if ":" in address else address
    return (
        f"warning: listening on {where}:{port}, which other machines can reach, with no authentication: anyone "
        "who can connect can use the model; put it behind your own proxy (TLS, authentication) or listen on "
        "127.0.0.1"
    )


def _warn_if_reachable(sock: socket.socket) -> None:
    address, port = sock.getsockname()[:2]
    if (line := reachable_warning(address, port)) is not None:
        log.warning("%s", line)


@contextlib.contextmanager
def background(
    model: Model,
    limits: Limits | None = None,
    *,
    examples: str | Path | None = None,
    mae: Model | None = None,
    host: str = "127.0.0.1",
    log_level: str = "warning",
    allowed: Sequence[str] = (),
) -> Iterator[str]:
    """Serve ``model`` from a thread on a free port of ``host``; yields the base URL, stops on exit.

    For notebooks and tests: ``with background(ecgmae.load("runs/ft")) as url: ...``.
    """
    server = uvicorn.Server(_config(model, limits or Limits(), examples, mae, log_level, allowed_hosts(host, allowed)))
    sock = socket.create_server((host, 0))
    _warn_if_reachable(sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ecgmae-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise ECGMAEError("the server stopped while starting (see the log above)")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
