"""``ecgmae serve`` against slow and hostile clients on raw loopback sockets: slow bodies, slow or silent
headers, too many connections, oversized headers. Waits are for states (``until``) or end of stream under
generous socket timeouts; nothing asserts a duration."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from serve_util import client, ecg, get_metrics, need_serve, running, until

need_serve()

WAIT = 30.0  # socket timeout: far above every limit the tests set


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=WAIT)


def _host(url: str) -> str:
    return urlsplit(url).netloc


def _slow_body(url: str, path: str = "/v1/predict", length: int = 100_000, method: str = "POST") -> socket.socket:
    """A request whose headers promise ``length`` bytes of body, of which one arrives."""
    s = _connect(url)
    s.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: {_host(url)}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n{{".encode()
    )
    return s


def _until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def _response(s: socket.socket) -> bytes:
    """One whole response (headers and its Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before a whole response: {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, f"closed before a whole response: {data[:200]!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def _still_open(s: socket.socket) -> bool:
    """True when the server has neither answered nor closed ``s``."""
    s.setblocking(False)
    try:
        s.recv(1)  # data or end of stream: answered or closed
        return False
    except BlockingIOError:
        return True
    finally:
        s.settimeout(WAIT)


# ----------------------------------------------------------------------------------------- slow bodies
def test_slow_bodies_do_not_hold_the_request_slots(clf):
    """Eight sockets trickling bodies, two request slots: a normal client is still served."""
    with running(clf, max_concurrency=2, body_timeout_s=120) as url, client(url) as c:
        slow = [_slow_body(url) for _ in range(8)]
        try:
            until(c, lambda m: m["receiving"] == 8, "eight bodies being received")
            ok = c.post("/v1/predict", json={"signal": ecg(1).tolist(), "fs": 100})
            assert ok.status_code == 200, ok.text
            assert all(_still_open(s) for s in slow)  # served while they are connected
        finally:
            for s in slow:
                s.close()
        until(c, lambda m: m["receiving"] == 0, "the closed sockets to be let go")


def test_a_slow_body_is_cut_off_with_408(clf):
    with running(clf, body_timeout_s=1) as url, client(url) as c:
        with _slow_body(url) as s:
            reply = _until_closed(s)  # the server answers, then closes the connection
        assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
        assert b'{"error":"request body not received within 1 s (--body-timeout)"}' in reply
        m = get_metrics(c)
        assert m["receiving"] == 0 and m["requests"]["POST /v1/predict"] == {"408": 1}
        assert c.post("/v1/predict", json={"signal": ecg(1).tolist(), "fs": 100}).status_code == 200


def test_upload_buffer_bounds_bodies_in_memory(clf):
    """Bodies being received share one byte budget: the one that would pass it is refused with 503."""
    with running(clf, max_upload_bytes=1000, upload_buffer_bytes=1500, body_timeout_s=120) as url, client(url) as c:
        with _slow_body(url, length=1000) as first:
            first.sendall(b" " * 900)  # 901 bytes of the first body held by the server
            until(c, lambda m: m["receiving_bytes"] == 901, "the first body's bytes to arrive")
            with _slow_body(url, length=1000) as second:
                second.sendall(b" " * 900)
                reply = _until_closed(second)
            assert reply.startswith(b"HTTP/1.1 503 "), reply[:200]
            assert b"bytes of uploads being received" in reply
            assert _still_open(first)
        until(c, lambda m: m["receiving_bytes"] == 0, "the budget to be given back")


# ------------------------------------------------------------------------------- headers and connections
def _head(url: str, path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {_host(url)}\r\n".encode()


def test_slow_and_silent_headers_are_closed(clf):
    with running(clf, header_timeout_s=1, idle_timeout_s=60) as url:
        silent = [_connect(url) for _ in range(10)]
        slow = [_connect(url) for _ in range(10)]
        for s in slow:
            s.sendall(_head(url) + b"X-Slow: ")
        kept = _connect(url)  # a kept-alive connection that starts a second request and stalls
        kept.sendall(_head(url) + b"\r\n")
        assert _response(kept).startswith(b"HTTP/1.1 200 ")
        kept.sendall(_head(url))
        for s in [*silent, *slow, kept]:
            with s:
                reply = _until_closed(s)
            assert reply == b"" or reply.startswith(b"HTTP/1.1 408 "), reply[:200]
            if reply:
                assert b'{"error":"request headers not received within 1 s (--header-timeout)"}' in reply
        with client(url) as c:
            assert c.get("/healthz").status_code == 200
            assert get_metrics(c)["connections"]["timed_out"] == 21


def test_a_body_nobody_reads_is_cut_off(clf):
    """A route that answers without reading the body: the rest may not trickle in for ever."""
    with running(clf, body_timeout_s=1, idle_timeout_s=60) as url:
        with _slow_body(url, path="/healthz", method="GET") as s:
            reply = _until_closed(s)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]


def test_connection_cap_and_many_silent_sockets(clf):
    """Beyond max_connections a connection gets a 503 and is closed at once; silent ones go at the deadline."""
    with running(clf, max_connections=16, header_timeout_s=5) as url:
        sockets = [_connect(url) for _ in range(200)]
        replies = []
        for s in sockets:
            with s:
                replies.append(_until_closed(s))
        busy = [r for r in replies if r.startswith(b"HTTP/1.1 503 ")]
        assert len(busy) == 184 and all(r == b"" or r.startswith(b"HTTP/1.1 408 ") for r in replies[:16])
        assert b'"server busy: 16 connections open (--max-connections 16); retry shortly"' in busy[0]
        with client(url) as c:
            assert c.get("/healthz").status_code == 200
            assert get_metrics(c)["connections"] == {"open": 1, "refused": 184, "timed_out": 16}


def test_connection_cap_serves_again_when_one_leaves(clf):
    with running(clf, max_connections=2, header_timeout_s=60, idle_timeout_s=60) as url:
        held = [_connect(url) for _ in range(2)]
        for s in held:  # both served and kept alive: the server has counted them
            s.sendall(_head(url) + b"\r\n")
            assert _response(s).startswith(b"HTTP/1.1 200 ")
        with _connect(url) as extra:
            extra.sendall(_head(url) + b"\r\n")
            assert _until_closed(extra).startswith(b"HTTP/1.1 503 ")
        held.pop().close()
        for _ in range(3000):  # a state wait: until the server has let the closed one go
            with _connect(url) as again:
                again.sendall(_head(url) + b"Connection: close\r\n\r\n")
                if _until_closed(again).startswith(b"HTTP/1.1 200 "):
                    break
        else:
            raise AssertionError("the server never served again after a connection closed")
        held[0].close()


# ------------------------------------------------------------------------------------------- header size
def _send(s: socket.socket, head: bytes, pad: int) -> int:
    """Send ``head`` then ``pad`` bytes of one header value in 64 KiB pieces; how many went out before the
    server closed the connection."""
    sent = 0
    try:
        s.sendall(head)
        while sent < pad:
            s.sendall(b"a" * min(65536, pad - sent))
            sent += min(65536, pad - sent)
        s.sendall(b"\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_oversized_headers_get_431_and_are_not_read(clf):
    with running(clf, max_header_bytes=32768) as url:
        with _connect(url) as s:  # a whole head over the limit
            _send(s, _head(url) + b"X-Pad: ", 40_000)
            reply = _until_closed(s)
        assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
        assert b"request headers exceed 32768 bytes" in reply
        with _connect(url) as s:  # 96 MiB of one header: the server stops reading soon after the limit
            sent = _send(s, _head(url) + b"X-Pad: ", 96 << 20)
            reply = _until_closed(s)
        assert sent < 24 << 20, sent  # what socket buffers hold, not what the header asked for
        assert reply == b"" or reply.startswith(b"HTTP/1.1 431 "), reply[:200]
        with client(url) as c:
            assert c.get("/healthz", headers={"X-Pad": "a" * 30_000}).status_code == 200  # under the limit
