"""Remote workers in Python: lease jobs from a jobwheel server and run them in this process.

    from jobwheel.client.worker import Worker

    worker = Worker("127.0.0.1:50051", queues=["emails"], concurrency=20)

    @worker.task("send_email")
    async def send_email(payload, ctx):      # or a plain function; `ctx` is optional
        ...
        return {"sent": True}                # the job's result (any JSON value)

    worker.run_forever()                     # until SIGTERM or Ctrl-C

A handler that raises fails the attempt with "Type: message" and the job's retry policy
decides what follows; raise `JobFailed(..., retryable=False)` to fail it for good.

Throughput: the worker leases ahead of its handlers (`prefetch`: up to that many jobs wait in
memory, no more than it finished in the last second, so slow handlers hoard nothing) and
reports outcomes in batches (CompleteJobs/FailJobs: up to `report_batch` per call, each call
waiting at most `report_delay` seconds for neighbours). With the defaults a worker of no-op
handlers drains thousands of jobs a second; `prefetch=0` leases only for free slots.

Leases are kept alive by heartbeats every lease/3 (all due ones in one HeartbeatJobs call).
When a heartbeat says the job was cancelled, or that the lease is gone (it expired and the job
was given to another worker), the handler is cancelled (`ctx.cancelled` turns true for plain
functions, which run in threads) and nothing is reported: the server has moved on.

Plain functions run in the worker's own pool of `concurrency` threads. A thread cannot be
stopped: one cut short (by a cancel, a lost lease or a stop) keeps its slot until it returns,
so no more than `concurrency` handlers ever run at once.

Stopping (`await worker.stop(grace)`, or SIGTERM under `run_forever`) leases nothing more and
gives the jobs it holds `grace` seconds (prefetched ones start meanwhile as slots free up).
Jobs still running (or not started) then are cancelled and given back (ReleaseJobs): each is
QUEUED again at once for another worker, and its attempt is on record as LOST without
counting against max_attempts, so a deploy uses up no job's retries. (Against a server
without ReleaseJobs they are reported as failed and retryable instead, "WorkerStopped: ...",
which counts.) Either way no job sits RUNNING until its lease expires. Under `run_forever`,
handler threads that still run then do not hold the process: it exits without them; a second
SIGTERM or SIGINT exits at once (the jobs still held run again when their leases expire).

Whatever a handler raises fails its attempt (SystemExit and KeyboardInterrupt too: one
handler never stops the worker). A result the server refuses (past 1 MiB, nested past 20
levels, NaN) fails the attempt for good, with the server's reason.

Against a server with TLS or tokens, pass `Connection.of(address, token=..., tls_ca=...)`
(jobwheel.client.connection) as the address, or set JOBWHEEL_TOKEN, JOBWHEEL_TLS_CA,
JOBWHEEL_TLS_CERT and JOBWHEEL_TLS_KEY. The worker needs a token with the role `worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from jobwheel.client import tracing
from jobwheel.client.connection import Connection
from jobwheel.client.convert import DurationLike, as_timedelta, to_duration, to_struct
from jobwheel.client.job_context import JobContext, JobFailed, error_text, payload_of
from jobwheel.client.worker_batches import (
    CALL_TIMEOUT,
    GONE,
    MAX_BATCH,
    Batches,
    Outcome,
    heartbeat_batch,
    outcome_of,
)
from jobwheel.v1 import job_pb2, worker_service_pb2_grpc
from jobwheel.v1 import worker_service_pb2 as pb

__all__ = ["JobContext", "JobFailed", "Worker", "payload_of"]

log = logging.getLogger("jobwheel.worker")
Handler = Callable[..., Any]
_GONE = GONE
_CALL_TIMEOUT = CALL_TIMEOUT
# LeaseJobs calls out at once: the next lease is asked for while the last one's jobs still
# wait, so the handlers do not run dry for a lease round trip
LEASES_INFLIGHT = 2
# a lease is asked for once a LEASE_SHARE-th of the prefetch has room
LEASE_SHARE = 2


@dataclass
class _Running:
    lease: pb.Lease
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    last_beat: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # the server said stop: report nothing
    # its handler's thread (a plain function), which holds the slot until it returns
    thread: Future[Any] | None = None
    # its handler runs and holds a slot (a stop cuts it short; a report it lets end)
    handling: bool = False


class Worker:
    def __init__(
        self,
        address: str | Connection | None = None,
        *,
        worker_id: str | None = None,
        queues: Iterable[str] = (),
        concurrency: int = 10,
        lease_duration: DurationLike = 30.0,
        poll_wait: DurationLike = 30.0,
        grace: float = 30.0,
        channel: grpc.aio.Channel | None = None,
        prefetch: int = 1000,
        report_batch: int = 1000,
        report_delay: float = 0.002,
    ) -> None:
        """`concurrency`: handlers running at once. `prefetch`: jobs leased ahead, waiting
        for a slot (at most as many as finished in the last second). `report_batch` (at most
        1000) and `report_delay` (seconds): outcomes per report call, and how long a report
        waits for neighbours.

        The defaults are sized for short jobs: a lease and a report cost the server a few
        milliseconds each whatever their size, so a worker of short jobs leases about
        prefetch/2 jobs a call (with up to two calls out: the next lease is asked for while
        the last one's jobs still wait) and reports up to 1000 a call. Slow handlers still
        hoard nothing: the prefetch is bounded by the jobs finished in the last second."""
        if concurrency <= 0:
            raise ValueError("concurrency must be positive")
        if prefetch < 0 or not 0 < report_batch <= MAX_BATCH or report_delay < 0:
            raise ValueError(
                f"need prefetch >= 0, 0 < report_batch <= {MAX_BATCH} and report_delay >= 0"
            )
        self.connection = Connection.of(address)
        self.address = self.connection.address
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.lease = as_timedelta(lease_duration).total_seconds()
        self.poll_wait = as_timedelta(poll_wait).total_seconds()
        self.grace = grace
        self.handlers: dict[str, tuple[Handler, bool]] = {}
        self._channel = channel
        self._own_channel = channel is None
        self._stub: worker_service_pb2_grpc.WorkerServiceStub | None = None
        self.prefetch = prefetch
        self.report_batch = report_batch
        self.report_delay = report_delay
        # every job held (leased and not yet reported): heartbeats go to all of them
        self._running: dict[str, _Running] = {}
        self._waiting: deque[_Running] = deque()  # leased, not started (prefetched)
        self._active = 0  # handlers running
        self._finished = [0, 0]  # handlers finished in the previous and the current second
        self._second = 0
        self._batches: Batches | None = None
        self._slot_free = asyncio.Event()
        self._stopping = False
        self._leasing: set[asyncio.Task[None]] = set()  # LeaseJobs calls out
        self._asked = 0  # jobs those calls asked for
        self._failures = 0  # LeaseJobs failures in a row
        self._done = asyncio.Event()
        self._stopper: asyncio.Future[None] | None = None
        self._pool: ThreadPoolExecutor | None = None  # plain functions' threads
        self._threads: set[Future[Any]] = set()  # handler threads not yet returned
        self.completed = 0  # jobs reported, for monitoring and benchmarks
        self.failed = 0

    # -- registration ------------------------------------------------------------------------

    def task(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: `fn(payload)` or `fn(payload, ctx)`, async or plain, runs `name` jobs."""

        def register(fn: Handler) -> Handler:
            self.register(name, fn)
            return fn

        return register

    def register(self, name: str, fn: Handler) -> None:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        wants_ctx = len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
        self.handlers[name] = (fn, wants_ctx)

    # -- running -----------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Runs until SIGTERM or SIGINT, then stops gracefully (see `stop`). Logs to stderr
        at INFO (start, stop) unless the program has configured logging itself."""
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
            await self.run()

        asyncio.run(main())
        if busy := sum(not thread.done() for thread in list(self._threads)):
            # threads cut short that never returned: the interpreter would wait for them
            log.warning("%d handler thread(s) still running: exiting without them", busy)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopper is not None:
            log.warning("%s again: exiting now; the jobs still held run again later", sig.name)
            logging.shutdown()
            os._exit(1)
        log.info(
            "%s: stopping; draining %d running job(s), %gs grace",
            sig.name,
            len(self._running),
            self.grace,
        )
        self._stopper = asyncio.ensure_future(self.stop())

    async def run(self) -> None:
        """Leases and runs jobs until `stop()`. Cancelling the task that runs it stops the
        worker without grace (its running and prefetched jobs are given back), then raises
        the cancellation."""
        if not self.handlers:
            raise RuntimeError("no task registered: use @worker.task(name)")
        log.info(
            "worker %s: server %s, queues %s, tasks %s, concurrency %d",
            self.worker_id,
            self.address,
            ", ".join(self.queues) or "(all)",
            ", ".join(sorted(self.handlers)),
            self.concurrency,
        )
        if self._channel is None:
            self._channel = self.connection.aio_channel()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="jobwheel-handler")
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(self._channel)
        self._batches = Batches(
            self._stub,
            self.worker_id,
            max_batch=self.report_batch,
            delay=self.report_delay,
            give_up=self.lease,
        )
        beats = asyncio.create_task(self._heartbeats())
        try:
            try:
                while not self._stopping:
                    free = self._room()
                    if free <= 0 or len(self._leasing) >= LEASES_INFLIGHT:
                        self._slot_free.clear()
                        await self._slot_free.wait()
                        continue
                    self._lease_ahead(min(free, 1000))
            except asyncio.CancelledError:
                # this task cancelled: a stop without grace, its jobs given back, then re-raised
                self._stopping, self.grace = True, 0.0
                await self._drain()
                raise
            await self._drain()
            log.info("worker %s stopped", self.worker_id)
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            if self._own_channel and self._channel is not None:
                await self._channel.close()
                self._channel = None
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            self._done.set()

    async def stop(self, grace: float | None = None) -> None:
        """Leases nothing more; running jobs get `grace` seconds, then are released."""
        if grace is not None:
            self.grace = grace
        self._stopping = True
        self._slot_free.set()
        await self._done.wait()

    async def _lease(self, free: int) -> list[pb.Lease]:
        assert self._stub is not None
        request = pb.LeaseJobsRequest(
            worker_id=self.worker_id,
            queues=self.queues,
            tasks=sorted(self.handlers),
            max_jobs=min(free, 1000),
            lease_duration=to_duration(self.lease),
            wait=to_duration(self.poll_wait),
        )
        resp = await self._stub.LeaseJobs(request, timeout=self.poll_wait + _CALL_TIMEOUT)
        return list(resp.leases)

    def _lease_ahead(self, n: int) -> None:
        """Starts a LeaseJobs call for `n` jobs; its leases are taken as it returns."""
        self._asked += n
        call = asyncio.create_task(self._lease_and_take(n))
        self._leasing.add(call)
        call.add_done_callback(self._leased)

    def _leased(self, call: asyncio.Task[None]) -> None:
        self._leasing.discard(call)
        self._slot_free.set()  # the run loop may lease again
        if not call.cancelled() and call.exception() is not None:
            log.error("leasing failed", exc_info=call.exception())

    async def _lease_and_take(self, n: int) -> None:
        try:
            leases = await self._lease(n)
        except grpc.aio.AioRpcError as err:
            self._failures += 1
            pause = min(5.0, 0.1 * 2 ** min(self._failures, 6))
            log.warning("LeaseJobs failed (%s); retrying in %.1fs", err.code(), pause)
            await asyncio.sleep(pause)  # holds this call's place: no storm of retries
            return
        finally:
            self._asked -= n
        self._failures = 0
        for held in leases:
            self._take(held)

    def _room(self) -> int:
        """How many jobs to lease now: free slots, plus prefetch up to what the handlers
        finished in the last second, less what is waiting or asked for; 0 while that is
        under a LEASE_SHARE-th of the prefetch (a lease costs the server about the same
        whatever its size), unless nothing is waiting or asked for."""
        self._tick()
        ahead = min(self.prefetch, max(self._finished[0], self._finished[1]))
        queued = len(self._waiting) + self._asked
        room = self.concurrency + ahead - self._active - queued
        if queued and room < ahead // LEASE_SHARE:
            return 0
        return room

    def _tick(self) -> None:
        second = int(time.monotonic())
        if second != self._second:
            self._finished = [self._finished[1] if second == self._second + 1 else 0, 0]
            self._second = second

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.grace
        # a long poll in flight would hold the stop for up to poll_wait: it is cancelled, and
        # the server gives back at once what a cancelled LeaseJobs leased
        for call in list(self._leasing):
            call.cancel()
        if self._leasing:
            await asyncio.wait(set(self._leasing))
        while self._running and time.monotonic() < deadline:
            self._slot_free.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_free.wait(), deadline - time.monotonic())
        for running in list(self._running.values()):
            # a handler still running is cut short; an outcome on its way is let through
            if running.task is not None and running.handling and not running.task.done():
                running.ctx._cancelled = True
                running.ctx.cancel_reason = "worker stopping"
                running.task.cancel()
        # never started: released like the jobs cut short (after the cancelling above, which
        # would otherwise cancel these releases before they begin)
        while self._waiting:
            running = self._waiting.popleft()
            running.task = asyncio.create_task(self._release(running))
        late = [r.task for r in self._running.values() if r.task is not None]
        if late:
            await asyncio.wait(late, timeout=_CALL_TIMEOUT + 5)

    # -- one job -----------------------------------------------------------------------------

    def _take(self, lease: pb.Lease) -> None:
        running = _Running(lease, JobContext(lease.job, lease.epoch, self.worker_id))
        stale = self._running.get(lease.job.id)
        if stale is not None:  # leased again after its lease was lost: the old attempt ends
            self._abandon(stale, "leased again")
        self._running[lease.job.id] = running
        if self._active < self.concurrency and not self._waiting:
            self._start(running)
        else:
            self._waiting.append(running)

    def _start(self, running: _Running) -> None:
        self._active += 1
        running.handling = True
        running.task = asyncio.create_task(self._traced(running))

    def _slot_done(self) -> None:
        """A handler finished: the next waiting job starts in its slot."""
        self._active -= 1
        self._tick()
        self._finished[1] += 1
        while self._waiting and self._active < self.concurrency:
            running = self._waiting.popleft()
            if not running.abandoned:
                self._start(running)
        self._slot_free.set()

    async def _traced(self, running: _Running) -> None:
        with tracing.attempt_span(running.lease, self.worker_id):  # the job's trace, if any
            await self._execute(running)

    async def _execute(self, running: _Running) -> None:
        job, ctx = running.lease.job, running.ctx
        try:
            try:
                result = await self._call(job, ctx, running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and not task.cancelling():
                    # raised by the handler itself (a future it awaited was cancelled)
                    self._free(running)
                    await self._fail(running, "CancelledError: raised by the handler", True, None)
                    return
                if running.abandoned or not self._stopping:
                    return  # cancelled or lease lost: the server expects nothing
                self._free(running)
                await self._give_back(running)
                return
            except JobFailed as exc:
                self._free(running)
                await self._fail(running, error_text(exc), exc.retryable, exc.retry_after)
                return
            except BaseException as exc:  # SystemExit too: one handler never stops the worker
                self._free(running)
                await self._fail(running, error_text(exc), True, None)
                return
            self._free(running)
            if running.abandoned:
                return
            item = pb.JobCompletion(job_id=job.id, epoch=ctx.epoch)
            if result is not None:  # None: no result (the server stores a JSON null as none)
                try:
                    item.result.CopyFrom(json_format.ParseDict(result, struct_pb2.Value()))
                except (json_format.ParseError, TypeError, ValueError) as exc:
                    error = f"TypeError: result is not JSON: {exc}"
                    await self._fail(running, error, False, None)
                    return
            assert self._batches is not None
            outcome = await self._batches.complete(item)
            if outcome.invalid and not running.abandoned:  # say too large or deep: for good
                error = f"ResultError: the server refused the result: {outcome.message}"
                await self._fail(running, error, False, None)
            elif self._reported(running, "CompleteJob", outcome):
                self.completed += 1
        finally:
            self._free(running)
            self._forget(running)
            self._slot_free.set()

    def _forget(self, running: _Running) -> None:
        """Drops `running` from the jobs held, unless a later lease of its job replaced it."""
        if self._running.get(running.lease.job.id) is running:
            del self._running[running.lease.job.id]

    async def _release(self, running: _Running) -> None:
        try:
            await self._give_back(running)
        finally:
            self._forget(running)

    async def _give_back(self, running: _Running) -> None:
        """Returns a job the stop cut short (or that never began) to the queue."""
        if running.abandoned:
            return
        item = pb.JobRelease(job_id=running.lease.job.id, epoch=running.ctx.epoch)
        assert self._batches is not None
        self._reported(running, "ReleaseJobs", await self._batches.release(item))

    def _free(self, running: _Running) -> None:
        """Frees the handler's slot (once) before its outcome is reported; a thread cut
        short frees it when it returns."""
        if running.handling:
            if running.thread is not None and not running.thread.done():
                loop = asyncio.get_running_loop()
                running.thread.add_done_callback(
                    lambda _: loop.call_soon_threadsafe(self._free, running)
                )
                return
            running.handling = False
            self._slot_done()

    async def _call(self, job: job_pb2.Job, ctx: JobContext, running: _Running) -> Any:
        entry = self.handlers.get(job.task)
        if entry is None:  # asked only for registered tasks, so only if the server erred
            raise JobFailed(f"no handler for task {job.task!r} in worker {self.worker_id}")
        fn, wants_ctx = entry
        payload = payload_of(job.payload)
        args = (payload, ctx) if wants_ctx else (payload,)
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        return await self._in_thread(running, fn, args)

    async def _in_thread(self, running: _Running, fn: Handler, args: tuple[Any, ...]) -> Any:
        """`fn(*args)` in the worker's pool, in this task's context (its trace)."""
        assert self._pool is not None
        running.thread = thread = self._pool.submit(contextvars.copy_context().run, fn, *args)
        self._threads.add(thread)
        thread.add_done_callback(self._threads.discard)
        return await asyncio.wrap_future(thread)

    async def _fail(
        self, running: _Running, error: str, retryable: bool, retry_after: DurationLike | None
    ) -> None:
        if running.abandoned:
            return
        item = pb.JobFailure(
            job_id=running.lease.job.id, epoch=running.ctx.epoch, error=error, retryable=retryable
        )
        if retry_after is not None:
            item.retry_after.CopyFrom(to_duration(retry_after))
        assert self._batches is not None
        if self._reported(running, "FailJob", await self._batches.fail(item)):
            self.failed += 1

    def _reported(self, running: _Running, method: str, outcome: Outcome) -> bool:
        """True when the outcome was stored; logs why not otherwise."""
        if outcome.ok:
            return True
        job_id = running.lease.job.id
        if outcome.gone:
            log.warning(
                "%s of job %s refused (%s): the lease was lost", method, job_id, outcome.message
            )
        else:
            log.error("%s of job %s failed: %s", method, job_id, outcome.message)
        return False

    # -- heartbeats ----------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        every = self.lease / 3
        while True:
            await asyncio.sleep(min(every / 2, 1.0))
            now = time.monotonic()
            due = [r for r in self._running.values() if now - r.last_beat >= every]
            if due:
                try:
                    await self._beat_all(due)
                except grpc.aio.AioRpcError as err:
                    log.info("heartbeats of %d job(s) failed (%s); retrying", len(due), err.code())

    async def _beat_all(self, due: list[_Running]) -> None:
        """One HeartbeatJobs call for all of `due` (job by job on an older server)."""
        assert self._stub is not None
        beats = []
        for running in due:
            ctx = running.ctx
            beat = pb.JobHeartbeat(job_id=ctx.job_id, epoch=ctx.epoch)
            progress, ctx._progress = ctx._progress, None
            if progress is not None:
                beat.progress.CopyFrom(to_struct(progress))
            beats.append(beat)
        lease = to_duration(self.lease)
        results = None
        if self._batches is None or self._batches.batched:
            results = await heartbeat_batch(self._stub, self.worker_id, lease, beats)
        if results is None:  # an older server: job by job
            await asyncio.gather(*(self._beat(r, b) for r, b in zip(due, beats, strict=True)))
            return
        for running, result in zip(due, results, strict=True):
            outcome = outcome_of(result.status)
            if outcome.ok:
                self._beaten(running, result.cancel_requested, result.cancel_reason)
            elif outcome.gone:
                log.warning(
                    "job %s abandoned: lease lost (%s)", running.ctx.job_id, outcome.message
                )
                self._abandon(running, "lease lost")
            else:
                log.error("heartbeat of job %s refused: %s", running.ctx.job_id, outcome.message)

    async def _beat(self, running: _Running, beat: pb.JobHeartbeat) -> None:
        assert self._stub is not None
        ctx = running.ctx
        request = pb.HeartbeatJobRequest(
            job_id=ctx.job_id,
            epoch=ctx.epoch,
            worker_id=self.worker_id,
            lease_duration=to_duration(self.lease),
        )
        if beat.HasField("progress"):
            request.progress.CopyFrom(beat.progress)
        try:
            resp = await self._stub.HeartbeatJob(request, timeout=_CALL_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            if err.code() in _GONE:
                log.warning(
                    "job %s abandoned: lease lost (%s: %s)",
                    ctx.job_id,
                    err.code().name,
                    err.details(),
                )
                self._abandon(running, "lease lost")
            else:
                log.info("heartbeat of job %s failed (%s); retrying", ctx.job_id, err.code())
            return
        self._beaten(running, resp.cancel_requested, resp.cancel_reason)

    def _beaten(self, running: _Running, cancel_requested: bool, cancel_reason: str) -> None:
        running.last_beat = time.monotonic()
        if cancel_requested:
            log.info("job %s cancelled: %s", running.ctx.job_id, cancel_reason or "no reason")
            self._abandon(running, cancel_reason or "cancelled")

    def _abandon(self, running: _Running, reason: str) -> None:
        running.abandoned = True
        running.ctx._cancelled = True
        running.ctx.cancel_reason = reason
        if running.task is not None:
            running.task.cancel()
        elif running in self._waiting:  # not started: dropped (the server expects nothing)
            self._waiting.remove(running)
            self._forget(running)
            self._slot_free.set()
