"""Concurrent `enqueue_job` calls of one blocking Client, made from many threads, sent together
as one BatchEnqueueJobs: the blocking form of jobwheel.client.coalescing, with its limits
(`MAX_IN_FLIGHT`, `MAX_JOBS`, `MAX_BYTES`) and its promises to each caller.

A call goes out at once, as EnqueueJob, while fewer than `MAX_IN_FLIGHT` (2) enqueues of this
client are on their way and none waits: a lone caller waits for nothing. Other calls wait;
when an enqueue on its way returns, the oldest waiting thread sends the calls that wait, its
own first, as one call, and hands each of the other threads its result. No thread of its own
is started: the threads that call do all the sending.

Each caller gets its own result or error, as in the asyncio client: a batch refused for what
its jobs hold is sent again call by call (each thread sends its own); any other failure is
every caller's; a call's deadline runs from its start, and one that passes while the call
waits fails it unsent. Calls with an idempotency key, or made inside a trace span, go alone.

An exception that is not the server's answer, raised in a caller's thread (KeyboardInterrupt
on Ctrl-C, an exception from a signal handler, a client closed under the call), is that
caller's alone: a call interrupted while it waits leaves unsent, and a batch it was to lead
goes to the calls behind it; when the thread sending a batch is interrupted, the others in it
fail with Cancelled (their jobs may have been created, as when a single call is cut off).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from jobwheel.client.calls import Call
from jobwheel.client.coalescing import (
    ATTRIBUTABLE,
    Coalescer,
    goes_alone,
    merged_request,
    time_left,
)
from jobwheel.client.errors import (
    Cancelled,
    DeadlineExceeded,
    Internal,
    JobwheelError,
    from_rpc_error,
)
from jobwheel.v1 import job_service_pb2 as pb

Run = Callable[[Call[pb.EnqueueJobResponse]], pb.EnqueueJobResponse]

# what a waiting call is told when its thread wakes
_WAITS, _LEADS, _ALONE, _DONE = range(4)


@dataclass(slots=True, eq=False)  # compared by identity: removed from the deque by it
class _Waiting:
    """A call waiting in its caller's thread, until it is told (under the coalescer's lock)
    to send a batch it leads, to go alone, or its outcome."""

    request: pb.EnqueueJobRequest
    deadline: float | None  # time.monotonic()
    size: int
    state: int = _WAITS
    batch: list[_Waiting] = field(default_factory=list)  # when it leads: its own first
    result: pb.EnqueueJobResponse | None = None
    error: BaseException | None = None
    woken: threading.Event = field(default_factory=threading.Event)

    def settled(self) -> bool:
        return self.state == _DONE

    def fail(self, exc: BaseException) -> None:
        self.tell(_DONE, error=exc)

    def tell(
        self,
        state: int,
        *,
        result: pb.EnqueueJobResponse | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.state, self.result, self.error = state, result, error
        self.woken.set()


class EnqueueCoalescer(Coalescer[Run, _Waiting]):
    """`coalescer(call)` for an EnqueueJob `Call`, from any thread (see the module's
    docstring and coalescing.Coalescer)."""

    def _start(self) -> None:
        self._lock = threading.Lock()  # guards the waiting calls, the count on their way, sent

    def __call__(self, call: Call[pb.EnqueueJobResponse]) -> pb.EnqueueJobResponse:
        request = call.request
        assert isinstance(request, pb.EnqueueJobRequest)
        if goes_alone(request):
            self._count()
            return self._run(call)
        timeout = self._settings.timeout
        waiting = _Waiting(
            request, None if timeout is None else time.monotonic() + timeout, request.ByteSize()
        )
        with self._lock:
            alone = self._sending < self._max_in_flight and not self._waiting
            if alone:
                self._sending += 1
                self.sent += 1
            else:
                self._waiting.append(waiting)
        if alone:
            try:
                return self._run(call)
            finally:
                self._sent()
        return self._wait(waiting)

    def _count(self) -> None:
        with self._lock:
            self.sent += 1

    def _sent(self) -> None:
        """A call on its way returned: the oldest waiting call leads the next batch."""
        with self._lock:
            self._sending -= 1
            while self._waiting and self._sending < self._max_in_flight:
                batch = self._take(time.monotonic())
                if batch:
                    self._sending += 1
                    self.sent += 1
                    batch[0].batch = batch
                    batch[0].tell(_LEADS)

    def _wait(self, waiting: _Waiting) -> pb.EnqueueJobResponse:
        try:
            self._wait_turn(waiting)
            if waiting.state == _LEADS:
                self._lead(waiting)
            if waiting.state == _ALONE:  # its batch (perhaps the one it led) was refused
                self._alone(waiting)
        except BaseException:  # this thread's own (Ctrl-C, say): the others go on without it
            self._leave(waiting)
            raise
        if waiting.error is not None:
            raise waiting.error
        assert waiting.result is not None
        return waiting.result

    def _wait_turn(self, waiting: _Waiting) -> None:
        deadline = waiting.deadline
        while not waiting.woken.wait(_left(deadline)):
            with self._lock:  # the deadline passed: unsent, it fails; sent, its batch's ends it
                if waiting.state == _WAITS and waiting in self._waiting:
                    self._waiting.remove(waiting)
                    waiting.fail(_late())
            deadline = None  # failed, or on its way: its batch's outcome comes

    def _leave(self, waiting: _Waiting) -> None:
        """Its thread was interrupted: a call still waiting leaves the queue, and a batch it
        was told to lead and had not taken goes back first in line, with its place."""
        with self._lock:
            if waiting.state == _WAITS and waiting in self._waiting:
                self._waiting.remove(waiting)
            if waiting.state != _LEADS or not waiting.batch:
                return  # nothing waits on this thread (a batch it took, _lead settles)
            rest, waiting.batch = waiting.batch[1:], []
            waiting.state = _DONE
            self._waiting.extendleft(reversed(rest))
        self._sent()

    def _lead(self, waiting: _Waiting) -> None:
        """Sends the batch `waiting` was told to lead; then its place goes to the next."""
        batch, waiting.batch = waiting.batch, []
        try:
            self._send(batch)
        except BaseException as exc:  # not the server's answer: the leader's own to raise
            for other in batch[1:]:
                if other.state == _WAITS:
                    other.fail(_cut_off(exc))
            raise
        finally:
            self._sent()

    def _send(self, batch: list[_Waiting]) -> None:
        """Sends `batch` (its leader first) and tells each call its outcome; raises what is
        not the server's answer."""
        try:
            results = self._rpc(batch)
        except JobwheelError as err:
            attributable = len(batch) > 1 and err.code in ATTRIBUTABLE  # nothing was created
            for waiting in batch:
                if attributable:
                    waiting.tell(_ALONE)
                else:
                    waiting.fail(err)
        else:
            if len(results) != len(batch):
                error = Internal(f"{len(results)} results for {len(batch)} jobs")
                for waiting in batch:
                    waiting.fail(error)
                return
            for waiting, result in zip(batch, results, strict=True):
                waiting.tell(_DONE, result=result)

    def _alone(self, waiting: _Waiting) -> None:
        """Sends the call again on its own (its batch was refused for what a job held)."""
        try:
            self._count()
            waiting.tell(_DONE, result=self._rpc([waiting])[0])
        except JobwheelError as err:
            waiting.fail(err)

    def _rpc(self, batch: list[_Waiting]) -> list[pb.EnqueueJobResponse]:
        """One EnqueueJob, or one BatchEnqueueJobs for several, under the earliest deadline."""
        left = time_left(batch, time.monotonic())
        metadata = tuple(self._settings.metadata)
        try:
            if len(batch) == 1:
                return [self._stub.EnqueueJob(batch[0].request, timeout=left, metadata=metadata)]
            merged = merged_request(batch)
            reply = self._stub.BatchEnqueueJobs(merged, timeout=left, metadata=metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return list(reply.results)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _late() -> JobwheelError:
    return DeadlineExceeded("deadline exceeded while waiting to be sent")


def _cut_off(exc: BaseException) -> JobwheelError:
    """What the other calls of a batch get when its sending thread raised `exc`."""
    error = Cancelled(
        f"the thread sending this job in a batch raised {type(exc).__name__}: {exc} "
        "(the job may have been created)"
    )
    error.__cause__ = exc
    return error
