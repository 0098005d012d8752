"""The engine's writes: promote due jobs, claim them, settle attempts, recover lost ones.

Every transition is fenced by the state the writer expects (and, for a running job, by the
attempt number it holds), so a late or duplicate report changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from jobwheel.server.ids import new_id
from jobwheel.server.model import AttemptOutcome, Event, EventType, Job, JobState, Micros
from jobwheel.server.rules.states import CLAIMABLE, WAITING, Settlement
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.convert import job_from_row, job_result_doc
from jobwheel.server.storage.events import append_events
from jobwheel.server.storage.schema import attempts, jobs
from sqlalchemy import ColumnElement, and_, bindparam, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

_CATCH_UP_BATCH = 1000
_WAITING = [s.value for s in WAITING]

_settle_job = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("b_id"),
        jobs.c.state == JobState.RUNNING.value,
        jobs.c.attempt == bindparam("b_held_attempt"),
        jobs.c.execution_count == bindparam("b_execution"),
    )
    .values(
        state=bindparam("b_state"),
        next_run_time=bindparam("b_next_run_time"),
        attempt=bindparam("b_attempt"),
        end_time=bindparam("b_end_time"),
        last_error=bindparam("b_last_error"),
        result=bindparam("b_result"),
        skipped_count=jobs.c.skipped_count + bindparam("b_skipped"),
        released_attempts=bindparam("b_released"),
        worker_id="",
        lease_expire_time=None,
        update_time=bindparam("b_now"),
    )
)
_settle_attempt = (
    update(attempts)
    .where(
        attempts.c.job_id == bindparam("b_id"),
        attempts.c.execution == bindparam("b_execution"),
        attempts.c.number == bindparam("b_held_attempt"),
        attempts.c.outcome == AttemptOutcome.RUNNING.value,
    )
    .values(
        end_time=bindparam("b_now"),
        outcome=bindparam("b_outcome"),
        error=bindparam("b_error"),
        result=bindparam("b_attempt_result"),
    )
)


@dataclass(frozen=True)
class FireClaim:
    """What `fire_due` claims for an in-process executor, queue by queue, once promoted."""

    room: Callable[[str], int]  # how many jobs of a queue to claim now (called in the transaction)
    started: Callable[[list[Job]], None]  # told of the claimed jobs after commit
    tasks: Collection[str]  # the tasks it runs
    worker_id: str
    lease_until: Micros  # µs
    include_http: bool = False  # and jobs with an HTTP target


class Transitions(StoreBase):
    """Mixed into Store, which provides the connections, the dialect and `_emit`."""

    async def due_before(self, until: Micros, limit: int) -> list[tuple[str, Micros]]:
        """(id, due time) of waiting jobs due before `until`, earliest first: the wheel's load."""
        stmt = (
            select(jobs.c.id, jobs.c.next_run_time)
            .where(jobs.c.state.in_(_WAITING), jobs.c.next_run_time < until)
            .order_by(jobs.c.next_run_time)
            .limit(limit)
        )
        async with self._read() as conn:
            return [(r.id, r.next_run_time) for r in await conn.execute(stmt)]

    async def queues_with_queued_jobs(self) -> set[str]:
        stmt = select(jobs.c.queue).where(jobs.c.state == CLAIMABLE.value).distinct()
        async with self._read() as conn:
            return {r.queue for r in await conn.execute(stmt)}

    async def promote_due(
        self,
        now: Micros,
        misfire_before: Micros | None = None,
        catch_up: Callable[[Job], tuple[Micros | None, int]] | None = None,
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
        catch_up: Callable[[Job], tuple[Micros | None, int]] | None = None,
        claim: FireClaim | None = None,
    ) -> tuple[set[str], list[Job]]:
        """`promote_due`, and with `claim` the claim of the promoted jobs' queues in the same
        transaction: a job comes due and starts in one commit. Returns the promoted jobs'
        queues and the jobs claimed (RUNNING, best priority first, FIFO within one, per queue
        in name order); `claim.started` sees them after the commit, before anyone is told of
        the events."""
        stmt = (
            update(jobs)
            .where(jobs.c.state.in_(_WAITING), jobs.c.next_run_time <= now)
            .values(state=CLAIMABLE.value, update_time=now)
            .returning(*jobs.c)
        )
        claimed: list[Job] = []
        async with self._write() as conn:
            changes: list[tuple[EventType, Job]] = []
            if catch_up is not None and misfire_before is not None:
                changes += await self._catch_up(conn, now, misfire_before, catch_up)
            promoted = [job_from_row(r) for r in (await conn.execute(stmt)).mappings()]
            changes += [(EventType.QUEUED, job) for job in promoted]
            queues = {job.queue for job in promoted}
            if claim is not None:
                for queue in sorted(queues):
                    room = claim.room(queue)
                    where = self._claimable(queue, claim.tasks, claim.include_http)
                    if room > 0 and where is not None:
                        claimed += await self._claim_in(
                            conn, where, room, claim.worker_id, now, claim.lease_until
                        )
                changes += [(EventType.STARTED, job) for job in claimed]
            committed = await append_events(conn, changes, now)
        if claim is not None:
            claim.started(claimed)
        self._emit(committed)
        return queues, claimed

    async def _catch_up(
        self,
        conn: AsyncConnection,
        now: Micros,
        before: Micros,
        catch_up: Callable[[Job], tuple[Micros | None, int]],
    ) -> list[tuple[EventType, Job]]:
        """Recurring jobs due before `before` move on (`catch_up`), in batches by seq."""
        # Only the due-time index finds them cheaply: ordered by seq with a limit, a planner
        # may walk the (state, seq) index through every pending job instead (1 s at 1M).
        found = select(jobs.c.seq).where(
            jobs.c.state == JobState.SCHEDULED.value,
            jobs.c.next_run_time < before,
            jobs.c.recurring.is_(True),
        )
        seqs = sorted(r.seq for r in await conn.execute(found))
        changes: list[tuple[EventType, Job]] = []
        batch = min(_CATCH_UP_BATCH, self.dialect.max_in_list)
        for start in range(0, len(seqs), batch):
            changes += await self._catch_up_batch(
                conn, now, before, catch_up, seqs[start : start + batch]
            )
        return changes

    async def _catch_up_batch(
        self,
        conn: AsyncConnection,
        now: Micros,
        before: Micros,
        catch_up: Callable[[Job], tuple[Micros | None, int]],
        seqs: list[int],
    ) -> list[tuple[EventType, Job]]:
        late_stmt = (
            select(jobs)
            .where(
                jobs.c.seq.in_(seqs),
                jobs.c.state == JobState.SCHEDULED.value,
                jobs.c.next_run_time < before,
            )
            .order_by(jobs.c.seq)
        )
        late_stmt = self.dialect.lock_rows(late_stmt, skip_locked=True)
        late = [job_from_row(r) for r in (await conn.execute(late_stmt)).mappings()]
        changes: list[tuple[EventType, Job]] = []
        for job in late:
            next_run, skipped = catch_up(job)
            after = replace(
                job,
                next_run_time=next_run,
                skipped_count=job.skipped_count + skipped,
                state=JobState.SCHEDULED if next_run is not None else JobState.COMPLETED,
                end_time=None if next_run is not None else now,
                update_time=now,
            )
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id)
                .values(
                    next_run_time=after.next_run_time,
                    skipped_count=after.skipped_count,
                    state=after.state.value,
                    end_time=after.end_time,
                    update_time=now,
                )
            )
            if skipped:
                changes.append((EventType.MISFIRE_SKIPPED, after))
            if next_run is None:
                changes.append((EventType.COMPLETED, after))
        return changes

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
        where = self._claimable(queue, tasks, include_http)
        if limit <= 0 or where is None:
            return []
        return await self._start_attempts(where, limit, worker_id, now, lease_until)

    @staticmethod
    def _claimable(
        queue: str, tasks: Collection[str], include_http: bool
    ) -> list[ColumnElement[bool]] | None:
        """The claim's filter: QUEUED jobs of `queue` with a task in `tasks` (or an HTTP
        target, with `include_http`); None when nothing could match."""
        runnable: list[ColumnElement[bool]] = []
        if tasks:
            runnable.append(jobs.c.task.in_(list(tasks)))
        if include_http:
            runnable.append(jobs.c.http.isnot(None))
        if not runnable:
            return None
        return [jobs.c.state == CLAIMABLE.value, jobs.c.queue == queue, or_(*runnable)]

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
        async with self._write() as conn:
            claimed = await self._claim_in(conn, where, limit, worker_id, now, lease_until)
            committed = await append_events(
                conn, [(EventType.STARTED, job) for job in claimed], now
            )
        self._emit(committed)
        return claimed

    async def _claim_in(
        self,
        conn: AsyncConnection,
        where: list[ColumnElement[bool]],
        limit: int,
        worker_id: str,
        now: Micros,
        lease_until: Micros,
    ) -> list[Job]:
        """`_start_attempts` within the caller's transaction, without its events."""
        pick = (
            select(jobs.c.seq)
            .where(*where)
            .order_by(jobs.c.priority.desc(), jobs.c.seq)
            .limit(limit)
        )
        pick = self.dialect.lock_rows(pick, skip_locked=True)
        stmt = (
            update(jobs)
            .where(jobs.c.seq.in_(pick.scalar_subquery()))
            .values(
                state=JobState.RUNNING.value,
                # A job that has not started its current execution begins a new one.
                execution_count=jobs.c.execution_count + case((jobs.c.attempt == 0, 1), else_=0),
                released_attempts=case((jobs.c.attempt == 0, 0), else_=jobs.c.released_attempts),
                attempt=jobs.c.attempt + 1,
                start_time=now,
                update_time=now,
                worker_id=worker_id,
                lease_expire_time=lease_until,
            )
            .returning(*jobs.c)
        )
        claimed = [job_from_row(r) for r in (await conn.execute(stmt)).mappings()]
        if claimed:
            await conn.execute(
                attempts.insert(),
                [
                    {
                        "id": new_id(),
                        "job_id": job.id,
                        "execution": job.execution_count,
                        "number": job.attempt,
                        "start_time": now,
                        "outcome": AttemptOutcome.RUNNING.value,
                        "worker_id": worker_id,
                    }
                    for job in claimed
                ],
            )
        claimed.sort(key=lambda j: (-j.priority, j.seq))
        return claimed

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        """Applies attempt endings in one transaction (shaped for GroupCommit). Each result
        says whether it applied: a settlement for an attempt the job no longer holds (it was
        cancelled, or re-run after its lease expired) changes nothing."""
        if not settlements:
            return []
        async with self._write() as conn:
            held = await self._held_attempts(conn, [s.ended.job_id for s in settlements])
            applies = [_holds(held.get(s.ended.job_id), s) for s in settlements]
            # the same attempt settled twice in one batch (two reports merged): the first wins
            taken: set[str] = set()
            for i, s in enumerate(settlements):
                if applies[i]:
                    applies[i] = s.ended.job_id not in taken
                    taken.add(s.ended.job_id)
            applied = [s for s, ok in zip(settlements, applies, strict=True) if ok]
            committed: list[Event] = []
            if applied:
                params = [_settlement_params(s) for s in applied]
                await conn.execute(_settle_job, params)
                await conn.execute(_settle_attempt, params)
                changes = [(etype, s.after) for s in applied for etype in s.events]
                committed = await append_events(conn, changes, settlements[0].now)
        self._emit(committed)
        return applies

    async def _held_attempts(
        self, conn: AsyncConnection, job_ids: list[str]
    ) -> dict[str, tuple[int, int, Micros | None]]:
        """(execution, attempt, lease end) of each RUNNING job among `job_ids`, locked until
        commit."""
        held: dict[str, tuple[int, int, Micros | None]] = {}
        for start in range(0, len(job_ids), self.dialect.max_in_list):
            stmt = select(
                jobs.c.id, jobs.c.execution_count, jobs.c.attempt, jobs.c.lease_expire_time
            ).where(
                jobs.c.id.in_(job_ids[start : start + self.dialect.max_in_list]),
                jobs.c.state == JobState.RUNNING.value,
            )
            stmt = self.dialect.lock_rows(stmt)
            for r in await conn.execute(stmt):
                held[r.id] = (r.execution_count, r.attempt, r.lease_expire_time)
        return held

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
        """RUNNING jobs whose lease expired, or (at start-up) that a dead process held."""
        lost = jobs.c.lease_expire_time < now
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


def _holds(held: tuple[int, int, Micros | None] | None, s: Settlement) -> bool:
    """The job still runs the attempt `s` settles (and, for a lost one, its lease ran out)."""
    if held is None or held[:2] != (s.ended.execution, s.ended.attempt):
        return False
    limit = s.lease_expired_before
    return limit is None or (held[2] is not None and held[2] < limit)


def _settlement_params(s: Settlement) -> dict[str, Any]:
    ended, after = s.ended, s.after
    return {
        "b_id": ended.job_id,
        "b_held_attempt": ended.attempt,
        "b_execution": ended.execution,
        "b_state": after.state.value,
        "b_next_run_time": after.next_run_time,
        "b_attempt": after.attempt,
        "b_end_time": after.end_time,
        "b_last_error": after.last_error,
        "b_result": job_result_doc(after.result),
        "b_now": ended.now,
        "b_skipped": s.skipped,
        "b_released": after.released_attempts,
        "b_outcome": ended.outcome.value,
        "b_error": ended.error,
        "b_attempt_result": job_result_doc(ended.result),
    }
