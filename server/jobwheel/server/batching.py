"""Group commit: concurrent calls of one batch-shaped write are merged into one call.

While a batch is being written, new calls queue up; when it is done, everything queued is
written together. Under load that means one transaction (one fsync) for many callers; when
idle a call is written at once, with no added delay. Under load (the previous write merged
several calls) the next batch may wait a few turns of the event loop first (`gather_turns`),
so that calls the server has already received join it. Each caller gets its own slice of the
result only after the batch committed. If a merged batch fails, every call is retried on its
own, so one bad call cannot fail its neighbours. A caller that is cancelled meanwhile ends
(cancelled) when its batch has settled; the batch is written regardless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

log = logging.getLogger(__name__)


class _Batch(asyncio.Future[list[Any]]):
    """One merged write, awaited by all of its callers: its result holds each call's outcome
    (its results, or the exception its own retry raised), by the call's position.

    One future per batch, not one per caller plus a shield: a caller that gives up must not
    cancel what its neighbours wait for, so `cancel()` is refused, and the task that asked is
    cancelled when the batch settles (asyncio cancels a task whose awaited future refuses as
    soon as the task wakes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.calls: list[list[Any]] = []
        self.size = 0

    def cancel(self, msg: Any | None = None) -> bool:
        return False

    def abandon(self, exc: BaseException) -> None:
        """Ends the batch unwritten: every caller gets `exc` (cancelled for a cancellation)."""
        if self.done():
            return
        if isinstance(exc, asyncio.CancelledError):
            super().cancel()
        else:
            self.set_exception(exc)


class GroupCommit(Generic[I, O]):
    def __init__(
        self,
        write: Callable[[list[I]], Awaitable[Sequence[O]]],
        max_batch: int = 2000,
        *,
        observe: Callable[[int], None] | None = None,
        gather_turns: int = 0,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._gather_turns = gather_turns
        self._merged = False  # whether the last write merged several calls
        self._waiting: deque[_Batch] = deque()  # batches not yet written, oldest first
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # for benchmarks and tests: how many writes were issued
        self.observe = observe  # told each merged batch's size

    async def __call__(self, items: Sequence[I]) -> list[O]:
        if not items:
            return []
        calls = list(items)
        waiting = self._waiting
        batch = waiting[-1] if waiting else None
        if batch is None or batch.size + len(calls) > self._max_batch:
            batch = _Batch(asyncio.get_running_loop())
            waiting.append(batch)
        index = len(batch.calls)
        batch.calls.append(calls)
        batch.size += len(calls)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        outcome = (await batch)[index]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    async def _flush_all(self) -> None:
        batch: _Batch | None = None
        try:
            while self._waiting:
                if self._merged and len(self._waiting) == 1:
                    for _ in range(self._gather_turns):
                        await asyncio.sleep(0)
                batch = self._waiting.popleft()
                self._merged = len(batch.calls) > 1
                batch.set_result(await self._outcomes(batch.calls))
            self._merged = False  # nothing waited: the next call finds the server idle
        except BaseException as exc:  # cancelled: nobody may wait forever
            for waiting in (batch, *self._waiting):
                if waiting is not None:
                    waiting.abandon(exc)
            self._waiting.clear()
            raise

    async def _outcomes(self, calls: list[list[Any]]) -> list[Any]:
        merged = calls[0] if len(calls) == 1 else [item for items in calls for item in items]
        try:
            self.batches += 1
            if self.observe is not None:
                self.observe(len(merged))
            results = list(await self._write(merged))
        except Exception as exc:
            if len(calls) == 1:
                return [exc]
            log.debug("merged write of %d calls failed; retrying one by one", len(calls))
            outcomes: list[Any] = []
            for items in calls:
                try:
                    self.batches += 1
                    outcomes.append(list(await self._write(items)))
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes
        if len(calls) == 1:
            return [results]
        outcomes = []
        start = 0
        for items in calls:
            outcomes.append(results[start : start + len(items)])
            start += len(items)
        return outcomes
