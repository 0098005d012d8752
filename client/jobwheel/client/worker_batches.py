"""The worker SDK's round trips in batches: outcomes and heartbeats of many jobs per call.

Outcomes queue up while calls are in flight (two at most) and go together in the next one
(CompleteJobs, FailJobs: up to `max_batch` items), after waiting at most `delay` seconds for
neighbours: a worker running many short jobs pays one round trip, and the server one
transaction, for many.
Against a server without the batch RPCs (UNIMPLEMENTED) every item goes by the single-job RPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import code_pb2
from jobwheel.v1 import worker_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2_grpc

log = logging.getLogger("jobwheel.worker")
CALL_TIMEOUT = 10.0
# the server's limit of items per batch call (worker_service.proto)
MAX_BATCH = 1000
# what one report call carries at most, encoded: the server receives at most 4 MiB a message
# (results of up to 1 MiB each: four of them already fill one)
MAX_BATCH_BYTES = 3 << 20
# report calls of one kind out at once
INFLIGHT = 2
# The server's answer is final for these: reporting again cannot help.
GONE = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
RELEASE_REASON = "the worker stopped"
STOPPED = "WorkerStopped: the worker stopped first"  # a release, to a server without ReleaseJobs
_GONE_CODES = (code_pb2.FAILED_PRECONDITION, code_pb2.NOT_FOUND)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one report: stored (`ok`), refused for good (`gone`: the lease is
    lost; `invalid`: the report itself, say a result past the server's limits), or neither
    (given up after retries)."""

    ok: bool
    gone: bool = False
    message: str = ""
    invalid: bool = False


def outcome_of(status: pb.ItemStatus) -> Outcome:
    if status.code == code_pb2.OK:
        return Outcome(True)
    try:
        code = code_pb2.Code.Name(status.code)
    except ValueError:
        code = str(status.code)
    gone = status.code in _GONE_CODES
    invalid = status.code == code_pb2.INVALID_ARGUMENT
    return Outcome(False, gone, f"{code} {status.reason}: {status.message}", invalid)


def _error_outcome(err: grpc.aio.AioRpcError) -> Outcome:
    invalid = err.code() is grpc.StatusCode.INVALID_ARGUMENT
    return Outcome(False, err.code() in GONE, f"{err.code().name}: {err.details()}", invalid)


class Batches:
    """Sends the outcomes of one worker, batched. `give_up` (seconds) bounds the retries of
    transient errors (a report later than the lease is refused anyway)."""

    def __init__(
        self,
        stub: worker_service_pb2_grpc.WorkerServiceStub,
        worker_id: str,
        *,
        max_batch: int,
        delay: float,
        give_up: float,
    ) -> None:
        self.stub = stub
        self.worker_id = worker_id
        self.max_batch = max(1, min(max_batch, MAX_BATCH))
        self.delay = delay
        self.give_up = give_up
        self.batched = True  # False once the server answered UNIMPLEMENTED
        self._complete = _Queue(self._send_completions)
        self._fail = _Queue(self._send_failures)
        self._release = _Queue(self._send_releases)
        self.releases = True  # False once the server answered ReleaseJobs with UNIMPLEMENTED
        self.calls = 0  # report calls made, for tests and benchmarks

    async def complete(self, item: pb.JobCompletion) -> Outcome:
        return await self._complete.put(item, self)

    async def fail(self, item: pb.JobFailure) -> Outcome:
        return await self._fail.put(item, self)

    async def release(self, item: pb.JobRelease) -> Outcome:
        """Gives a lease back (ReleaseJobs: the job runs again, its attempt is not charged).
        A server without ReleaseJobs gets a retryable failure instead, which is charged."""
        return await self._release.put(item, self)

    async def _send_releases(self, items: list[pb.JobRelease]) -> list[Outcome]:
        if self.releases:
            req = pb.ReleaseJobsRequest(
                worker_id=self.worker_id, releases=items, reason=RELEASE_REASON
            )
            resp = await self._retrying(self.stub.ReleaseJobs, req, self._no_releases)
            if isinstance(resp, pb.ReleaseJobsResponse):
                return [outcome_of(r.status) for r in resp.results]
            if resp is not None:
                return [resp] * len(items)
        failures = [
            pb.JobFailure(job_id=i.job_id, epoch=i.epoch, error=STOPPED, retryable=True)
            for i in items
        ]
        return await self._send_failures(failures)

    def _no_releases(self) -> None:
        log.info("the server has no ReleaseJobs: jobs a stop cuts short are reported as failed")
        self.releases = False

    def _no_batches(self) -> None:
        log.info("the server has no batch reports: reporting job by job")
        self.batched = False

    async def _send_completions(self, items: list[pb.JobCompletion]) -> list[Outcome]:
        if self.batched:
            req = pb.CompleteJobsRequest(worker_id=self.worker_id, completions=items)
            resp = await self._retrying(self.stub.CompleteJobs, req)
            if isinstance(resp, pb.CompleteJobsResponse):
                return [outcome_of(r.status) for r in resp.results]
            if resp is not None:
                return [resp] * len(items)
        return list(
            await asyncio.gather(
                *(
                    self._single(
                        self.stub.CompleteJob,
                        pb.CompleteJobRequest(
                            job_id=i.job_id,
                            epoch=i.epoch,
                            worker_id=self.worker_id,
                            result=i.result if i.HasField("result") else None,
                        ),
                    )
                    for i in items
                )
            )
        )

    async def _send_failures(self, items: list[pb.JobFailure]) -> list[Outcome]:
        if self.batched:
            req = pb.FailJobsRequest(worker_id=self.worker_id, failures=items)
            resp = await self._retrying(self.stub.FailJobs, req)
            if isinstance(resp, pb.FailJobsResponse):
                return [outcome_of(r.status) for r in resp.results]
            if resp is not None:
                return [resp] * len(items)
        singles = []
        for i in items:
            single = pb.FailJobRequest(
                job_id=i.job_id, epoch=i.epoch, worker_id=self.worker_id, error=i.error
            )
            if i.HasField("retryable"):
                single.retryable = i.retryable
            if i.HasField("retry_after"):
                single.retry_after.CopyFrom(i.retry_after)
            singles.append(self._single(self.stub.FailJob, single))
        return list(await asyncio.gather(*singles))

    async def _retrying(
        self,
        call: Callable[..., Awaitable[Any]],
        request: Any,
        unimplemented: Callable[[], None] | None = None,
    ) -> Any:
        """The response; an Outcome for every item when the call failed for good; None
        when the server does not have the RPC (`unimplemented` is told; by default the
        batch RPCs are given up, and the caller sends singles)."""
        give_up = time.monotonic() + self.give_up
        pause = 0.1
        while True:
            try:
                self.calls += 1
                return await call(request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as err:
                if err.code() is grpc.StatusCode.UNIMPLEMENTED:
                    (unimplemented or self._no_batches)()
                    return None
                if err.code() in GONE or err.code() is grpc.StatusCode.INVALID_ARGUMENT:
                    return _error_outcome(err)
                if time.monotonic() + pause > give_up:
                    return _error_outcome(err)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _single(self, call: Callable[..., Awaitable[Any]], request: Any) -> Outcome:
        give_up = time.monotonic() + self.give_up
        pause = 0.1
        while True:
            try:
                self.calls += 1
                await call(request, timeout=CALL_TIMEOUT)
                return Outcome(True)
            except grpc.aio.AioRpcError as err:
                final = err.code() in GONE or err.code() is grpc.StatusCode.INVALID_ARGUMENT
                if final or time.monotonic() + pause > give_up:
                    return _error_outcome(err)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)


class _Queue:
    """Items waiting for a call of one kind; up to INFLIGHT calls out at a time (the server
    merges concurrent ones into one transaction, and PostgreSQL overlaps them)."""

    def __init__(self, send: Callable[[list[Any]], Awaitable[list[Outcome]]]) -> None:
        self.send = send
        self.pending: list[tuple[Any, asyncio.Future[Outcome]]] = []
        self.flushers: set[asyncio.Task[None]] = set()
        self.gathering = False  # a flusher waits for neighbours: new items join it

    async def put(self, item: Any, batches: Batches) -> Outcome:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.pending.append((item, fut))
        if not self.gathering and len(self.flushers) < INFLIGHT:
            flusher = asyncio.create_task(self._flush(batches))
            self.flushers.add(flusher)
            flusher.add_done_callback(self.flushers.discard)
        # A job cancelled while its report is out cancels only its own future: the batch goes
        # on (the flusher skips futures already done), so no shield is needed.
        return await fut

    async def _flush(self, batches: Batches) -> None:
        if batches.delay > 0 and len(self.pending) < batches.max_batch:
            self.gathering = True
            try:
                await asyncio.sleep(batches.delay)  # neighbours finishing now join this call
            finally:
                self.gathering = False
        while self.pending:
            n = _fitting(self.pending, batches.max_batch)
            taken = self.pending[:n]
            del self.pending[:n]
            try:
                outcomes = await self.send([item for item, _ in taken])
            except Exception as exc:  # a bug or an unexpected error: nobody waits forever
                log.exception("reporting %d outcome(s) failed", len(taken))
                outcomes = [Outcome(False, message=repr(exc))] * len(taken)
            for (_, fut), outcome in zip(taken, outcomes, strict=True):
                if not fut.done():
                    fut.set_result(outcome)


def _fitting(pending: list[tuple[Any, asyncio.Future[Outcome]]], most: int) -> int:
    """How many of the first `pending` items go in one call: at most `most`, and no more
    than MAX_BATCH_BYTES encoded (at least one)."""
    size = 0
    for n, (item, _) in enumerate(pending[:most]):
        size += item.ByteSize() + 8  # the field's tag and length
        if size > MAX_BATCH_BYTES and n:
            return n
    return min(len(pending), most)


async def heartbeat_batch(
    stub: worker_service_pb2_grpc.WorkerServiceStub,
    worker_id: str,
    lease: Any,
    beats: Sequence[pb.JobHeartbeat],
) -> list[pb.HeartbeatJobsResult] | None:
    """One HeartbeatJobs call per MAX_BATCH beats; None when the server has none
    (UNIMPLEMENTED). Other errors are raised."""
    out: list[pb.HeartbeatJobsResult] = []
    for start in range(0, len(beats), MAX_BATCH):
        req = pb.HeartbeatJobsRequest(
            worker_id=worker_id,
            lease_duration=lease,
            heartbeats=beats[start : start + MAX_BATCH],
        )
        try:
            resp = await stub.HeartbeatJobs(req, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            if err.code() is grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise
        out.extend(resp.results)
    return out
