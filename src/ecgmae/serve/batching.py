"""Requests arriving together share one model call: a small asyncio queue with a max size and a max wait.

The model runs in one worker thread (``executor``), so the event loop keeps accepting requests while a
batch is computed, and the records that arrive meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any

from ecgmae.utils import log


class Batcher:
    """Collect items for ``fn(items) -> results`` (one result per item, in order) and run them in batches.

    Args:
        fn: the model call, e.g. ``model.predict_prepared``; runs in ``executor``.
        executor: the thread the model runs in (shared by every batcher of one model).
        max_size: most items per call.
        max_wait_s: how long the first item waits for others before the call.
        on_call: told ``len(items)`` of every call (metrics, tests).
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        executor: concurrent.futures.Executor,
        *,
        max_size: int,
        max_wait_s: float,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self._fn, self._executor = fn, executor
        self._max_size, self._max_wait = max_size, max_wait_s
        self._on_call = on_call
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the collecting loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def queued(self) -> int:
        """Items waiting for the next model call."""
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, item: Any) -> Any:
        """The result for ``item``; raises what ``fn`` raised for it."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait
            while len(batch) < self._max_size:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            live = [(item, fut) for item, fut in batch if not fut.done()]  # timed-out requests are dropped
            if live:
                await self._run(live)

    async def _run(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for item, _ in batch]
        try:
            results = await loop.run_in_executor(self._executor, self._call, items)
        except Exception as exc:
            if len(batch) > 1:  # one bad record must not fail the others: run each alone
                for one in batch:
                    await self._run([one])
                return
            _settle(batch[0][1], exc=exc)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            _settle(fut, result=result)

    def _call(self, items: list[Any]) -> Sequence[Any]:
        if self._on_call is not None:
            self._on_call(len(items))
        log.debug("model call over %d record(s)", len(items))
        return self._fn(items)


def _settle(fut: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():  # the request gave up (timeout, client gone)
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
