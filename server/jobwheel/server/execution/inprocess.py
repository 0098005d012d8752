"""In-process execution of `@task` handlers.

Async handlers run on the event loop; plain functions run in a bounded thread pool so a
blocking handler never stalls the loop. A timeout ends the attempt at once, counted from the
handler's start (a plain function may wait for a free thread first); a handler that goes on
(a thread cannot be killed, a coroutine may swallow its cancellation) is told through
`ctx.cancelled` and left behind. Whatever a handler raises, SystemExit and KeyboardInterrupt
included, is its attempt's failure: one handler never stops the server.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jobwheel.server import failures
from jobwheel.server.handlers import Handler
from jobwheel.server.model import AttemptOutcome
from jobwheel.server.rules.attempt import AttemptResult, result_problem

# the report of a handler that returned nothing (most do): one shared immutable object
_DONE = AttemptResult(AttemptOutcome.SUCCEEDED)


class _Flag:
    """A set-once flag a handler's thread may poll: threading.Event's `set`/`is_set` without
    its lock and condition (one attribute read or write is atomic), made for every attempt."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass
class TaskContext:
    """What a handler learns about the attempt it runs."""

    job_id: str
    task: str
    queue: str
    attempt: int
    execution: int
    labels: dict[str, str] = field(default_factory=dict)
    _cancel: _Flag = field(default_factory=_Flag, repr=False)
    _started: float | None = field(default=None, repr=False)  # time.monotonic() at the call

    @property
    def cancelled(self) -> bool:
        """True once the attempt was cancelled or timed out: a long handler should stop."""
        return self._cancel.is_set()


def _arity(fn: Handler) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 2
    return min(len(positional), 2)


class _Expired(Exception):
    """The attempt ran past its time limit."""


def _forget(work: asyncio.Future[Any]) -> None:
    """A handler left behind: what it ends with is nobody's (and not logged as unretrieved)."""
    if not work.cancelled():
        work.exception()


class InProcessExecutor:
    def __init__(self, handlers: dict[str, Handler], max_threads: int) -> None:
        self.handlers = handlers
        self._arity = {name: _arity(fn) for name, fn in handlers.items()}
        self._async = {name: inspect.iscoroutinefunction(fn) for name, fn in handlers.items()}
        self._pool = ThreadPoolExecutor(max_threads, thread_name_prefix="jobwheel-task")

    def handles(self, task: str) -> bool:
        return task in self.handlers

    def _call(self, task: str, payload: dict[str, Any], ctx: TaskContext) -> Any:
        fn = self.handlers[task]
        ctx._started = time.monotonic()
        return fn(payload, ctx) if self._arity[task] >= 2 else fn(payload)

    async def _invoke(self, task: str, payload: dict[str, Any], ctx: TaskContext) -> Any:
        if self._async[task]:
            result = self._call(task, payload, ctx)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._pool, self._call, task, payload, ctx)
        while inspect.isawaitable(result):  # e.g. a partial of an async function
            result = await result
        return result

    async def _within(
        self, task: str, payload: dict[str, Any], ctx: TaskContext, limit: float
    ) -> Any:
        """The handler's result if it ends within `limit` seconds of its start; _Expired
        otherwise, leaving it behind cancelled. In a task of its own: a coroutine that swallows
        its cancellation cannot hold the attempt past its deadline."""
        work = asyncio.ensure_future(self._invoke(task, payload, ctx))
        try:
            while True:
                started = ctx._started  # None while a plain function waits for a thread
                wait = limit if started is None else started + limit - time.monotonic()
                if wait <= 0:
                    break
                done, _ = await asyncio.wait((work,), timeout=wait)
                if done:
                    return work.result()
        except asyncio.CancelledError:
            work.cancel()
            raise
        work.cancel()
        work.add_done_callback(_forget)
        raise _Expired

    async def run(
        self, task: str, payload: dict[str, Any], ctx: TaskContext, time_limit: float | None
    ) -> AttemptResult:
        """Runs one attempt; never raises except CancelledError when the caller cancels."""
        try:
            if time_limit is None:  # no timer to arm, no task to make
                result = await self._invoke(task, payload, ctx)
            else:
                result = await self._within(task, payload, ctx, time_limit)
        except _Expired:
            ctx._cancel.set()
            return AttemptResult(
                AttemptOutcome.TIMED_OUT, error=failures.timed_out(time_limit or 0)
            )
        except asyncio.CancelledError as exc:
            ctx._cancel.set()
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise  # the attempt was cancelled (the job was, or the server stops)
            # the handler's own (say, of a future someone else cancelled): its failure
            return AttemptResult(AttemptOutcome.FAILED, error=failures.error_text(exc))
        except failures.Reported as exc:  # an expected failure, which may say how to retry
            return AttemptResult(
                AttemptOutcome.FAILED,
                error=failures.error_text(exc),
                retryable=exc.retryable,
                retry_after=exc.retry_after,
            )
        except BaseException as exc:  # the handler's failure is the attempt's outcome
            return AttemptResult(AttemptOutcome.FAILED, error=failures.error_text(exc))
        if result is None:
            return _DONE
        try:
            text = json.dumps(result, allow_nan=False)  # NaN and Infinity are not JSON
        except (TypeError, ValueError, RecursionError) as exc:
            return AttemptResult(
                AttemptOutcome.FAILED, error=f"ResultError: result is not JSON-serialisable: {exc}"
            )
        if problem := result_problem(result, len(text)):
            return AttemptResult(AttemptOutcome.FAILED, error=f"ResultError: {problem}")
        return AttemptResult(AttemptOutcome.SUCCEEDED, result=result)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
