"""Dispatch: due jobs become QUEUED, then RUNNING on an in-process handler, queue by queue.

Jobs that come due are promoted and claimed in one transaction (`fire_due`); jobs queued
otherwise (enqueued to run now, a slot freed) are claimed queue by queue.

Each queue runs at most `concurrency` attempts of this process at once. A claim takes the best
jobs of a queue (higher priority first, FIFO within a priority) in one transaction; endings
are settled through group commit, so a busy server writes one transaction for many jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from jobwheel.server import failures, model
from jobwheel.server.batching import GroupCommit
from jobwheel.server.clock import Clock
from jobwheel.server.engine_storage import EngineStore
from jobwheel.server.execution.inprocess import InProcessExecutor, TaskContext
from jobwheel.server.execution.ratelimit import TokenBucket
from jobwheel.server.execution.webhook import WebhookExecutor
from jobwheel.server.model import AttemptOutcome
from jobwheel.server.observability import tracing
from jobwheel.server.rules import recurrence, states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.signals import Signal
from jobwheel.server.storage import DatabaseUnavailable
from jobwheel.server.storage.transitions import FireClaim

log = logging.getLogger(__name__)
# retries of a settlement during a database outage: seconds, doubling up to the cap
SETTLE_RETRY_FIRST = 0.2
SETTLE_RETRY_MAX = 2.0
# after the grace period, how long releasing what still runs may take (seconds)
RELEASE_WAIT = 2.0


class Dispatcher:
    def __init__(
        self,
        store: EngineStore,
        clock: Clock,
        executor: InProcessExecutor,
        worker_id: str,
        webhooks: WebhookExecutor | None = None,
        *,
        concurrency: int,
        misfire_grace: model.Micros,
        lease: model.Micros = model.DEFAULT_LEASE,
        observe_settles: Callable[[int], None] | None = None,
    ) -> None:
        self.misfire_grace = misfire_grace
        self.store = store
        self.clock = clock
        self.executor = executor
        self.webhooks = webhooks
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.lease = lease
        self.settle = GroupCommit(store.settle, observe=observe_settles)
        # fired after each dispatch cycle (promote, claim, start): tests wait on it
        self.cycles = Signal()
        # fired after each attempt's end is stored (a drained queue runs no cycle after it)
        self.settled = Signal()
        self._ready: set[str] = set()
        self._running: Counter[str] = Counter()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._accepting = True
        self._due = True
        self._queues: dict[str, model.QueueSettings] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._started: set[str] = set()
        self._settling: set[asyncio.Future[None]] = set()
        self._fired: set[str] = set()

    @property
    def running(self) -> int:
        return len(self._tasks)

    def holds(self, job_id: str) -> bool:
        """True while this process runs an attempt of the job (or is storing its end)."""
        return job_id in self._tasks

    @property
    def held(self) -> list[str]:
        """Ids of the jobs `holds` is true for: the leases this process renews."""
        return list(self._tasks)

    def set_queues(self, settings: dict[str, model.QueueSettings]) -> None:
        """Applies queue settings (pause, concurrency, rate); wakes queues that may run now."""
        for name, queue in settings.items():
            if self._queues.get(name) == queue:
                continue
            self._queues[name] = queue
            rate = queue.max_dispatches_per_second
            if rate <= 0:
                self._buckets.pop(name, None)
            elif name not in self._buckets or self._buckets[name].rate != rate:
                self._buckets[name] = TokenBucket(rate, self.clock.monotonic())
            if not queue.paused:
                self._ready.add(name)
        self._wake.set()

    def wake(self, queues: set[str] | None = None) -> None:
        """Something may be due (no queues given) or queued in `queues`."""
        if queues:
            self._ready |= queues
        else:
            self._due = True
        self._wake.set()

    async def run(self) -> None:
        self._ready |= await self.store.queues_with_queued_jobs()
        self._wake.set()
        while self._accepting:
            await self._wake.wait()
            self._wake.clear()
            if not self._accepting:
                break
            try:
                await self._dispatch()
            except DatabaseUnavailable as exc:
                log.warning("dispatch paused: %s; retrying in a second", exc)
                await self.clock.sleep(1)
                self.wake()
            except Exception:
                log.exception("dispatch failed; retrying in a second")
                await self.clock.sleep(1)
                self.wake()
            self.cycles.fire()

    async def _dispatch(self) -> None:
        now = self.clock.now()
        if self._due:  # something came due: only then is there anything to promote
            self._due = False
            await self._fire(now)
        tasks = self.executor.handlers.keys()
        for queue in sorted(self._ready):
            room = self._room(queue)
            if room <= 0:
                continue
            try:
                claimed = await self.store.claim(
                    queue,
                    tasks,
                    room,
                    self.worker_id,
                    now,
                    now + self.lease,
                    include_http=self.webhooks is not None,
                )
            except BaseException:
                self._ready.add(queue)  # e.g. the database is unreachable: try again later
                raise
            self._claimed(queue, room, len(claimed))
            for job in claimed:
                self._start(job)

    async def _fire(self, now: model.Micros) -> None:
        """Promotes what came due and claims the promoted jobs' queues in one transaction, so
        a due job starts after a single commit."""
        rooms: dict[str, int] = {}

        def room(queue: str) -> int:
            rooms[queue] = self._room(queue)
            return rooms[queue]

        def started(claimed: list[model.Job]) -> None:
            # before the fire's events are published: the engine need not wake a queue for a
            # job this fire started (`fired`)
            self._fired = {job.id for job in claimed}
            for job in claimed:
                self._start(job)

        fire = FireClaim(
            room,
            started,
            self.executor.handlers.keys(),
            self.worker_id,
            now + self.lease,
            include_http=self.webhooks is not None,
        )
        try:
            promoted, claimed = await self.store.fire_due(
                now,
                now - self.misfire_grace,
                lambda job: _catch_up(job, now, self.clock.random()),
                fire,
            )
        except BaseException:
            self._ready |= rooms.keys()
            raise
        finally:
            self._fired = set()
        self._ready |= promoted - rooms.keys()
        per_queue = Counter(job.queue for job in claimed)
        for queue, given in rooms.items():
            self._claimed(queue, given, per_queue[queue])

    def fired(self, job_id: str) -> bool:
        """True while the events of the fire that started the job are told (its QUEUED event
        needs no dispatch cycle)."""
        return job_id in self._fired

    def _room(self, queue: str) -> int:
        """How many jobs of `queue` to claim now (its limit, rate, pause), taking the rate's
        tokens; a queue with room leaves `_ready` (a wake-up during the claim puts it back),
        one without stays there until a slot frees or tokens come."""
        settings = self._queues.get(queue)
        if settings is not None and settings.paused:
            self._ready.discard(queue)  # resuming it wakes it again
            return 0
        limit = (settings and settings.max_concurrency) or self.concurrency
        room = limit - self._running[queue]
        bucket = self._buckets.get(queue)
        if bucket is not None and room > 0:
            allowed = bucket.take(room, self.clock.monotonic())
            if allowed < room:
                self._wake_later(bucket.wait(self.clock.monotonic()))
            room = allowed
        if room > 0:
            self._ready.discard(queue)
        else:
            self._ready.add(queue)
        return room

    def _claimed(self, queue: str, room: int, got: int) -> None:
        """After a claim of `got` of up to `room` jobs of `queue`: unused rate tokens go back;
        a full claim leaves the queue ready (there may be more)."""
        if room <= 0:
            return
        bucket = self._buckets.get(queue)
        if bucket is not None:
            bucket.give_back(room - got)
        if got == room:
            self._ready.add(queue)

    def _wake_later(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is None or self._timer.when() > loop.time() + delay:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake.set()

    def _start(self, job: model.Job) -> None:
        self._running[job.queue] += 1
        task = asyncio.create_task(self._execute(job))
        self._tasks[job.id] = task
        # in a callback, not a `finally`: a task cancelled before its first step runs no code
        task.add_done_callback(lambda done: self._done(job, done))

    def _done(self, job: model.Job, task: asyncio.Task[None]) -> None:
        self._tasks.pop(job.id, None)
        self._running[job.queue] -= 1
        # a queue has claimable jobs left only if it is ready (its last claim was full, or
        # it had no room): a drained one needs no claim after each ending
        if job.queue in self._ready:
            self._wake.set()
        if job.id in self._started:
            self._started.discard(job.id)
        elif task.cancelled():  # cancelled before it began: settle it all the same
            result = AttemptResult(AttemptOutcome.CANCELLED, error="Cancelled")
            settlement = (
                states.settle(job, result, self.clock.now(), self.clock.random())
                if self._accepting
                else states.lost(job, self.clock.now(), "server stopped", counts=False)
            )
            self._settling.add(settle := asyncio.ensure_future(self._finish(settlement)))
            settle.add_done_callback(self._settling.discard)

    async def _execute(self, job: model.Job) -> None:
        ctx = TaskContext(
            job_id=job.id,
            task=job.task,
            queue=job.queue,
            attempt=job.attempt,
            execution=job.execution_count,
            labels=job.labels,
        )
        limit = None if job.timeout is None else job.timeout / model.SECOND
        self._started.add(job.id)
        try:
            try:
                result = await self._run(job, ctx, limit)
            except asyncio.CancelledError:
                if self._accepting:  # a cancel of this job, not a shutdown
                    result = AttemptResult(AttemptOutcome.CANCELLED, error="Cancelled")
                else:  # released: it runs again at the next start, no attempt used up
                    lost = states.lost(job, self.clock.now(), "server stopped", counts=False)
                    await self._finish(lost)
                    return
            await self._finish(states.settle(job, result, self.clock.now(), self.clock.random()))
        except Exception:
            # not renewed any more (this process no longer holds it): the lease expires and
            # the job runs again
            log.exception(
                "settling job %s failed; its lease will expire and it will re-run", job.id
            )

    async def _run(self, job: model.Job, ctx: TaskContext, limit: float | None) -> AttemptResult:
        # a span in the trace of the job's enqueue (a no-op without tracing)
        with tracing.attempt_span(
            f"attempt {job.task}", job.traceparent, tracing.job_attributes(job)
        ):
            result = await self._execute_attempt(job, ctx, limit)
            if result.outcome is not AttemptOutcome.SUCCEEDED:
                tracing.mark_failed(result.error)
            return result

    async def _execute_attempt(
        self, job: model.Job, ctx: TaskContext, limit: float | None
    ) -> AttemptResult:
        if job.http is None:
            return await self.executor.run(job.task, job.payload, ctx, limit)
        assert self.webhooks is not None
        attempt_id = await self.store.attempt_id(job.id, job.execution_count, job.attempt)
        return await self.webhooks.run(job, attempt_id or f"{job.id}/{job.attempt}", limit)

    async def _finish(self, settlement: states.Settlement) -> None:
        """Stores an attempt's ending, retrying through a database outage until it is stored
        (the job stays held meanwhile, so its lease is renewed while renewals work); a failed
        attempt that was stored is logged."""
        delay = SETTLE_RETRY_FIRST
        while True:
            try:
                [applied] = await self.settle([settlement])
                self.settled.fire()
                if applied:
                    failures.log_if_failed(settlement)
                return
            except DatabaseUnavailable as exc:
                job_id = settlement.ended.job_id
                log.warning("cannot store the end of job %s's attempt (%s); retrying", job_id, exc)
            await self.clock.sleep(delay * (0.5 + self.clock.random()))
            delay = min(delay * 2, SETTLE_RETRY_MAX)

    def cancel(self, job_id: str) -> None:
        """Stops this process's attempt of a job that was cancelled (if it runs one)."""
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()

    async def stop(self, grace: float) -> None:
        """Claims nothing more; running attempts get `grace` seconds, then are released."""
        self._accepting = False
        self._wake.set()
        pending = list(self._tasks.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=RELEASE_WAIT)


def _catch_up(job: model.Job, now: model.Micros, rand: float) -> tuple[model.Micros | None, int]:
    nxt = recurrence.catch_up(job, now, rand)
    return nxt.time, nxt.skipped
