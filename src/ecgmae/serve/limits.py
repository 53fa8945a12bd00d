"""What one request may cost the server: upload size, record length, time, concurrency, batching."""

from __future__ import annotations

from dataclasses import dataclass

from ecgmae.errors import ECGMAEError


@dataclass(frozen=True)
class Limits:
    """Server limits; the defaults suit 12-lead records of minutes on a small machine.

    Attributes:
        max_upload_bytes: largest request body (413 beyond; refused from Content-Length before reading).
        max_seconds: longest record, in seconds of signal (413 beyond).
        body_timeout_s: seconds a request body may take to arrive (408 and the connection closed beyond);
            bodies are received before a request slot is taken, so slow senders hold none.
        upload_buffer_bytes: bytes of request bodies being received at once, all connections together
            (503 for the body that would pass it); None: 16 x ``max_upload_bytes`` (256 MiB by default).
        header_timeout_s: seconds a request's headers may take, from the connection opening or the first
            byte of a later request on it (408 and the connection closed beyond; silent sockets too).
        idle_timeout_s: seconds a connection may stay idle between requests (uvicorn's keep-alive timeout).
        max_header_bytes: request line and headers (431 and the connection closed beyond, without reading
            the rest).
        max_connections: connections open at once; one beyond gets a 503 and is closed at once.
        max_signal_values: samples (over all leads) of the record an answer returns with
            ``include_signal``; a longer one is resampled to fit, its new rate stated.
        timeout_s: wall-clock budget of one request once its body has arrived (504 beyond).
        max_concurrency: requests handled at once (503 with Retry-After beyond).
        batch_size: most records one model call takes.
        batch_wait_ms: how long the first record of a batch waits for others.
        prep_threads: threads reading and preprocessing records.
    """

    max_upload_bytes: int = 16 << 20
    max_seconds: float = 300.0
    body_timeout_s: float = 30.0
    upload_buffer_bytes: int | None = None
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 5.0
    max_header_bytes: int = 32 << 10
    max_connections: int = 256
    max_signal_values: int = 2_000_000
    timeout_s: float = 30.0
    max_concurrency: int = 32
    batch_size: int = 32
    batch_wait_ms: float = 5.0
    prep_threads: int = 2

    def __post_init__(self) -> None:
        for name in (
            "max_upload_bytes",
            "max_header_bytes",
            "max_connections",
            "max_signal_values",
            "max_concurrency",
            "batch_size",
            "prep_threads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ECGMAEError(f"serve limits: {name} must be an integer >= 1, got {value!r}")
        for name in ("max_seconds", "body_timeout_s", "header_timeout_s", "idle_timeout_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ECGMAEError(f"serve limits: {name} must be > 0, got {getattr(self, name)!r}")
        if not self.batch_wait_ms >= 0:
            raise ECGMAEError(f"serve limits: batch_wait_ms must be >= 0, got {self.batch_wait_ms!r}")
        buffer = self.upload_buffer_bytes
        if buffer is not None and (
            isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < self.max_upload_bytes
        ):
            raise ECGMAEError(
                f"serve limits: upload_buffer_bytes must be an integer >= max_upload_bytes "
                f"({self.max_upload_bytes}), got {buffer!r}"
            )

    @property
    def upload_buffer(self) -> int:
        """``upload_buffer_bytes`` with its default filled in."""
        return self.upload_buffer_bytes if self.upload_buffer_bytes is not None else 16 * self.max_upload_bytes
