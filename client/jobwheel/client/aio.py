"""The asyncio client (grpc.aio): the same methods as `Client`, awaitable.

This module is the source of both clients: `make gen` writes sync.py from it (see
tools/gen_sync_client.py), so a change here is made once and a test fails on drift.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import aclosing
from typing import Any, Self, TypeVar, Unpack

import grpc
from jobwheel.client import calls
from jobwheel.client.calls import EnqueueArgs, ScheduleArgs
from jobwheel.client.coalescing import EnqueueCoalescer
from jobwheel.client.connection import Connection
from jobwheel.client.convert import DurationLike, TimeLike
from jobwheel.client.errors import JobwheelError, NotFound, Unavailable, cut_short, from_rpc_error
from jobwheel.client.filters import TERMINAL_STATES, FilterArgs
from jobwheel.client.policy import DEFAULT_TIMEOUT, RETRYABLE, Retry, WatchCursor, events_of
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

T = TypeVar("T")
Filter = job_pb2.JobFilter
Metadata = Sequence[tuple[str, str]]


class AsyncClient:
    """A JobService client. Use as an async context manager, or await `close()`.

    `coalesce` (default True): concurrent `enqueue_job` calls without an idempotency key leave
    together as one BatchEnqueueJobs: those made (from other tasks or threads) while two are
    on their way, and with the asyncio client those made in one turn of the event loop; each
    caller still gets its own job or error (see jobwheel.client.coalescing and
    jobwheel.client.coalescing_threads).

    `address` is HOST:PORT (default: $JOBWHEEL_SERVER, else 127.0.0.1:50051) or a
    `Connection`, which also carries a token and TLS files (see `Connection.of`; by default
    JOBWHEEL_TOKEN and JOBWHEEL_TLS_*). `timeout` is the deadline of each unary call in
    seconds (None: none); watches have none unless asked. Reads and other idempotent calls
    are retried after UNAVAILABLE or ABORTED per `retry`.
    """

    def __init__(
        self,
        address: str | Connection | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        metadata: Metadata = (),
        watch_reconnects: int = 30,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        coalesce: bool = True,
    ) -> None:
        self.connection = Connection.of(address)
        self.address = self.connection.address
        self._own_channel = channel is None
        self._channel = channel if channel is not None else self.connection.aio_channel()
        self._stub = job_service_pb2_grpc.JobServiceStub(self._channel)
        self.timeout = timeout
        self.retry = retry or Retry()
        self.metadata = tuple(metadata)
        self.watch_reconnects = watch_reconnects
        self._sleep = sleep
        self._enqueues = coalesce and EnqueueCoalescer(self._stub, self._run, self)

    async def close(self) -> None:
        if self._own_channel:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, call: calls.Call[T]) -> T:
        method = getattr(self._stub, call.method)
        delays = iter(self.retry.delays() if call.idempotent else ())
        while True:
            try:
                resp = await method(call.request, timeout=self.timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as err:
                delay = next(delays, None) if err.code() in RETRYABLE else None
                if delay is None:
                    raise from_rpc_error(err) from err
                await self._sleep(delay)
                continue
            except asyncio.CancelledError as err:
                raise cut_short(err) from None
            return call.unpack(resp)

    # -- jobs -----------------------------------------------------------------

    async def enqueue_job(self, task: str, **options: Unpack[EnqueueArgs]) -> pb.EnqueueJobResponse:
        """Creates a job; `.job` is it, `.already_exists` says an idempotency key matched."""
        call = calls.enqueue_job(task, options)
        if self._enqueues:
            return await self._enqueues(call)
        return await self._run(call)

    async def batch_enqueue_jobs(
        self, jobs: Iterable[pb.EnqueueJobRequest]
    ) -> list[pb.EnqueueJobResponse]:
        """Creates many jobs at once; build each with `jobwheel.client.enqueue_request`."""
        return await self._run(calls.batch_enqueue_jobs(jobs))

    async def get_job(self, job_id: str) -> job_pb2.Job:
        return await self._run(calls.get_job(job_id))

    async def list_jobs(
        self,
        filter: Filter | None = None,
        *,
        page_size: int = 0,
        page_token: str = "",
        order: int = 0,
        **where: Unpack[FilterArgs],
    ) -> pb.ListJobsResponse:
        """One page; `filter` and/or keyword filters (states=["failed"], queues=[...])."""
        return await self._run(calls.list_jobs(filter, where, page_size, page_token, order))

    async def iter_jobs(
        self,
        filter: Filter | None = None,
        *,
        page_size: int = 0,
        order: int = 0,
        limit: int | None = None,
        **where: Unpack[FilterArgs],
    ) -> AsyncIterator[job_pb2.Job]:
        """Every matching job (at most `limit`), fetching pages as needed."""
        token, seen = "", 0
        while True:
            page = await self.list_jobs(
                filter, page_size=page_size, page_token=token, order=order, **where
            )
            for job in page.jobs:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield job
            token = page.next_page_token
            if not token:
                return

    async def cancel_job(self, job_id: str, reason: str = "") -> job_pb2.Job:
        return await self._run(calls.cancel_job(job_id, reason))

    async def retry_job(self, job_id: str, delay: DurationLike | None = None) -> job_pb2.Job:
        return await self._run(calls.retry_job(job_id, delay))

    async def reschedule_job(
        self,
        job_id: str,
        schedule: job_pb2.Schedule | None = None,
        **when: Unpack[ScheduleArgs],
    ) -> job_pb2.Job:
        """Replaces the schedule: `at=`/`delay=` moves a one-off job; `cron=`/`every=` etc."""
        return await self._run(calls.reschedule_job(job_id, schedule, when))

    async def trigger_job(self, job_id: str) -> job_pb2.Job:
        return await self._run(calls.by_id("TriggerJob", job_id))

    async def pause_job(self, job_id: str) -> job_pb2.Job:
        return await self._run(calls.by_id("PauseJob", job_id))

    async def resume_job(self, job_id: str) -> job_pb2.Job:
        return await self._run(calls.by_id("ResumeJob", job_id))

    async def delete_job(self, job_id: str) -> None:
        await self._run(calls.delete_job(job_id))

    async def list_job_attempts(
        self, job_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListJobAttemptsResponse:
        return await self._run(calls.list_job_attempts(job_id, page_size, page_token))

    async def iter_job_attempts(
        self, job_id: str, *, page_size: int = 0
    ) -> AsyncIterator[job_pb2.Attempt]:
        token = ""
        while True:
            page = await self.list_job_attempts(job_id, page_size=page_size, page_token=token)
            for attempt in page.attempts:
                yield attempt
            token = page.next_page_token
            if not token:
                return

    async def get_job_stats(
        self, filter: Filter | None = None, **where: Unpack[FilterArgs]
    ) -> pb.GetJobStatsResponse:
        return await self._run(calls.get_job_stats(filter, where))

    async def preview_schedule(
        self,
        schedule: job_pb2.Schedule | None = None,
        *,
        count: int = 0,
        after: TimeLike | None = None,
        **when: Unpack[ScheduleArgs],
    ) -> list[pb.FireTime]:
        return await self._run(calls.preview_schedule(schedule, count, after, when))

    async def wait_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the gRPC deadline, as in grpc.aio)
        on_change: Callable[[job_pb2.Job], None] | None = None,
    ) -> job_pb2.Job:
        """Follows the job with WatchJobs until it is COMPLETED, FAILED or CANCELLED and
        returns it. `on_change` sees the job as it is, then after every change. Raises
        NotFound for an unknown (or deleted) job, DeadlineExceeded after `timeout` seconds."""
        stream = self.watch_jobs(ids=[job_id], include_snapshot=True, timeout=timeout)
        seen = False
        async with aclosing(stream):
            async for resp in stream:
                if resp.WhichOneof("kind") == "snapshot_end" and not seen:
                    await self.get_job(job_id)  # NOT_FOUND, with the server's details
                for event in events_of(resp):
                    if event.type == job_pb2.JOB_EVENT_TYPE_DELETED:
                        raise NotFound(f"job {job_id!r} was deleted")
                    seen = True
                    if on_change is not None:
                        on_change(event.job)
                    if event.job.state in TERMINAL_STATES:
                        return event.job
        raise Unavailable("the watch ended")  # watch_jobs reconnects: not reached

    # -- watch ----------------------------------------------------------------

    async def watch_jobs(
        self,
        filter: Filter | None = None,
        *,
        include_snapshot: bool = False,
        since_revision: int = 0,
        heartbeats: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (the gRPC deadline, as in grpc.aio)
        on_reconnect: Callable[[JobwheelError, int], None] | None = None,
        **where: Unpack[FilterArgs],
    ) -> AsyncGenerator[pb.WatchJobsResponse, None]:
        """Streams changes; after a dropped connection it reconnects with `since_revision`
        set to the last revision seen, so no change is lost or repeated. Heartbeats are
        only yielded when `heartbeats` is true. `timeout` (seconds, None: none) bounds the
        whole watch, reconnections included: DeadlineExceeded then. `on_reconnect` gets the
        error and the failure count before each reconnection. Stop by closing the iterator."""
        cursor = WatchCursor(calls.watch_request(filter, where, include_snapshot, since_revision))
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            stream = self._stub.WatchJobs(
                cursor.resume_request(), timeout=left, metadata=self.metadata
            )
            try:
                async for resp in stream:
                    failures = 0
                    cursor.observe(resp)
                    if heartbeats or resp.WhichOneof("kind") != "heartbeat":
                        yield resp
                error: JobwheelError = Unavailable("the server ended the watch")
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE:
                    raise from_rpc_error(err) from err
                error = from_rpc_error(err)
            finally:
                stream.cancel()
            failures += 1
            if failures > self.watch_reconnects:
                raise error
            if on_reconnect is not None:
                on_reconnect(error, failures)
            await self._sleep(self.retry.delay(failures))

    # -- bulk -----------------------------------------------------------------
    # Each acts on the jobs that match `filter` and the keyword filters; returns how many
    # changed. A filter that matches every job (none given, or every state and nothing else)
    # is refused with INVALID_ARGUMENT unless `all=True`: one slip must not change every job.

    async def cancel_jobs(
        self,
        filter: Filter | None = None,
        *,
        reason: str = "",
        all: bool = False,
        **where: Unpack[FilterArgs],
    ) -> int:
        """Cancels every matching non-terminal job; returns how many changed."""
        return await self._run(calls.bulk("CancelJobs", filter, where, reason=reason, all=all))

    async def pause_jobs(
        self, filter: Filter | None = None, *, all: bool = False, **where: Unpack[FilterArgs]
    ) -> int:
        return await self._run(calls.bulk("PauseJobs", filter, where, all=all))

    async def resume_jobs(
        self, filter: Filter | None = None, *, all: bool = False, **where: Unpack[FilterArgs]
    ) -> int:
        return await self._run(calls.bulk("ResumeJobs", filter, where, all=all))

    async def retry_jobs(
        self,
        filter: Filter | None = None,
        *,
        delay: DurationLike | None = None,
        all: bool = False,
        **where: Unpack[FilterArgs],
    ) -> int:
        return await self._run(calls.bulk("RetryJobs", filter, where, delay=delay, all=all))

    async def delete_jobs(
        self, filter: Filter | None = None, *, all: bool = False, **where: Unpack[FilterArgs]
    ) -> int:
        return await self._run(calls.bulk("DeleteJobs", filter, where, all=all))

    # -- queues ---------------------------------------------------------------

    async def list_queues(self) -> list[job_pb2.Queue]:
        """Every known queue, by name (all pages)."""
        return await self._every_page(calls.list_queues, "queues")

    async def list_workers(self) -> list[pb.Worker]:
        """Server replicas and the remote workers seen in the last 5 minutes (all pages)."""
        return await self._every_page(calls.list_workers, "workers")

    async def _every_page(self, call: Callable[[str], calls.Call[Any]], field: str) -> list[Any]:
        """The `field` items of every page of a list, following next_page_token."""
        items: list[Any] = []
        token = ""
        while True:
            page = await self._run(call(token))
            items.extend(getattr(page, field))
            token = page.next_page_token
            if not token:
                return items

    async def pause_queue(self, name: str) -> job_pb2.Queue:
        return await self._run(calls.queue_op("PauseQueue", name))

    async def resume_queue(self, name: str) -> job_pb2.Queue:
        return await self._run(calls.queue_op("ResumeQueue", name))

    async def create_event_subscription(
        self, url: str, event_types: Iterable[str | int], secret: str
    ) -> pb.EventSubscription:
        """Subscribes `url` to job events (e.g. ["completed", "failed"]), signed with `secret`."""
        return await self._run(calls.create_event_subscription(url, event_types, secret))

    async def list_event_subscriptions(self) -> list[pb.EventSubscription]:
        return await self._run(calls.list_event_subscriptions())

    async def delete_event_subscription(self, subscription_id: str) -> None:
        await self._run(calls.delete_event_subscription(subscription_id))

    async def update_queue(
        self,
        name: str,
        *,
        max_concurrency: int | None = None,
        max_dispatches_per_second: float | None = None,
    ) -> job_pb2.Queue:
        return await self._run(calls.update_queue(name, max_concurrency, max_dispatches_per_second))
