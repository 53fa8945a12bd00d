"""The HTTP routes: ``/v1/predict``, ``/v1/embed``, ``/v1/reconstruct``, ``/v1/model``, ``/healthz``,
``/metrics`` and the viewer page at ``/``.

Every answer goes through the loaded :class:`ecgmae.api.Model`: ``Model.prepare`` then
``predict_prepared`` / ``embed_prepared`` over a batch of requests, or ``Model.reconstruct``, so a
request gets what ``ecgmae.load(path)`` gives in Python. Errors are JSON ``{"error": "one line"}``:
400 bad input (the ``DataError`` text the CLI prints), 404 unknown route or example, 408 a body too slow
to arrive, 409 an endpoint the loaded checkpoint cannot serve, 413 too large, 415 wrong content type,
503 busy, 504 too slow. A request's body is received before it takes one of the ``max_concurrency``
slots, so clients that send slowly hold no slot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ecgmae._version import __version__
from ecgmae.api import Model
from ecgmae.data.safety import clip
from ecgmae.errors import CheckpointError, ECGMAEError
from ecgmae.serve.batching import Batcher
from ecgmae.serve.hosts import LOOPBACK_HOSTS, HostCheck
from ecgmae.serve.inputs import Intake, Received, RequestError, Sample, flag, load, option, parse, public, receive
from ecgmae.serve.limits import Limits
from ecgmae.serve.metrics import Metrics
from ecgmae.utils import log

STATIC = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
# The page loads only its own files: no CDN, no inline script, nothing sent elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
MAX_EXAMPLES = 1000
_PIECE = 1 << 15  # samples encoded per json.dumps call
Build = Callable[[], dict[str, Any]]  # makes a large answer (run in a worker thread)
Work = Callable[[Received], Awaitable[dict[str, Any] | Build]]  # a received request -> its answer, or its maker


def create_app(
    model: Model,
    limits: Limits | None = None,
    *,
    examples: str | Path | None = None,
    mae: Model | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> Starlette:
    """The ASGI application serving ``model``; run it with uvicorn (see :mod:`ecgmae.serve.server`).

    Args:
        model: answers predict and embed (and reconstruct, when it is a pre-training run).
        limits: what one request may cost.
        examples: folder of WFDB records offered by ``GET /v1/examples`` and the viewer.
        mae: a pre-training run that answers reconstruct instead (e.g. the one a classifier was
            fine-tuned from), so one viewer shows predictions and reconstructions.
        allowed_hosts: ``Host`` names answered (:func:`ecgmae.serve.hosts.allowed_hosts`); others get 400.
    """
    return Service(model, limits or Limits(), examples, mae, allowed_hosts).app


class Service:
    """Holds the model, its worker threads, the batchers and the metrics of one server."""

    def __init__(
        self,
        model: Model,
        limits: Limits,
        examples: str | Path | None,
        mae: Model | None = None,
        allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    ) -> None:
        self.model, self.limits, self.metrics = model, limits, Metrics()
        self.mae = mae or model  # who answers reconstruct
        self.examples = find_examples(examples) if examples else {}
        self.reconstructs = False  # found out at start-up
        self._busy = 0
        self.intake = Intake(limits.upload_buffer)  # bodies being received, before they take a slot
        self.metrics.intake = self.intake
        self._model_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ecgmae-model")
        self._prep_pool = concurrent.futures.ThreadPoolExecutor(limits.prep_threads, thread_name_prefix="ecgmae-prep")
        wait = limits.batch_wait_ms / 1e3

        def batcher(op: str) -> Batcher:
            def call(items: list[Any]) -> Any:  # looked up at call time: a wrapped method (tests, tracing) runs
                return getattr(model, f"{op}_prepared")(items)

            def on_call(n: int) -> None:
                self.metrics.model_call(op, n)

            return Batcher(call, self._model_pool, max_size=limits.batch_size, max_wait_s=wait, on_call=on_call)

        self.batchers = {op: batcher(op) for op in ("predict", "embed")}
        self.metrics.queues = {op: b.queued for op, b in self.batchers.items()}
        self._static = {name: (resources.files("ecgmae.serve") / "static" / name).read_bytes() for name in STATIC}
        post, get = ["POST"], ["GET"]
        routes = [
            Route("/", self._page("index.html"), methods=get),
            *(Route(f"/static/{name}", self._page(name), methods=get) for name in STATIC),
            Route("/healthz", self._plain("GET /healthz", self._health), methods=get),
            Route("/metrics", self._plain("GET /metrics", self.metrics.snapshot), methods=get),
            Route("/v1/model", self._plain("GET /v1/model", self.card), methods=get),
            Route(
                "/v1/examples", self._plain("GET /v1/examples", lambda: {"examples": list(self.examples)}), methods=get
            ),
            Route("/v1/predict", self._guarded("POST /v1/predict", self._predict, self._can_predict), methods=post),
            Route("/v1/embed", self._guarded("POST /v1/embed", self._embed), methods=post),
            Route(
                "/v1/reconstruct",
                self._guarded("POST /v1/reconstruct", self._reconstruct, self._can_reconstruct),
                methods=post,
            ),
        ]
        self.app = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            middleware=[Middleware(HostCheck, allowed=allowed_hosts)],
            exception_handlers={HTTPException: self._http_error},
        )
        self.app.state.service = self

    # ------------------------------------------------------------------------------- life cycle
    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.reconstructs = await asyncio.get_running_loop().run_in_executor(self._model_pool, self._warm_up)
        for b in self.batchers.values():
            b.start()
        log.info("serving %r (%s)", self.model, "reconstructs" if self.reconstructs else "no reconstruction")
        try:
            yield
        finally:
            for b in self.batchers.values():
                await b.stop()
            self._model_pool.shutdown(wait=False, cancel_futures=True)
            self._prep_pool.shutdown(wait=False, cancel_futures=True)

    def _warm_up(self) -> bool:
        """Run each model path once (the first call is slow) and find out whether reconstruct works."""
        m = self.model
        m.embed(_beats(m), fs=m.fs)
        if m.kind == "classifier":
            m.predict_proba(_beats(m), fs=m.fs)
        try:
            self.mae.reconstruct(_beats(self.mae), fs=self.mae.fs, mask_ratio=0.5)
        except CheckpointError as exc:  # a warning when --mae named a run that cannot reconstruct
            (log.info if self.mae is self.model else log.warning)("reconstruct is off: %s", exc)
            return False
        return True

    # --------------------------------------------------------------------------------- plumbing
    def _page(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        async def page(request: Request) -> Response:
            return Response(self._static[name], media_type=STATIC[name], headers=_HEADERS)

        return page

    def _plain(self, route: str, fn: Callable[[], dict[str, Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            response = _json(fn())
            self.metrics.request(route, response.status_code, time.perf_counter() - t0)
            return response

        return endpoint

    def _guarded(
        self, route: str, work: Work, check: Callable[[], None] | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint under the body, concurrency and time limits, answering errors as one JSON line.

        ``check`` refuses what the loaded checkpoint cannot do before the body is read; the body is
        received (under ``body_timeout_s`` and the upload buffer) before a request slot is taken.
        """

        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                if check is not None:
                    check()
                lim = self.limits
                received = await receive(request, lim.max_upload_bytes, lim.body_timeout_s, self.intake)
                response = Response(await self._limited(work, received), media_type="application/json")
            except Exception as exc:
                response = self._error(route, exc)
            self.metrics.request(route, response.status_code, time.perf_counter() - t0)
            return response

        return endpoint

    async def _limited(self, work: Work, received: Received) -> bytes:
        lim = self.limits
        if self._busy >= lim.max_concurrency:
            raise RequestError(
                503,
                f"server busy: {self._busy} requests in progress (--max-concurrency "
                f"{lim.max_concurrency}); retry shortly",
            )
        self._busy += 1
        self.metrics.in_flight = self._busy
        task = asyncio.ensure_future(self._answer(work, received))
        task.add_done_callback(self._release)  # the slot is held until the work really stops
        try:
            return await asyncio.wait_for(asyncio.shield(task), lim.timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(504, f"no answer within {lim.timeout_s:g} s (--timeout)") from None

    async def _answer(self, work: Work, received: Received) -> bytes:
        """The JSON bytes of ``work``'s answer; one that holds signals (``include_signal``, reconstruct: up
        to millions of samples) is built and encoded in a worker thread, so the event loop keeps answering
        other clients meanwhile."""
        out = await work(received)
        if callable(out):
            return await self._in(self._prep_pool, lambda: _encode(out()))
        return _encode(out)

    def _release(self, task: asyncio.Future[Any]) -> None:
        self._busy -= 1
        self.metrics.in_flight = self._busy
        if not task.cancelled() and task.exception() is not None:  # retrieved, so asyncio does not warn
            log.debug("request ended after its answer: %s", task.exception())

    def _error(self, route: str, exc: Exception) -> Response:
        if isinstance(exc, RequestError):
            status = exc.status
        elif isinstance(exc, CheckpointError):
            status = 409  # the loaded checkpoint cannot do this (e.g. predict with an encoder)
        elif isinstance(exc, ECGMAEError):
            status = 400
        else:
            log.exception("%s: unexpected error", route)
            return _json({"error": f"internal error ({type(exc).__name__}); the server log has the details"}, 500)
        # 408: the rest of the body may still be trickling in; the connection is closed after the answer
        headers = {"Retry-After": "1"} if status == 503 else {"Connection": "close"} if status == 408 else None
        return _json({"error": clip(public(str(exc)).replace("\n", " "), 1000)}, status, headers)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _json({"error": f"{request.method} {request.url.path}: {exc.detail}"}, exc.status_code, exc.headers)

    async def _sample(self, received: Received) -> Sample:
        payload = await parse(received, self.examples)
        return await self._in(self._prep_pool, load, payload, self.limits.max_seconds)

    async def _in(self, pool: concurrent.futures.Executor, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(*args, **kw))

    def _with_signal(self, sample: Sample, out: dict[str, Any]) -> Build:
        """What builds ``out`` with the record as read (``include_signal``), in a worker thread."""
        return lambda: {**out, "signal": sample.data(self.model.leads, self.limits.max_signal_values)}

    # -------------------------------------------------------------------------------- endpoints
    def _health(self) -> dict[str, Any]:
        return {"status": "ok", "kind": self.model.kind, "version": __version__}

    def _can_predict(self) -> None:
        if self.model.kind != "classifier":
            raise RequestError(
                409,
                f"this server holds {self.model.kind} weights; /v1/predict needs a classifier "
                "run (ecgmae finetune); use /v1/embed for features",
            )

    def _can_reconstruct(self) -> None:
        if not self.reconstructs:
            raise RequestError(
                409,
                f"this server holds {self.model.kind} weights without the masked autoencoder; "
                "/v1/reconstruct needs a pre-training run (its mae.safetensors; ecgmae serve --mae)",
            )

    async def _predict(self, received: Received) -> dict[str, Any] | Build:
        sample = await self._sample(received)
        show = flag(sample, "include_signal")  # a bad option is refused before the model runs
        preps, _ = await self._in(self._prep_pool, self.model.prepare, *sample.args)
        probs = await self.batchers["predict"].submit(preps[0])
        out = {
            "record": sample.name,
            "probabilities": dict(zip(self.model.label_names, map(float, probs), strict=True)),
        }
        return self._with_signal(sample, out) if show else out

    async def _embed(self, received: Received) -> dict[str, Any] | Build:
        sample = await self._sample(received)
        show = flag(sample, "include_signal")
        preps, _ = await self._in(self._prep_pool, self.model.prepare, *sample.args)
        z = await self.batchers["embed"].submit(preps[0])
        out = {"record": sample.name, "embedding": z.astype(float).tolist()}
        return self._with_signal(sample, out) if show else out

    async def _reconstruct(self, received: Received) -> Build:
        sample = await self._sample(received)
        ratio, seed = option(sample, "mask_ratio", 0.75), option(sample, "seed", 0, int)
        if not 0 <= seed < 2**32:
            raise RequestError(400, f"seed must be in 0..{2**32 - 1}, got {seed}")
        show = flag(sample, "include_signal")

        def run() -> Any:
            self.metrics.model_call("reconstruct", 1)
            return self.mae.reconstruct(*sample.args, mask_ratio=ratio, seed=seed)

        r = await self._in(self._model_pool, run)

        def build() -> dict[str, Any]:
            rmse = r.masked_rmse()
            out = {
                "record": r.name,
                "fs": r.fs,
                "leads": list(r.leads),
                "mask_ratio": r.mask_ratio,
                "seed": seed,
                "masked_rmse": None if math.isnan(rmse) else rmse,
                "present": r.present.tolist(),
                "original": r.original,
                "reconstruction": r.reconstruction,  # encoded in pieces
                "mask": [mask_spans(row) for row in r.mask],
            }
            return self._with_signal(sample, out)() if show else out

        return build

    def card(self) -> dict[str, Any]:
        """What ``GET /v1/model`` returns: the model's kind, inputs, outputs, the run's model card, limits."""
        m = self.model
        card_file = m.path.parent / "model_card.json"
        try:
            card = _no_folders(json.loads(card_file.read_text())) if card_file.is_file() else None
        except (OSError, ValueError):
            card = None
        try:
            dim: int | None = m.embed_dim
        except CheckpointError:
            dim = None
        endpoints = [
            "/v1/embed",
            *(["/v1/predict"] if m.kind == "classifier" else []),
            *(["/v1/reconstruct"] if self.reconstructs else []),
        ]
        data = m.info.get("data") or {}
        return {
            "kind": m.kind,
            "checkpoint": _short(m.path),
            "version": __version__,
            "endpoints": endpoints,
            "labels": m.label_names,
            "fs": m.fs,
            "leads": list(m.leads),
            "window_samples": m.window,
            "window_seconds": m.window / m.fs,
            "stride_samples": m.stride,
            "aggregate": m.aggregate,
            "embed_dim": dim,
            "preprocessing": data.get("preprocessing"),
            "model": m.info.get("model"),
            "card": card,
            "limits": dataclasses.asdict(self.limits),
            "examples": len(self.examples),
            "reconstruct_checkpoint": _short(self.mae.mae_file) if self.reconstructs else None,
        }


def find_examples(folder: str | Path) -> dict[str, Path]:
    """``{name: header}`` of the WFDB records under ``folder`` (names relative to it, without ``.hea``)."""
    root = Path(folder)
    if not root.is_dir():
        raise ECGMAEError(f"--examples {folder}: not a folder")
    found = {}
    for hea in sorted(root.rglob("*.hea"))[:MAX_EXAMPLES]:
        found[hea.relative_to(root).with_suffix("").as_posix()] = hea
    if not found:
        raise ECGMAEError(f"--examples {folder}: no WFDB records (.hea) found")
    return found


def _short(path: PurePath) -> str:
    """``run/file.safetensors``: names the run without telling clients the server's folders."""
    return f"{path.parent.name}/{path.name}"


def _no_folders(doc: Any) -> Any:
    """``doc`` (a run's model card) with every absolute path shortened by :func:`_short` (store, encoder...)."""
    if isinstance(doc, dict):
        return {k: _no_folders(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_no_folders(v) for v in doc]
    if isinstance(doc, str):
        for kind in (PurePosixPath, PureWindowsPath):
            if kind(doc).is_absolute():
                return _short(kind(doc))
    return doc


def _beats(m: Model) -> np.ndarray:
    """One window of a spiky 72 bpm signal on every lead of ``m`` (warm-up input)."""
    t = np.arange(m.window) / m.fs
    return np.repeat((np.sin(np.pi * 1.2 * t) ** 16)[None], len(m.leads), axis=0).astype(np.float32)


def mask_spans(row: np.ndarray) -> list[list[int]]:
    """``[[start, stop], ...]`` sample ranges where a 1-D bool mask is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _encode(content: Any) -> bytes:
    """Compact JSON of ``content``; numpy arrays in its dicts are written as (nested) lists, in pieces of
    ``_PIECE`` values, so a worker thread encoding millions of samples lets the event loop run between
    pieces (one ``json.dumps`` call over them would hold the GIL for as long as it takes)."""
    if isinstance(content, dict):
        return b"{" + b",".join(_encode(str(k)) + b":" + _encode(v) for k, v in content.items()) + b"}"
    if isinstance(content, np.ndarray):
        if content.ndim > 1:
            return b"[" + b",".join(_encode(row) for row in content) + b"]"
        return (
            b"["
            + b",".join(_encode(content[i : i + _PIECE].tolist())[1:-1] for i in range(0, len(content), _PIECE))
            + b"]"
        )
    return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


def _json(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_encode(content), status_code=status, media_type="application/json", headers=headers)
