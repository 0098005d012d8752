"""Scenario 5: WatchJobs delivery lag, 1,000 per-job watchers + 10 firehose at ~1,000 events/s.

The server (no handlers) holds 1,000 jobs scheduled an hour ahead. This process opens one
watcher per job (`filter.ids = [id]`) and 10 watchers of everything (empty filter), each with
a snapshot so that it is known to be subscribed, and then drives an open-loop load of about
1,000 events/s in ticks of 20 ms: each tick pauses (or resumes) 10 of the watched jobs with one
PauseJobs/ResumeJobs call (500 events/s that the per-job watchers see, every watched job one
event every 2 s) and enqueues 10 jobs of a task nobody handles with one BatchEnqueueJobs call
(500 ENQUEUED events/s that only the firehose sees). Lag = receive time here - JobEvent.event_time
(the server's commit-time clock; both on this machine's clock).

Then one more firehose watcher opens on its own connection and never reads: its HTTP/2 window
fills, then its server-side buffer (--watch-buffer events) fills and overflows. The healthy
watchers' lag is measured again while it is stalled; when the load stops, the stalled stream
is read to its end, which should be RESOURCE_EXHAUSTED (WATCHER_TOO_SLOW).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

from bench import jobs, procs, profile
from bench.cpu import CpuShare
from bench.lateness import percentile
from bench.options import Options
from bench.report import Row, millis

WATCHED = 1_000  # jobs, one watcher each
FIREHOSE = 10  # watchers with an empty filter
PER_JOB_CHANNELS = 10  # connections the per-job watchers share (100 streams each)
TICK = 0.02  # seconds between load ticks
PER_TICK = 10  # jobs paused or resumed, and jobs enqueued, per tick
BUFFER = 10_000  # --watch-buffer (the server's default)
WARMUP = 2.0  # seconds of load before the healthy window
TARGET = 0.100  # p99 lag, seconds
OFFERED = PER_TICK * 2 / TICK  # events/s the load asks for
SNAPSHOT = job_pb2.JOB_EVENT_TYPE_SNAPSHOT


def _connection(address: str, *, stalled: bool = False) -> grpc.aio.Channel:
    """A channel with a connection of its own (channels otherwise share subchannels)."""
    options = [*jobs.CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    if stalled:  # the receive window stays 64 KiB instead of growing with BDP probes
        options.append(("grpc.http2.bdp_probe", 0))
    return grpc.aio.insecure_channel(address, options=options)


@dataclass
class Lags:
    """Where the watchers put their lags (in arrival order); None while nothing is recorded."""

    per_job: list[float] | None = None
    firehose: list[float] | None = None

    def start(self) -> None:
        self.per_job, self.firehose = [], []

    def stop(self) -> tuple[list[float], list[float]]:
        got = (self.per_job or [], self.firehose or [])
        self.per_job = self.firehose = None
        return got


@dataclass
class Stream:
    """One healthy watcher: what it received outside the snapshot."""

    firehose: bool
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    events: int = 0
    gaps: int = 0  # firehose only: revisions skipped
    last: int = 0
    error: str = ""


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos * 1e-9


async def _consume(
    call: AsyncIterator[pb.WatchJobsResponse],
    stream: Stream,
    lags: Lags,
    times: dict[int, float] | None,
) -> None:
    """Reads a watcher's stream; `times` (one firehose watcher) maps revision -> event_time."""
    try:
        async for msg in call:
            if msg.HasField("snapshot_end"):
                stream.last = msg.snapshot_end.revision
                stream.ready.set()
                continue
            if msg.HasField("batch"):
                events = list(msg.batch.events)
            elif msg.HasField("event"):
                events = [msg.event]
            else:
                continue  # heartbeat
            now = time.time()
            for event in events:
                if event.type == SNAPSHOT:
                    continue
                lag = now - _seconds(event.event_time)
                sink = lags.firehose if stream.firehose else lags.per_job
                if sink is not None:
                    sink.append(lag)
                stream.events += 1
                if stream.firehose:
                    stream.gaps += event.revision - stream.last - 1
                    if times is not None:
                        times[event.revision] = _seconds(event.event_time)
                stream.last = event.revision
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            stream.error = f"{e.code().name}: {e.details()}"
    except asyncio.CancelledError:
        pass


class Load:
    """Open-loop ticks: pause/resume PER_TICK watched jobs and enqueue PER_TICK jobs."""

    def __init__(self, stub: job_service_pb2_grpc.JobServiceStub, ids: list[str]) -> None:
        self.stub = stub
        self.groups = [ids[i : i + PER_TICK] for i in range(0, len(ids), PER_TICK)]
        self.turn = 0  # groups acted on so far: pause on even rounds, resume on odd
        self.changed = 0  # watched jobs paused or resumed (each one event)
        self.enqueued = 0
        self.errors = 0
        self.late_ticks = 0  # ticks that started more than one tick late
        self.batch = jobs.batch(jobs.UNHANDLED, PER_TICK)
        self._calls: set[asyncio.Task[None]] = set()

    async def _act(self, group: list[str], pause: bool) -> None:
        flt = job_pb2.JobFilter(ids=group)
        try:
            if pause:
                count = (await self.stub.PauseJobs(pb.PauseJobsRequest(filter=flt))).count
            else:
                count = (await self.stub.ResumeJobs(pb.ResumeJobsRequest(filter=flt))).count
            self.changed += count
        except grpc.aio.AioRpcError:
            self.errors += 1

    async def _enqueue(self) -> None:
        try:
            created = len((await self.stub.BatchEnqueueJobs(self.batch)).results)
            self.enqueued += created
        except grpc.aio.AioRpcError:
            self.errors += 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def run(self, seconds: float) -> None:
        began = time.perf_counter()
        for k in range(round(seconds / TICK)):
            delay = began + k * TICK - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -TICK:
                self.late_ticks += 1
            group = self.groups[self.turn % len(self.groups)]
            pause = (self.turn // len(self.groups)) % 2 == 0
            self.turn += 1
            self._spawn(self._act(group, pause))
            self._spawn(self._enqueue())

    @property
    def events(self) -> int:
        return self.changed + self.enqueued

    async def settle(self) -> None:
        await asyncio.gather(*self._calls)


class Watchers:
    """The 1,000 per-job and 10 firehose streams of this process, on their own connections."""

    def __init__(self, address: str, ids: list[str]) -> None:
        self.lags = Lags()
        self.times: dict[int, float] = {}  # revision -> event_time, from one firehose watcher
        self.channels = [_connection(address) for _ in range(PER_JOB_CHANNELS + FIREHOSE)]
        self.streams: list[Stream] = []
        self._tasks: list[asyncio.Task[None]] = []
        for i, job_id in enumerate(ids):
            flt = job_pb2.JobFilter(ids=[job_id])
            self._open(self.channels[i % PER_JOB_CHANNELS], flt, firehose=False)
        for i in range(FIREHOSE):
            ch = self.channels[PER_JOB_CHANNELS + i]
            self._open(ch, job_pb2.JobFilter(), firehose=True, times=self.times if i == 0 else None)

    def _open(
        self,
        ch: grpc.aio.Channel,
        flt: job_pb2.JobFilter,
        *,
        firehose: bool,
        times: dict[int, float] | None = None,
    ) -> None:
        # with a snapshot: its end says the stream is subscribed
        # max_batch: events that queued up for a watcher leave in one message
        request = pb.WatchJobsRequest(filter=flt, include_snapshot=True, max_batch=100)
        call = jobs.stub(ch).WatchJobs(request)
        self.streams.append(Stream(firehose=firehose))
        self._tasks.append(asyncio.create_task(_consume(call, self.streams[-1], self.lags, times)))

    async def ready(self, within: float = 120) -> float:
        began = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in self.streams)), within)
        return time.perf_counter() - began

    def received(self, firehose: bool) -> list[int]:
        return [s.events for s in self.streams if s.firehose == firehose]

    @property
    def errors(self) -> set[str]:
        return {s.error for s in self.streams if s.error}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ch in self.channels:
            await ch.close()


@dataclass(frozen=True)
class Window:
    per_job: list[float]  # lags in arrival order
    firehose: list[float]
    events_per_s: float  # events the server committed per second in the window
    cpu: CpuShare


async def _window(
    lags: Lags, seconds: float, server_pid: int, load: Load | None, rate: float
) -> Window:
    """Records lags for `seconds` of load (`load` None: the server makes its own events)."""
    if load is not None:
        await load.settle()
    first = load.events if load else 0
    lags.start()
    with CpuShare(server_pid) as cpu:
        began = time.perf_counter()
        if load is None:
            await asyncio.sleep(seconds)
        else:
            await load.run(seconds)
            await load.settle()  # the window's calls are committed
        elapsed = time.perf_counter() - began
    per_job, firehose = lags.stop()
    if load is not None:
        rate = (load.events - first) / elapsed
    return Window(per_job, firehose, rate, cpu)


def _p(values: list[float], p: float) -> float:
    return percentile(sorted(values), p) if values else float("inf")


def _lag(values: list[float]) -> str:
    if not values:
        return "no events"
    ordered = sorted(values)
    return f"p50 {millis(percentile(ordered, 50))}, p99 {millis(percentile(ordered, 99))}"


def _rows(name: str, got: Window, base: Window | None) -> list[Row]:
    out = []
    for kind, values, base_values in (
        (f"{WATCHED:,} per-job", got.per_job, base.per_job if base else None),
        (f"{FIREHOSE} firehose", got.firehose, base.firehose if base else None),
    ):
        p99 = _p(values, 99)
        row = Row(
            f"WatchJobs lag, {kind} watchers, {OFFERED:,.0f} events/s offered "
            f"({got.events_per_s:,.0f} committed){name}",
            _lag(values),
            "bare grpc.aio " + _lag(base_values) if base_values is not None else "-",
            target=f"p99 <= {TARGET * 1000:.0f} ms",
            met=p99 <= TARGET,
        )
        if values:
            quarter = max(1, len(values) // 4)
            row.notes.append(
                f"{len(values):,} events received, max {millis(max(values))}; p50 in the "
                f"window's first quarter {millis(_p(values[:quarter], 50))}, last quarter "
                f"{millis(_p(values[-quarter:], 50))}"
            )
        out.append(row)
    cpu = f"CPU: jobwheel {got.cpu}"
    if base is not None:
        cpu += f"; bare grpc.aio {base.cpu}"
    out[0].notes.append(cpu)
    return out


@dataclass
class Stalled:
    outcome: str = "still open"
    exhausted: bool = False
    received: int = 0
    last_revision: int = -1


async def _drain_stalled(call: AsyncIterator[pb.WatchJobsResponse], within: float) -> Stalled:
    """Reads the stalled stream to its end (what it had in flight, then its status)."""
    got = Stalled()

    async def read() -> None:
        try:
            async for msg in call:
                if msg.HasField("event"):
                    got.received += 1
            got.outcome = "ended OK"
        except grpc.aio.AioRpcError as e:
            got.outcome = e.code().name
            got.exhausted = e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = rpc_status.from_call(e)
            for detail in status.details if status is not None else ():
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    got.outcome += f" ({info.reason})"
                    got.last_revision = int(info.metadata.get("last_revision", "-1"))

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), within)
    return got


async def run(opts: Options) -> list[Row]:
    healthy_s = 1.5 * opts.seconds
    rate = OFFERED
    stalled_s = BUFFER / rate + 3.0  # the stalled watcher's buffer fills in BUFFER / rate s
    print(
        f"[watch] bare grpc.aio fan-out, same streams and rate: {healthy_s:g} s ...",
        file=sys.stderr,
    )
    with procs.Subprocess([sys.executable, "-m", "bench.watch"], opts.log("watch-bare")) as bare:
        watchers = Watchers(bare.address, [f"job-{i:04d}" for i in range(WATCHED)])
        try:
            await watchers.ready()
            await asyncio.sleep(WARMUP)
            base = await _window(watchers.lags, healthy_s, bare.pid, None, rate)
        finally:
            await watchers.close()

    srv = procs.jobwheel_server(opts.db("watch"), opts.log("watch"), handlers=False)
    srv.argv += ["--watch-buffer", str(BUFFER)]
    with srv:
        async with jobs.channel(srv.address) as control_channel:
            control = jobs.stub(control_channel)
            hour = timestamp_pb2.Timestamp()
            hour.FromSeconds(int(time.time()) + 3600)
            reqs = []
            for i in range(WATCHED):
                req = jobs.request(jobs.UNHANDLED, i)
                req.schedule.start_time.CopyFrom(hour)
                reqs.append(req)
            reply = await control.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
            ids = [r.job.id for r in reply.results]
            print(
                f"[watch] jobwheel: {WATCHED:,} per-job + {FIREHOSE} firehose watchers, "
                f"{rate:,.0f} events/s for {healthy_s:g} s ...",
                file=sys.stderr,
            )
            watchers = Watchers(srv.address, ids)
            stalled_channel = _connection(srv.address, stalled=True)
            try:
                open_s = await watchers.ready()
                load = Load(control, ids)
                await load.run(WARMUP)
                out = opts.profile / "watch.txt" if opts.profile else None
                with profile.sampled(srv.pid, out):
                    healthy = await _window(watchers.lags, healthy_s, srv.pid, load, rate)

                print(
                    f"[watch] one more firehose watcher, stalled: {stalled_s:g} s ...",
                    file=sys.stderr,
                )
                stalled_call = jobs.stub(stalled_channel).WatchJobs(pb.WatchJobsRequest())
                await stalled_call.wait_for_connection()
                stall_began = time.time()
                loaded = await _window(watchers.lags, stalled_s, srv.pid, load, rate)
                await asyncio.sleep(1.0)  # the healthy watchers catch up
                stalled = await _drain_stalled(stalled_call, 30)
            finally:
                await watchers.close()
                await stalled_channel.close()

    rows = _rows("", healthy, base) + _rows(", 1 more watcher stalled", loaded, None)
    rows[0].notes.append(
        f"{WATCHED:,} + {FIREHOSE} streams opened (each with its snapshot) in {open_s:.2f} s on "
        f"{PER_JOB_CHANNELS} + {FIREHOSE} connections; load, every {TICK * 1000:.0f} ms: "
        f"{PER_TICK} watched jobs paused or resumed (one PauseJobs/ResumeJobs by ids) + "
        f"{PER_TICK} jobs enqueued (one BatchEnqueueJobs); baseline: a bare grpc.aio server "
        "streaming the same events (a JobEvent with its Job) to the same streams at that rate"
    )
    per_job, fire = watchers.received(False), watchers.received(True)
    gaps = sum(s.gaps for s in watchers.streams if s.firehose)
    rows[0].notes.append(
        f"whole run: per-job watchers received {sum(per_job):,} of {load.changed:,} events of "
        f"their jobs; each firehose watcher {min(fire):,}-{max(fire):,} of {load.events:,} "
        f"events, {gaps} revisions skipped; {load.errors} load calls failed, "
        f"{load.late_ticks} load ticks late"
    )
    if watchers.errors:
        rows[0].notes.append(f"watcher errors: {'; '.join(sorted(watchers.errors))}")
    row = Row(
        f"WatchJobs stalled firehose watcher (--watch-buffer {BUFFER:,})",
        stalled.outcome,
        target="ended RESOURCE_EXHAUSTED",
        met=stalled.exhausted,
    )
    note = (
        f"it never read for {stalled_s:g} s (its connection without HTTP/2 BDP probing, so "
        f"the server's buffer, not a grown receive window, takes the backlog); read after "
        f"the stall: {stalled.received:,} events in flight, then {stalled.outcome}"
    )
    overflow = watchers.times.get(stalled.last_revision + BUFFER + 1)
    if stalled.last_revision >= 0 and overflow is not None:
        note += f"; its buffer overflowed about {overflow - stall_began:.1f} s into the stall"
    row.notes.append(note)
    rows.append(row)
    return rows


# the baseline: a bare grpc.aio server streaming the same events, `python -m bench.watch`


class BareWatch(job_service_pb2_grpc.JobServiceServicer):
    """WatchJobs only: an empty snapshot, then events from `tick()` by job id or to all."""

    def __init__(self) -> None:
        self.by_id: dict[str, set[asyncio.Queue[pb.WatchJobsResponse]]] = {}
        self.broad: set[asyncio.Queue[pb.WatchJobsResponse]] = set()
        self.revision = 0
        self.turn = 0

    async def WatchJobs(
        self, request: pb.WatchJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        queue: asyncio.Queue[pb.WatchJobsResponse] = asyncio.Queue()
        ids = list(request.filter.ids)
        for job_id in ids:
            self.by_id.setdefault(job_id, set()).add(queue)
        if not ids:
            self.broad.add(queue)
        try:
            yield pb.WatchJobsResponse(snapshot_end=pb.SnapshotEnd(revision=self.revision))
            while True:
                yield await queue.get()
        finally:
            self.broad.discard(queue)
            for job_id in ids:
                self.by_id.get(job_id, set()).discard(queue)

    def _event(self, job_id: str) -> pb.WatchJobsResponse:
        self.revision += 1
        job = job_pb2.Job(
            id=job_id, queue="default", task=jobs.UNHANDLED, state=job_pb2.JOB_STATE_QUEUED
        )
        job.payload.update({"to": "ada@example.com", "n": self.revision})
        for ts in (job.create_time, job.update_time, job.next_run_time):
            ts.GetCurrentTime()
        job.retry_policy.max_attempts = 4
        msg = pb.WatchJobsResponse(
            event=job_pb2.JobEvent(
                revision=self.revision, type=job_pb2.JOB_EVENT_TYPE_ENQUEUED, job=job
            )
        )
        msg.event.event_time.GetCurrentTime()
        return msg

    def tick(self) -> None:
        watched = sorted(self.by_id)
        for i in range(PER_TICK):
            if watched:
                job_id = watched[(self.turn + i) % len(watched)]
                msg = self._event(job_id)
                for queue in (*self.by_id[job_id], *self.broad):
                    queue.put_nowait(msg)
        self.turn += PER_TICK
        for _ in range(PER_TICK):
            msg = self._event(f"other-{self.revision}")
            for queue in self.broad:
                queue.put_nowait(msg)


async def serve_bare() -> None:
    servicer = BareWatch()
    server = grpc.aio.server()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    began = time.perf_counter()
    for k in itertools.count(1):
        delay = began + k * TICK - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        servicer.tick()


if __name__ == "__main__":
    asyncio.run(serve_bare())
