"""Micro-batching: concurrent calls share RPCs.

Calls queue their items; on the next turn of the event loop everything queued goes out
in batches of at most ``max_batch`` items, while at most ``max_inflight`` batches are in
flight (more wait their turn). A caller that gave up (its future is done) before its
batch left is not signed for.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ittc.errors import IttcError, SigningError
from ittc.scheme.encoding import SignItem

__all__ = ["Batcher", "Pending"]

log = logging.getLogger("ittc.combiner")


@dataclass
class Pending:
    """One item waiting for its signature."""

    item: SignItem
    x: int
    future: asyncio.Future[bytes]


#: Signs one batch: a signature or an error per item, in order.
BatchRunner = Callable[[list[Pending]], Awaitable[Sequence[bytes | IttcError]]]


class Batcher:
    def __init__(self, run: BatchRunner, *, max_batch: int, max_inflight: int) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: collections.deque[Pending] = collections.deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduled = False
        self._closed = False
        self._close_error: IttcError | None = None
        #: Batches started (for statistics).
        self.batches = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def submit(self, pending: Sequence[Pending]) -> None:
        self._queue.extend(pending)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and len(self._tasks) < self.max_inflight and not self._closed:
            batch: list[Pending] = []
            while self._queue and len(batch) < self.max_batch:
                p = self._queue.popleft()
                if not p.future.done():
                    batch.append(p)
            if not batch:
                break
            self.batches += 1
            task = loop.create_task(self._sign(batch))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._queue and not self._closed and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _sign(self, batch: list[Pending]) -> None:
        try:
            results = await self._run(batch)
        except IttcError as exc:
            results = [exc] * len(batch)
        except asyncio.CancelledError:
            error = self._close_error or SigningError("signing cancelled")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            raise
        except Exception as exc:  # pragma: no cover - a bug; never leave callers hanging
            log.exception("internal error while signing")
            results = [SigningError(f"internal error: {type(exc).__name__}")] * len(batch)
        for p, result in zip(batch, results, strict=True):
            if p.future.done():
                continue
            if isinstance(result, bytes):
                p.future.set_result(result)
            else:
                p.future.set_exception(result)

    async def close(self, error: IttcError) -> None:
        """Fail what is queued with ``error`` and cancel what is in flight."""
        self._closed = True
        self._close_error = error
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(error)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
