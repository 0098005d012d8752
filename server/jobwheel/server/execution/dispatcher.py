"""Dispatch: due jobs become QUEUED, then RUNNING on an in-process handler, queue by queue.

Each queue runs at most `concurrency` attempts of this process at once. The dispatcher works
in cycles of one write transaction each: the attempts that ended since the last cycle are
settled and, in the same transaction, each ready queue claims its best jobs (higher priority
first, FIFO within a priority) for the room those endings and earlier ones left. A busy server
thus writes one transaction per cycle for many jobs, and a job's end and its successor's start
cost one commit together. Jobs that come due are promoted and their queues claimed in one
transaction too (`fire_due`), so a due job starts after a single commit. Which queues a cycle
claims, and how many of each, is queue_rooms.py's arithmetic (limits, rates, cycles in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable

from jobwheel.server import failures, model
from jobwheel.server.batching import GroupCommit
from jobwheel.server.clock import Clock, timer_delay
from jobwheel.server.engine_storage import EngineStore
from jobwheel.server.execution.attempts import run_attempt
from jobwheel.server.execution.inprocess import InProcessExecutor
from jobwheel.server.execution.queue_rooms import Claim, QueueRooms
from jobwheel.server.execution.webhook import WebhookExecutor
from jobwheel.server.model import AttemptOutcome
from jobwheel.server.rules import recurrence, states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.signals import Signal
from jobwheel.server.storage import DatabaseUnavailable
from jobwheel.server.storage.transitions import FireClaim

log = logging.getLogger(__name__)
# after a failed cycle (e.g. the database is unreachable), seconds until the next try
RETRY_AFTER = 1.0
# after the grace period, how long releasing what still runs may take (seconds)
RELEASE_WAIT = 2.0
# Where writers do not exclude each other (PostgreSQL): dispatch cycles in flight at once,
# so that the database works on one while this process starts and ends the jobs of another.
CYCLES_IN_FLIGHT = 2


class _Held:
    """An attempt this process runs: from its claim until its end is stored."""

    __slots__ = ("ended", "job", "released", "settling", "started", "task")

    def __init__(self, job: model.Job) -> None:
        self.job = job
        self.task: asyncio.Task[None] | None = None
        self.started = False  # its task began (a task cancelled before that runs no code)
        self.ended = False  # its settlement is in the outbox (or stored)
        self.released = False  # its room in the queue is given back
        self.settling = False  # its settlement is in a cycle in flight beside the loop


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
        self.lease = lease
        # Settlements from elsewhere (remote workers' reports), merged by group commit; the
        # in-process attempts' endings go through the dispatch cycle instead (`observe` is
        # told the size of either's batches).
        self.settle = GroupCommit(store.settle, observe=observe_settles)
        # fired after each dispatch cycle (promote, settle and claim, start): tests wait on it
        self.cycles = Signal()
        # fired after each attempt's end is stored (a drained queue runs no cycle after it)
        self.settled = Signal()
        self._held: dict[str, _Held] = {}
        # attempts that ended, with their settlements, for the next cycle to store
        self._outbox: list[tuple[_Held, states.Settlement]] = []
        self._wake = asyncio.Event()
        self._accepting = True
        self._due = True
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0  # the loop's time the timer is due at
        self._finished = asyncio.Event()
        self._fired: set[str] = set()
        # a cycle of endings alone, stored while the loop goes on (one at a time)
        self._storing: asyncio.Task[None] | None = None
        # PostgreSQL: every cycle runs beside the loop, up to CYCLES_IN_FLIGHT at once
        self._overlap = not store.dialect.single_writer
        self._beside: dict[asyncio.Task[None], bool] = {}  # each, and whether it claims
        # which queues to claim and how many: kept in step with `_held` and the claims
        self.rooms = QueueRooms(
            concurrency,
            cycles_in_flight=CYCLES_IN_FLIGHT if self._overlap else 1,
            monotonic=clock.monotonic,
            wake_later=self._wake_later,
        )

    @property
    def running(self) -> int:
        return len(self._held)

    def holds(self, job_id: str) -> bool:
        """True while this process runs an attempt of the job (or is storing its end)."""
        return job_id in self._held

    @property
    def held(self) -> list[str]:
        """Ids of the jobs `holds` is true for: the leases this process renews."""
        return list(self._held)

    def set_queues(self, settings: dict[str, model.QueueSettings]) -> None:
        """Applies queue settings (pause, concurrency, rate); wakes queues that may run now."""
        self.rooms.set_queues(settings)
        self._wake.set()

    def wake(self, queues: set[str] | None = None) -> None:
        """Something may be due (no queues given) or queued in `queues`."""
        if queues:
            self.rooms.ready |= queues
        else:
            self._due = True
        self._wake.set()

    async def run(self) -> None:
        """Dispatch cycles until `stop`, and after it until every attempt's end is stored."""
        try:
            scanned = False  # the queues holding jobs at start: read in the loop, retried
            self._wake.set()
            while self._accepting or self._held:
                await self._wake.wait()
                self._wake.clear()
                try:
                    if not scanned:
                        self.rooms.ready |= await self.store.queues_with_queued_jobs()
                        scanned = True
                    await self._dispatch()
                except DatabaseUnavailable as exc:
                    log.warning("dispatch paused: %s; retrying in a second", exc)
                    await self.clock.sleep(RETRY_AFTER)
                    self.wake()
                except Exception:
                    log.exception("dispatch failed; retrying in a second")
                    await self.clock.sleep(RETRY_AFTER)
                    self.wake()
                self.cycles.fire()
        finally:
            # cancelled: the jobs of the cycles in flight lose their leases and re-run
            for task in [self._storing, *self._beside]:
                if task is not None:
                    task.cancel()
            self._finished.set()

    async def _dispatch(self) -> None:
        if self._due and self._accepting:  # something came due: only then is there anything
            self._due = False
            claiming = [task for task, claims in self._beside.items() if claims]
            if claiming:
                # their claims must not find a job this fire queues, due after their time
                await asyncio.wait(claiming)
            await self._fire(self.clock.now())
        now = self.clock.now()
        endings = self._outbox
        freed = Counter(h.job.queue for h, _ in endings)
        if self._overlap:
            self._dispatch_beside(now, endings, freed)
            return
        claims = self.rooms.claims(freed) if self._accepting else []
        if not claims and (not endings or self._storing is not None):
            return  # endings wait for the store in flight, which wakes the loop when done
        self._outbox = []
        if not claims:
            # nothing to claim with them (drained queues, or stopping): stored beside the
            # loop, so that a fire coming due meanwhile need not wait for their transaction
            self._storing = asyncio.create_task(self._cycle(now, endings, claims))
            self._storing.add_done_callback(self._stored)
            return
        await self._cycle(now, endings, claims)

    def _dispatch_beside(
        self, now: model.Micros, endings: list[tuple[_Held, states.Settlement]], freed: Counter[str]
    ) -> None:
        """PostgreSQL: the cycle runs beside the loop, while up to CYCLES_IN_FLIGHT - 1
        others are in flight (their claims' rooms counted as taken; a queue whose last claim
        was full claims again before its claim in flight is back)."""
        if len(self._beside) >= CYCLES_IN_FLIGHT:
            return  # the first back wakes the loop
        claims = self.rooms.claims(freed) if self._accepting else []
        if not claims and not endings:
            return
        self._outbox = []
        self.rooms.sent(claims)
        settling = self.rooms.settling
        for held, _ in endings:
            held.settling = True
            settling[held.job.queue] += 1
        task = asyncio.create_task(self._cycle_beside(now, endings, claims))
        self._beside[task] = bool(claims)
        task.add_done_callback(self._back)
        if claims and len(self._beside) < CYCLES_IN_FLIGHT:
            # the next cycle goes out now (a queue whose claim was full claims again): left
            # to the endings to wake it, short jobs all end before, and cycles ran one by one
            self._wake.set()

    async def _cycle_beside(
        self,
        now: model.Micros,
        endings: list[tuple[_Held, states.Settlement]],
        claims: list[Claim],
    ) -> None:
        try:
            await self._cycle(now, endings, claims)
        finally:
            # in the step that started the claimed jobs (or gave the claims back): the room
            # is never counted twice
            self.rooms.back(claims)
            for held, _ in endings:
                self._unsettling(held)  # not stored: back in the outbox, or given up

    def _unsettling(self, held: _Held) -> None:
        if held.settling:
            held.settling = False
            self.rooms.settling[held.job.queue] -= 1

    def _back(self, task: asyncio.Task[None]) -> None:
        """A cycle beside the loop is done (its claimed jobs started, or it failed)."""
        self._beside.pop(task, None)
        self.cycles.fire()
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, DatabaseUnavailable):
                log.warning("dispatch paused: %s; retrying in a second", exc)
            else:
                log.error("dispatch failed; retrying in a second", exc_info=exc)
            self._due = True  # as after a failed cycle in the loop
            self._wake_later(RETRY_AFTER)
            return
        self._wake.set()

    def _stored(self, task: asyncio.Task[None]) -> None:
        self._storing = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, DatabaseUnavailable):
                log.warning("storing attempt ends paused: %s; retrying in a second", exc)
            else:
                log.error("storing attempt ends failed", exc_info=exc)
            self._wake_later(RETRY_AFTER)
            return
        self._wake.set()  # endings that came meanwhile go next; stopping: maybe nothing held

    async def _cycle(
        self,
        now: model.Micros,
        endings: list[tuple[_Held, states.Settlement]],
        claims: list[Claim],
    ) -> None:
        """One dispatch cycle's transaction: stores `endings`, claims `claims`, starts what
        it claimed."""
        try:
            applies, claimed = await self.store.dispatch_cycle(
                [settlement for _, settlement in endings],
                claims,
                self.executor.handlers.keys(),
                self.worker_id,
                now,
                now + self.lease,
                include_http=self.webhooks is not None,
            )
        except BaseException as exc:
            self.rooms.not_claimed(claims)  # e.g. the database is unreachable: try again later
            if isinstance(exc, Exception) and not isinstance(exc, DatabaseUnavailable):
                await self._settle_alone(endings)  # one bad settlement must not hold the rest
            else:
                self._outbox[:0] = endings  # stored by a later cycle; their jobs stay held
            raise
        self._stored_endings(endings, applies)
        for (queue, room), jobs in zip(claims, claimed, strict=True):
            self.rooms.claimed(queue, room, len(jobs))
            for job in jobs:
                self._start(job)

    def _stored_endings(
        self, endings: list[tuple[_Held, states.Settlement]], applies: list[bool]
    ) -> None:
        """After the commit that stored `endings` (`applies`: whether each applied)."""
        if not endings:
            return
        if self.settle.observe is not None:
            self.settle.observe(len(endings))
        for (held, settlement), applied in zip(endings, applies, strict=True):
            self._release(held)
            if applied:
                failures.log_if_failed(settlement)
        self.settled.fire()

    async def _settle_alone(self, endings: list[tuple[_Held, states.Settlement]]) -> None:
        """After a failed cycle: each ending in a transaction of its own. One that cannot be
        stored is given up: this process stops renewing its lease, so the job runs again."""
        for held, settlement in endings:
            try:
                [applied] = await self.store.settle([settlement])
            except DatabaseUnavailable:
                self._outbox.append((held, settlement))
                continue
            except Exception:
                log.exception(
                    "settling job %s failed; its lease will expire and it will re-run",
                    held.job.id,
                )
                self._release(held, wake=True)
                continue
            self._release(held)
            self.settled.fire()
            if applied:
                failures.log_if_failed(settlement)

    async def _fire(self, now: model.Micros) -> None:
        """Promotes what came due and claims the promoted jobs' queues in one transaction, so
        a due job starts after a single commit. The endings waiting in the outbox (unless a
        store of endings is in flight) are stored in it too: one commit, and no second
        transaction for the fire to wait on."""
        given: dict[str, int] = {}  # the room each claimed queue was given
        endings: list[tuple[_Held, states.Settlement]] = []
        if self._storing is None:
            endings, self._outbox = self._outbox, []
        freed = Counter(h.job.queue for h, _ in endings)

        def room(queue: str) -> int:
            given[queue] = self.rooms.room(queue, freed[queue])
            return given[queue]

        def settled(applies: list[bool]) -> None:
            self._stored_endings(endings, applies)

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
            settlements=[settlement for _, settlement in endings],
            settled=settled,
        )
        try:
            promoted, claimed = await self.store.fire_due(
                now,
                now - self.misfire_grace,
                lambda job: _catch_up(job, now, self.clock.random()),
                fire,
            )
        except BaseException as exc:
            self.rooms.not_claimed(given.items())  # as a failed cycle: ready, tokens back
            if endings:
                if isinstance(exc, Exception) and not isinstance(exc, DatabaseUnavailable):
                    await self._settle_alone(endings)  # one bad settlement must not hold the rest
                else:
                    self._outbox[:0] = endings  # stored by a later cycle; their jobs stay held
            raise
        finally:
            self._fired = set()
        self.rooms.ready |= promoted - given.keys()
        per_queue = Counter(job.queue for job in claimed)
        for queue, queue_room in given.items():
            self.rooms.claimed(queue, queue_room, per_queue[queue])

    def fired(self, job_id: str) -> bool:
        """True while the events of the fire that started the job are told (its QUEUED event
        needs no dispatch cycle)."""
        return job_id in self._fired

    def _wake_later(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        delay = timer_delay(delay)
        # its own record of when: uvloop hands a timer due at once back as a plain Handle
        at = loop.time() + delay
        if self._timer is None or self._timer_at > at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_later(delay, self._timer_fired)
            self._timer_at = at

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake.set()

    def _start(self, job: model.Job) -> None:
        held = _Held(job)
        self._held[job.id] = held
        self.rooms.running[job.queue] += 1
        held.task = task = asyncio.create_task(self._execute(held))
        # in a callback, not a `finally`: a task cancelled before its first step runs no code
        task.add_done_callback(functools.partial(self._task_done, held))

    def _release(self, held: _Held, *, wake: bool = False) -> None:
        """The attempt is no longer this process's (its end is stored, or given up)."""
        job = held.job
        if not held.released:
            held.released = True
            # a handler left behind after a cancel may end after the job ran again here
            if self._held.get(job.id) is held:
                del self._held[job.id]
            self.rooms.running[job.queue] -= 1
            self._unsettling(held)
        if wake:
            self.rooms.ready.add(job.queue)
            self._wake.set()

    def _end(self, held: _Held, settlement: states.Settlement) -> None:
        """The attempt ended: the next cycle stores its settlement (the first end only)."""
        if held.ended:
            return  # ended without its handler, which has now stopped too
        held.ended = True
        self._outbox.append((held, settlement))
        self._wake.set()

    def _task_done(self, held: _Held, task: asyncio.Task[None]) -> None:
        if held.ended:
            return
        job = held.job
        if task.cancelled() and not held.started:  # cancelled before it began: settle it
            now = self.clock.now()
            self._end(
                held,
                states.settle(
                    job,
                    AttemptResult(AttemptOutcome.CANCELLED, error="Cancelled"),
                    now,
                    self.clock.random(),
                )
                if self._accepting
                else states.lost(job, now, "server stopped", counts=False),
            )
            return
        # not renewed any more (this process no longer holds it): the lease expires and the
        # job runs again
        error = None if task.cancelled() else task.exception()
        log.error(
            "settling job %s failed; its lease will expire and it will re-run",
            job.id,
            exc_info=error,
        )
        self._release(held, wake=True)

    async def _execute(self, held: _Held) -> None:
        held.started = True
        job = held.job
        try:
            result = await run_attempt(job, self.executor, self.webhooks, self.store)
        except asyncio.CancelledError:
            if not self._accepting:  # released: it runs again at the next start, unused
                self._end(held, states.lost(job, self.clock.now(), "server stopped", counts=False))
                return
            result = AttemptResult(AttemptOutcome.CANCELLED, error="Cancelled")  # this job's
        self._end(held, states.settle(job, result, self.clock.now(), self.clock.random()))

    def cancel(self, job_id: str) -> None:
        """Stops this process's attempt of a job that was cancelled (if it runs one)."""
        held = self._held.get(job_id)
        if held is not None and held.task is not None:
            held.task.cancel()
            asyncio.get_running_loop().call_later(RELEASE_WAIT, self._left_behind, held)

    def _left_behind(self, held: _Held) -> None:
        """A cancelled attempt whose handler went on (it swallowed its cancellation): the
        attempt ends without it, so its room in the queue is free again; the handler, told
        through ctx.cancelled, is left running."""
        if held.ended or held.task is None or held.task.done():
            return
        log.warning(
            "job %s was cancelled %gs ago and its handler goes on; its attempt ends without it",
            held.job.id,
            RELEASE_WAIT,
        )
        result = AttemptResult(AttemptOutcome.CANCELLED, error="Cancelled")
        self._end(held, states.settle(held.job, result, self.clock.now(), self.clock.random()))

    async def stop(self, grace: float) -> None:
        """Claims nothing more; running attempts get `grace` seconds, then are released; the
        ends of all are stored (within RELEASE_WAIT more seconds)."""
        self._accepting = False
        self._wake.set()
        pending = {h.task: h for h in self._held.values() if h.task and not h.task.done()}
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                _, stuck = await asyncio.wait(still, timeout=RELEASE_WAIT)
                for task in stuck:  # handlers that swallow their cancellation: released
                    held = pending[task]  # without them, unused, as the others are
                    log.warning("job %s: its handler goes on; released without it", held.job.id)
                    self._end(
                        held,
                        states.lost(held.job, self.clock.now(), "server stopped", counts=False),
                    )
        if self._held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), RELEASE_WAIT)


def _catch_up(job: model.Job, now: model.Micros, rand: float) -> tuple[model.Micros | None, int]:
    nxt = recurrence.catch_up(job, now, rand)
    return nxt.time, nxt.skipped
