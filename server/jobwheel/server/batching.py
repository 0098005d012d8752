"""Group commit: concurrent calls of one batch-shaped write are merged into one call.

While a batch is being written, new calls queue up; when it is done, everything queued is
written together. Under load that means one transaction (one fsync) for many callers; when
idle a call is written at once, with no added delay. Each caller gets its own slice of the
result only after the batch committed. If a merged batch fails, every call is retried on its
own, so one bad call cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

log = logging.getLogger(__name__)


class GroupCommit(Generic[I, O]):
    def __init__(
        self,
        write: Callable[[list[I]], Awaitable[Sequence[O]]],
        max_batch: int = 2000,
        *,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._pending: deque[tuple[list[I], asyncio.Future[list[O]]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # for benchmarks and tests: how many writes were issued
        self.observe = observe  # told each merged batch's size

    async def __call__(self, items: Sequence[I]) -> list[O]:
        if not items:
            return []
        fut: asyncio.Future[list[O]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(items), fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        # shield: a caller that gives up must not cancel the batch its neighbours wait for
        return await asyncio.shield(fut)

    def _take(self) -> list[tuple[list[I], asyncio.Future[list[O]]]]:
        taken: list[tuple[list[I], asyncio.Future[list[O]]]] = []
        size = 0
        while self._pending and (not taken or size + len(self._pending[0][0]) <= self._max_batch):
            call = self._pending.popleft()
            taken.append(call)
            size += len(call[0])
        return taken

    async def _flush_all(self) -> None:
        while self._pending:
            calls = self._take()
            merged = [item for items, _ in calls for item in items]
            try:
                self.batches += 1
                if self.observe is not None:
                    self.observe(len(merged))
                results = list(await self._write(merged))
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled: nobody may wait forever
                    for _, fut in calls:
                        self._settle_error(fut, exc)
                    for _, fut in self._pending:
                        self._settle_error(fut, exc)
                    self._pending.clear()
                    raise
                if len(calls) == 1:
                    self._settle_error(calls[0][1], exc)
                    continue
                log.debug("merged write of %d calls failed; retrying one by one", len(calls))
                for items, fut in calls:
                    try:
                        self.batches += 1
                        self._settle(fut, list(await self._write(items)))
                    except Exception as exc:
                        self._settle_error(fut, exc)
                continue
            start = 0
            for items, fut in calls:
                self._settle(fut, results[start : start + len(items)])
                start += len(items)

    @staticmethod
    def _settle(fut: asyncio.Future[list[O]], value: list[O]) -> None:
        if not fut.done():
            fut.set_result(value)

    @staticmethod
    def _settle_error(fut: asyncio.Future[list[O]], exc: BaseException) -> None:
        if fut.done():
            return
        if isinstance(exc, asyncio.CancelledError):
            fut.cancel()
        else:
            fut.set_exception(exc)
