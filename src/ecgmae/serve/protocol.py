"""Connection guards under the HTTP parser, so that slow, silent or too many clients cannot hold the server.

uvicorn's own settings cover the idle time between requests (``timeout_keep_alive``) but not a client
that never finishes its headers, a body that trickles in after the answer, nor the number of open
sockets (its ``limit_concurrency`` answers 503 only once a request's headers have arrived, and keeps
the socket). :class:`ConnectionGuard` adds those at the connection, as a subclass of uvicorn's
httptools protocol that ``server.py`` hands to uvicorn:

- at most ``max_connections`` open connections: one beyond gets a 503 and is closed at once;
- a request's headers must arrive within ``header_timeout_s`` of the connection opening (or of the
  first byte of a later request on it): 408 and closed beyond, silent sockets included;
- its body within ``body_timeout_s`` (plus a second, so that the endpoint reading it answers its own
  408 first) of the headers, also when no endpoint reads it: closed beyond;
- its request line and headers at most ``max_header_bytes``: 431 and closed as soon as more has
  arrived, so a huge header is never read to its end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ecgmae.serve.limits import Limits

BODY_GRACE_S = 1.0  # the endpoint's own body deadline (a 408 answer) comes first


class ConnectionGuard:
    """The connection limits of one server and its counts; :attr:`protocol` is the class uvicorn runs.

    Attributes:
        open: connections open now.
        refused: connections closed at once because ``max_connections`` were open.
        timed_out: connections closed because headers or body did not arrive in time.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open = self.refused = self.timed_out = 0
        self.protocol: type[asyncio.Protocol] = type("GuardedHttpToolsProtocol", (_Guarded,), {"guard": self})

    def snapshot(self) -> dict[str, int]:
        return {"open": self.open, "refused": self.refused, "timed_out": self.timed_out}


def answer(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response with the service's one-line JSON error, closing the connection."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Guarded(HttpToolsProtocol):
    guard: ConnectionGuard  # set by ConnectionGuard on the subclass it makes

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True  # between requests or inside a request's headers
        self._head_bytes = 0  # bytes received while in the headers (counted by whole reads)
        self._counted = False
        self._too_large = False

    # ---------------------------------------------------------------------------------- connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        g = self.guard
        if g.open >= g.limits.max_connections:
            g.refused += 1
            self.transport = transport
            transport.write(
                answer(
                    503,
                    f"server busy: {g.open} connections open (--max-connections "
                    f"{g.limits.max_connections}); retry shortly",
                    {"retry-after": "1"},
                )
            )
            transport.close()
            return
        g.open += 1
        self._counted = True
        super().connection_made(transport)
        self._arm(g.limits.header_timeout_s, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if not self._counted:  # refused: uvicorn never knew it
            return
        self._counted = False
        self.guard.open -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        if self._timer is None and self._in_head and (self.cycle is None or self.cycle.response_complete):
            self._arm(self.guard.limits.header_timeout_s, self._head_late)  # a later request begins
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.guard.limits.max_header_bytes:  # still no end of headers
            self._refuse_head()  # a no-op when the parser already refused them

    def send_400_response(self, msg: str) -> None:  # uvicorn's answer to a parser error
        if self._too_large:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        if not self.transport.is_closing():
            self._cancel()
            self.transport.write(answer(431, f"request headers exceed {self.guard.limits.max_header_bytes} bytes"))
            self.transport.close()

    # ------------------------------------------------------------------------------ parser callbacks
    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.guard.limits.max_header_bytes:  # exact, when the whole head came in one read
            self._too_large = True
            raise ValueError("headers too large")  # stops the parser; uvicorn calls send_400_response
        super().on_headers_complete()
        self._in_head = False
        self._cancel()
        if not self.pipeline:  # a queued pipelined request is not read until its turn (on_response_complete)
            self._arm_body()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._cancel()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._timer is None and not self._in_head and not self.transport.is_closing():
            self._arm_body()  # the answer went out with the body still arriving, or a queued request started

    # ------------------------------------------------------------------------------------- deadlines
    def _arm(self, seconds: float, fn: Callable[[], None]) -> None:
        self._cancel()
        self._timer = self.loop.call_later(seconds, fn)

    def _arm_body(self) -> None:
        self._arm(self.guard.limits.body_timeout_s + BODY_GRACE_S, self._body_late)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_late(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        self.guard.timed_out += 1
        if self.cycle is None or self.cycle.response_complete:  # nothing else is being written
            self.transport.write(
                answer(
                    408,
                    f"request headers not received within {self.guard.limits.header_timeout_s:g} s (--header-timeout)",
                )
            )
        self.transport.close()

    def _body_late(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.guard.timed_out += 1
            self.transport.close()
