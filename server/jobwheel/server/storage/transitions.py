"""The engine's writes: promote due jobs, claim them, settle attempts, recover lost ones.

Every transition is fenced by the state the writer expects (and, for a running job, by the
attempt number it holds), so a late or duplicate report changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from jobwheel.server.model import INPROCESS_PREFIX, Job, JobState, Micros
from jobwheel.server.rules.states import CLAIMABLE, WAITING, CatchUp, Settlement
from jobwheel.server.storage.attempt_writes import claim_statement, pg_start_attempts
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.convert import job_from_row
from jobwheel.server.storage.events import append_text_changes
from jobwheel.server.storage.pg_cycle import pg_dispatch_cycle, pg_fire
from jobwheel.server.storage.schema import jobs, state_is
from jobwheel.server.storage.sqlite_cycle import sqlite_dispatch_cycle, sqlite_start_attempts
from jobwheel.server.storage.sqlite_fire import sqlite_fire
from sqlalchemy import ColumnElement, and_, or_, select, update


@dataclass(frozen=True)
class FireClaim:
    """What `fire_due` claims for an in-process executor, queue by queue, once promoted."""

    room: Callable[[str], int]  # how many jobs of a queue to claim now (called in the transaction)
    started: Callable[[list[Job]], None]  # told of the claimed jobs after commit
    tasks: Collection[str]  # the tasks it runs
    worker_id: str
    lease_until: Micros  # µs
    include_http: bool = False  # and jobs with an HTTP target
    # attempt endings stored first in the same transaction (as `settle`): a fire and the
    # endings waiting beside it cost one commit, and neither waits for the other's
    settlements: Sequence[Settlement] = ()
    # told, after the commit and before `started`, whether each of `settlements` applied
    settled: Callable[[list[bool]], None] | None = None


class Transitions(StoreBase):
    """Mixed into Store, which provides the connections, the dialect and `_emit`."""

    async def due_before(self, until: Micros, limit: int) -> list[tuple[str, Micros]]:
        """(id, due time) of waiting jobs due before `until`, earliest first: the wheel's load."""
        stmt = (
            select(jobs.c.id, jobs.c.next_run_time)
            .where(state_is(*WAITING), jobs.c.next_run_time < until)
            .order_by(jobs.c.next_run_time)
            .limit(limit)
        )
        async with self._read() as conn:
            return [(r.id, r.next_run_time) for r in await conn.execute(stmt)]

    async def queues_with_queued_jobs(self) -> set[str]:
        stmt = select(jobs.c.queue).where(state_is(CLAIMABLE)).distinct()
        async with self._read() as conn:
            return {r.queue for r in await conn.execute(stmt)}

    async def promote_due(
        self,
        now: Micros,
        misfire_before: Micros | None = None,
        catch_up: CatchUp | None = None,
    ) -> set[str]:
        """SCHEDULED/RETRYING jobs whose time has come become QUEUED; returns their queues.

        A recurring job found due before `misfire_before` missed its time (downtime, pause):
        `catch_up` gives its new next run time (None: the schedule ended) and how many
        occurrences it dropped, before the promotion."""
        promoted, _ = await self.fire_due(now, misfire_before, catch_up)
        return promoted

    async def fire_due(
        self,
        now: Micros,
        misfire_before: Micros | None = None,
        catch_up: CatchUp | None = None,
        claim: FireClaim | None = None,
    ) -> tuple[set[str], list[Job]]:
        """`promote_due`, and with `claim` the claim of the promoted jobs' queues in the same
        transaction: a job comes due and starts in one commit. Returns the promoted jobs'
        queues and the jobs claimed (RUNNING, best priority first, FIFO within one, per queue
        in name order); `claim.started` sees them after the commit, before anyone is told of
        the events."""
        async with self._raw_write() as conn:  # the transaction on the driver's connection
            if self.dialect.single_writer:  # in two driver-thread hops
                fire = await sqlite_fire(
                    conn, now, misfire_before, catch_up, claim, self.dialect.max_in_list
                )
            else:
                fire = await pg_fire(conn, now, misfire_before, catch_up, claim)
        applies, promoted, claimed, committed = fire
        queues = {job.queue for job in promoted}
        if claim is not None:
            if claim.settled is not None and claim.settlements:
                claim.settled(applies)
            claim.started(claimed)
        self._emit(committed)
        return queues, claimed

    async def claim(
        self,
        queue: str,
        tasks: Collection[str],
        limit: int,
        worker_id: str,
        now: Micros,
        lease_until: Micros,
        *,
        include_http: bool = False,
    ) -> list[Job]:
        """Moves up to `limit` QUEUED jobs of `queue` (best priority first, FIFO within one)
        whose task is in `tasks` (or, with `include_http`, that have an HTTP target) to
        RUNNING, opening an attempt for each."""
        where = _claimable(queue, tasks, include_http)
        if limit <= 0 or where is None:
            return []
        return await self._start_attempts(where, limit, worker_id, now, lease_until)

    async def dispatch_cycle(
        self,
        settlements: Sequence[Settlement],
        claims: Sequence[tuple[str, int]],
        tasks: Collection[str],
        worker_id: str,
        now: Micros,
        lease_until: Micros,
        *,
        include_http: bool = False,
    ) -> tuple[list[bool], list[list[Job]]]:
        """One transaction of the dispatcher: settles attempt endings (as `settle`), then
        claims, for each (queue, limit) of `claims`, as `claim` does. Returns whether each
        settlement applied, and the jobs claimed for each claim."""
        claimed: list[list[Job]] = [[] for _ in claims]
        if not settlements and not any(limit > 0 for _, limit in claims):
            return [], claimed
        async with self._raw_write() as conn:  # the transaction on the driver's connection
            if self.dialect.single_writer:  # in one driver-thread hop
                applies, claimed, committed = await sqlite_dispatch_cycle(
                    conn,
                    settlements,
                    claims,
                    tasks,
                    worker_id,
                    now,
                    lease_until,
                    include_http=include_http,
                    max_in_list=self.dialect.max_in_list,
                )
            else:
                applies, claimed, committed = await pg_dispatch_cycle(
                    conn,
                    settlements,
                    claims,
                    tasks,
                    worker_id,
                    now,
                    lease_until,
                    include_http=include_http,
                )
        self._emit(committed)
        return applies, claimed

    async def _start_attempts(
        self,
        where: list[ColumnElement[bool]],
        limit: int,
        worker_id: str,
        now: Micros,
        lease_until: Micros,
    ) -> list[Job]:
        """QUEUED jobs matching `where` (up to `limit`, best priority first, FIFO within one)
        become RUNNING for `worker_id`, each with a new attempt: the in-process claim and a
        remote worker's lease are this one transition."""
        if self.dialect.single_writer:  # the transaction in one driver-thread hop
            claim = claim_statement(self.dialect, where, limit, worker_id, now, lease_until)
            async with self._raw_write() as conn:
                claimed, events = await sqlite_start_attempts(conn, claim, worker_id, now)
            self._emit(events)
            return claimed
        async with self._write() as conn:
            claimed, starts = await pg_start_attempts(
                conn, where, limit, worker_id, now, lease_until
            )
            committed = await append_text_changes(conn, starts, now)
        self._emit(committed)
        return claimed

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        """Applies attempt endings in one transaction (shaped for GroupCommit). Each result
        says whether it applied: a settlement for an attempt the job no longer holds (it was
        cancelled, or re-run after its lease expired) changes nothing."""
        if not settlements:
            return []
        # a dispatch cycle that claims nothing (on SQLite one driver-thread hop)
        applies, _ = await self.dispatch_cycle(settlements, [], (), "", settlements[0].now, 0)
        return applies

    async def renew_leases(
        self, worker_id: str, job_ids: Sequence[str], now: Micros, until: Micros
    ) -> int:
        """Extends the leases of `job_ids` that `worker_id` still runs. Only the jobs the
        caller holds: a RUNNING job it lost track of (its end could not be stored, or a claim
        whose reply was lost) must expire and run again, not be kept alive forever."""
        renewed = 0
        if not job_ids:
            return renewed
        async with self._write() as conn:
            # an UPDATE locks in the order its plan reads rows (by id here)
            await self.dialect.lock_jobs(conn, job_ids)
            for start in range(0, len(job_ids), self.dialect.max_in_list):
                stmt = (
                    update(jobs)
                    .where(
                        jobs.c.id.in_(job_ids[start : start + self.dialect.max_in_list]),
                        jobs.c.state == JobState.RUNNING.value,
                        jobs.c.worker_id == worker_id,
                    )
                    .values(lease_expire_time=until)
                )
                renewed += (await conn.execute(stmt)).rowcount
        return renewed

    async def running_jobs_lost(
        self, now: Micros, dead_worker_prefix: str | None = None, limit: int = 1000
    ) -> list[Job]:
        """RUNNING jobs whose lease expired, whose remote worker ran past the job's timeout,
        or (at start-up) that a dead process held."""
        lost = or_(
            jobs.c.lease_expire_time < now,
            # the server times its own attempts (in-process, HTTP) as it runs them
            and_(
                jobs.c.start_time + jobs.c.timeout < now,
                jobs.c.worker_id.notlike(f"{INPROCESS_PREFIX}%"),
            ),
        )
        if dead_worker_prefix is not None:
            lost = or_(lost, jobs.c.worker_id.startswith(dead_worker_prefix, autoescape=True))
        stmt = (
            select(jobs)
            .where(and_(jobs.c.state == JobState.RUNNING.value, lost))
            .order_by(jobs.c.seq)
            .limit(limit)
        )
        async with self._read() as conn:
            return [job_from_row(r) for r in (await conn.execute(stmt)).mappings()]


def _claimable(
    queue: str, tasks: Collection[str], include_http: bool
) -> list[ColumnElement[bool]] | None:
    """The in-process claim's filter: QUEUED jobs of `queue` with a task in `tasks` (or an
    HTTP target, with `include_http`); None when nothing could match."""
    runnable: list[ColumnElement[bool]] = []
    if tasks:
        runnable.append(jobs.c.task.in_(list(tasks)))
    if include_http:
        runnable.append(jobs.c.http.isnot(None))
    if not runnable:
        return None
    return [state_is(CLAIMABLE), jobs.c.queue == queue, or_(*runnable)]
