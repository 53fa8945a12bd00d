"""Which ``Host`` headers the server answers: a guard against DNS rebinding.

A web page on ``evil.example`` whose name is made to resolve to 127.0.0.1 can send requests to a
server on this machine and read the answers, since the browser takes them for its own origin; the
request still names ``evil.example`` in its ``Host`` header. :class:`HostCheck` answers only the
loopback names, the address the server is bound to and names the operator adds
(``ecgmae serve --allowed-hosts``); anything else is a one-line JSON 400. Starlette's
``TrustedHostMiddleware`` does the same but answers in plain text, and the Starlette versions the serve
extra accepts (>= 0.37) cut ``[::1]:8000`` at its first colon, refusing IPv6 loopback.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from ecgmae.data.safety import clip, safe_name

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::[0-9]{1,5})?$")


def allowed_hosts(bound: str | None = None, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The loopback names, ``bound`` (the ``--host`` given, unless a wildcard address) and ``extra``.

    Names are compared lowercased and without the port; an IPv6 address is written in brackets
    (``[::1]``); ``*.example.org`` allows every name under it and ``*`` any name.
    """
    names = list(LOOPBACK_HOSTS)
    if bound:
        names.append(_as_host(bound))
    names += [_as_host(n) for n in extra if n.strip()]
    return tuple(dict.fromkeys(n for n in names if n not in ("0.0.0.0", "[::]")))


def _as_host(name: str) -> str:
    name = name.strip().lower()
    try:
        if ipaddress.ip_address(name.strip("[]")).version == 6:
            return f"[{name.strip('[]')}]"
    except ValueError:
        pass
    return name


def host_name(header: str) -> str | None:
    """The host of a ``Host`` header, lowercased, without the port; None when it is not a host."""
    m = _HOST_RE.match(header)
    return m.group(1).lower() if m else None


class HostCheck:
    """ASGI middleware: answer HTTP requests whose ``Host`` is one of ``allowed``, refuse the others (400)."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app, self.allowed = app, tuple(allowed)
        self.any = "*" in self.allowed

    def allows(self, host: str) -> bool:
        return self.any or any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in self.allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        raw = [v for k, v in scope["headers"] if k == b"host"]
        header = raw[0].decode("latin-1") if len(raw) == 1 else None
        host = host_name(header) if header is not None else None
        if host is not None and self.allows(host):
            await self.app(scope, receive, send)
            return
        said = (
            "no Host header"
            if not raw
            else "several Host headers"
            if len(raw) > 1
            else f"Host {clip(safe_name(header or ''), 80)!r}"
        )
        body = json.dumps(
            {
                "error": f"{said}: this server answers {', '.join(self.allowed)} (ecgmae serve "
                "--allowed-hosts adds names)"
            },
            separators=(",", ":"),
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
