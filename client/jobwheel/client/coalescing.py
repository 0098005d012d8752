"""Concurrent `enqueue_job` calls of one AsyncClient sent together as one BatchEnqueueJobs.

While fewer than `MAX_IN_FLIGHT` (2) enqueues of this client are on their way and none waits, a
call leaves after one turn of the event loop, together with the calls made in that turn (the
callers one reply woke, say): as EnqueueJob when it is alone, so a lone caller waits for
nothing but that turn and sees nothing different. Other calls wait; when an enqueue on its way
returns, they leave together. Calls that leave together go as one BatchEnqueueJobs of at most
`MAX_JOBS` jobs and `MAX_BYTES` of requests. Many concurrent callers (a web app enqueuing from
its request handlers) then cost the server one call and one durable write per round trip
instead of one each.

Each caller still gets its own result or error:
- The server checks a whole batch before it creates anything. When the batch is refused for
  what its jobs hold (INVALID_ARGUMENT, PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE,
  RESOURCE_EXHAUSTED, NOT_FOUND, ALREADY_EXISTS), each call is sent again on its own and gets
  the answer it would have had alone.
- Any other failure (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, INTERNAL, ...) is every
  caller's: as for one call that fails so, its job may or may not have been created.
- Deadlines run from each call's start (the client's `timeout`): the batch carries the
  earliest, and a call whose deadline passes while it waits fails with DEADLINE_EXCEEDED
  unsent.
- A caller cancelled before its batch leaves is left out of it; one cancelled after gets the
  cancellation, and its job may have been created (as a cancelled single call's may).

Only calls without an idempotency key are merged: a keyed call is retried after UNAVAILABLE,
and its existing job comes back whole (a batch reply may cut a large one to id and state).
Calls made inside an OpenTelemetry span go alone too, so that their job joins that trace.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import grpc
from jobwheel.client.calls import Call
from jobwheel.client.errors import (
    DeadlineExceeded,
    Internal,
    JobwheelError,
    cut_short,
    from_rpc_error,
)
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import job_service_pb2_grpc

try:
    from opentelemetry import trace
except ImportError:  # pragma: no cover - exercised where the extra is missing
    trace = None  # type: ignore[assignment]

MAX_JOBS = 1_000  # jobs per merged call (the server takes 10,000)
# calls on their way at once: calls made while one is on its way need not wait for its reply
MAX_IN_FLIGHT = 2
MAX_BYTES = 1 << 20  # encoded requests per merged call (the reply must fit in 4 MiB)
# refusals that depend on what the jobs hold, made before anything is created
ATTRIBUTABLE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


class Settings(Protocol):
    """What the coalescer reads from its client at each send."""

    @property
    def timeout(self) -> float | None:  # seconds per call; None: no deadline
        ...

    @property
    def metadata(self) -> Sequence[tuple[str, str]]: ...


Run = Callable[[Call[pb.EnqueueJobResponse]], Awaitable[pb.EnqueueJobResponse]]


class Pending(Protocol):
    """A call waiting to be sent, in either coalescer."""

    request: pb.EnqueueJobRequest
    deadline: float | None  # on the coalescer's clock; None: none
    size: int  # encoded bytes

    def settled(self) -> bool:
        """Whether it ended unsent (its caller was cancelled, say)."""
        ...

    def fail(self, exc: BaseException) -> None: ...


P = TypeVar("P", bound=Pending)


def take(waiting: deque[P], now: float, most: int, max_bytes: int) -> list[P]:
    """The next batch from `waiting`: the oldest calls that fit (`most` of them and
    `max_bytes` of requests at most, and always one), those still waiting and in time; a call
    whose deadline passed fails unsent."""
    batch: list[P] = []
    size = 0
    while waiting and len(batch) < most:
        pending = waiting[0]
        if batch and size + pending.size > max_bytes:
            break
        waiting.popleft()
        if pending.settled():
            continue
        if pending.deadline is not None and pending.deadline <= now:
            pending.fail(DeadlineExceeded("deadline exceeded while waiting to be sent"))
            continue
        batch.append(pending)
        size += pending.size
    return batch


def time_left(batch: Sequence[Pending], now: float) -> float | None:
    """Seconds to the earliest deadline of `batch` (None: none has one)."""
    deadlines = [p.deadline for p in batch if p.deadline is not None]
    return max(0.0, min(deadlines) - now) if deadlines else None


def merged_request(batch: Sequence[Pending]) -> pb.BatchEnqueueJobsRequest:
    return pb.BatchEnqueueJobsRequest(jobs=[p.request for p in batch])


def goes_alone(request: pb.EnqueueJobRequest) -> bool:
    """Calls never merged: with an idempotency key (retried after UNAVAILABLE, and its
    existing job comes back whole), or made inside a trace span (the job joins that trace)."""
    return bool(request.idempotency_key) or (
        trace is not None and trace.get_current_span().get_span_context().is_valid
    )


@dataclass(slots=True)
class _Waiting:
    request: pb.EnqueueJobRequest
    future: asyncio.Future[pb.EnqueueJobResponse]
    deadline: float | None  # the event loop's time
    size: int

    def settled(self) -> bool:
        return self.future.done()

    def fail(self, exc: BaseException) -> None:
        _fail(self, exc)


R = TypeVar("R")


class Coalescer(Generic[R, P]):
    """What both coalescers hold: `run` sends one call as the client does (its deadline,
    metadata and retries); `stub` and `settings` (the client's timeout and metadata) serve the
    merged sends, which carry at most `max_jobs` jobs and `max_bytes` of requests, with at
    most `max_in_flight` calls on their way."""

    def __init__(
        self,
        stub: job_service_pb2_grpc.JobServiceStub,
        run: R,
        settings: Settings,
        *,
        max_jobs: int = MAX_JOBS,
        max_bytes: int = MAX_BYTES,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._stub = stub
        self._run = run
        self._settings = settings
        self._max_jobs = max_jobs
        self._max_bytes = max_bytes
        self._max_in_flight = max_in_flight
        self._waiting: deque[P] = deque()  # oldest first
        self._sending = 0  # calls of this coalescer on their way
        self.sent = 0  # calls made to the server (for tests and benchmarks)
        self._start()

    def _start(self) -> None:
        """Sets up what a coalescer holds beyond these."""

    def _take(self, now: float) -> list[P]:
        return take(self._waiting, now, self._max_jobs, self._max_bytes)


class EnqueueCoalescer(Coalescer[Run, "_Waiting"]):
    """`await coalescer(call)` for an EnqueueJob `Call` (see the module's docstring)."""

    def _start(self) -> None:
        self._gathering = False  # a call waits a turn of the event loop for others to join
        # the loop holds tasks weakly; each maps to whether its body began
        self._senders: dict[asyncio.Task[None], bool] = {}

    async def __call__(self, call: Call[pb.EnqueueJobResponse]) -> pb.EnqueueJobResponse:
        request = call.request
        assert isinstance(request, pb.EnqueueJobRequest)
        if goes_alone(request):
            self.sent += 1
            return await self._run(call)
        leads = not self._gathering and not self._waiting and self._sending < self._max_in_flight
        if leads:
            # the calls made in this turn of the event loop leave with this one. Sent at once,
            # the first of the callers one reply wakes went alone and the others waited for a
            # place (64 callers: two calls in three carried one job)
            self._gathering = True
            try:
                await asyncio.sleep(0)
            except BaseException:  # cancelled: the calls that joined still leave
                self._gathering = False
                self._next()
                raise
            self._gathering = False
            if not self._waiting and self._sending < self._max_in_flight:
                self._sending += 1
                try:
                    self.sent += 1
                    return await self._run(call)
                finally:
                    self._sending -= 1
                    self._next()
        loop = asyncio.get_running_loop()
        timeout = self._settings.timeout
        waiting = _Waiting(
            request,
            loop.create_future(),
            None if timeout is None else loop.time() + timeout,
            request.ByteSize(),
        )
        if leads:
            self._waiting.appendleft(waiting)  # first come
            self._next()
        else:
            self._waiting.append(waiting)
        # a cancelled caller cancels its future: a batch not yet formed leaves it out
        return await waiting.future

    def _next(self) -> None:
        """After a send: the calls that waited go next, in a task of their own (with an
        empty context, so that no caller's context variables travel with the batch)."""
        if self._waiting and self._sending < self._max_in_flight:
            self._sending += 1
            loop = asyncio.get_running_loop()
            sender = loop.create_task(self._send_waiting(), context=contextvars.Context())
            self._senders[sender] = False
            sender.add_done_callback(self._sender_done)

    def _sender_done(self, sender: asyncio.Task[None]) -> None:
        if self._senders.pop(sender, True):
            return
        # cancelled before its first step (every task cancelled at shutdown, say): its body,
        # which gives the place back and fails what it cannot send, never ran
        self._sending -= 1
        self._waiting = deque(w for w in self._waiting if not w.settled())
        self._next()

    async def _send_waiting(self) -> None:
        task = asyncio.current_task()
        if task in self._senders:
            self._senders[task] = True
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                batch = self._take(asyncio.get_running_loop().time())
                if batch:
                    await self._send(batch)
        except BaseException as exc:  # cancelled with the loop: nobody may wait forever
            for waiting in (*batch, *self._waiting):
                _fail(waiting, exc)
            self._waiting.clear()
            raise
        finally:
            self._sending -= 1

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            results = await self._rpc(batch)
        except JobwheelError as err:
            if len(batch) > 1 and err.code in ATTRIBUTABLE:  # nothing was created
                await asyncio.gather(*(self._alone(waiting) for waiting in batch))
                return
            for waiting in batch:
                _fail(waiting, err)
            return
        except Exception as exc:  # the channel closed meanwhile, say
            for waiting in batch:
                _fail(waiting, exc)
            return
        if len(results) != len(batch):
            error = Internal(f"{len(results)} results for {len(batch)} jobs")
            for waiting in batch:
                _fail(waiting, error)
            return
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(result)

    async def _alone(self, waiting: _Waiting) -> None:
        if waiting.future.done():  # cancelled: its job was not created
            return
        try:
            result = (await self._rpc([waiting]))[0]
        except Exception as exc:  # the server's answer, or the channel closed meanwhile
            _fail(waiting, exc)
            return
        if not waiting.future.done():
            waiting.future.set_result(result)

    async def _rpc(self, batch: list[_Waiting]) -> list[pb.EnqueueJobResponse]:
        """One EnqueueJob, or one BatchEnqueueJobs for several, under the earliest deadline."""
        left = time_left(batch, asyncio.get_running_loop().time())
        metadata = tuple(self._settings.metadata)
        self.sent += 1
        try:
            if len(batch) == 1:
                one = await self._stub.EnqueueJob(batch[0].request, timeout=left, metadata=metadata)
                return [one]
            merged = merged_request(batch)
            reply = await self._stub.BatchEnqueueJobs(merged, timeout=left, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err
        except asyncio.CancelledError as err:
            raise cut_short(err) from None
        return list(reply.results)


def _fail(waiting: _Waiting, exc: BaseException) -> None:
    if waiting.future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        waiting.future.cancel()
    else:
        waiting.future.set_exception(exc)
