"""Reads behind the dashboard: outcome counts over time, per-task summaries, fire lateness,
one job's event timeline and the latest attempt of some jobs."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from jobwheel.server.model import Attempt, AttemptOutcome, EventType, Micros
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.convert import attempt_from_row
from jobwheel.server.storage.schema import attempts, events, jobs
from sqlalchemy import func, select

ENDED = [o.value for o in AttemptOutcome if o is not AttemptOutcome.RUNNING]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    revision: int
    type: EventType
    time: Micros
    state: str
    attempt: int
    error: str


@dataclass(frozen=True, slots=True)
class TaskSummary:
    task: str
    succeeded: int
    failed: int  # every other ended outcome: failed, timed out, cancelled, lost
    mean_duration: Micros  # of succeeded attempts
    max_duration: Micros


class Overview(StoreBase):
    """Mixed into Store."""

    async def attempt_buckets(
        self, since: Micros, bucket: Micros, queues: Collection[str] | None = None
    ) -> list[tuple[Micros, AttemptOutcome, int]]:
        """Attempts (of jobs of `queues` only, when given) that ended at or after `since`,
        counted per `bucket`-wide time slot and outcome: (slot start, outcome, count), slots
        in ascending order."""
        slot = ((attempts.c.end_time - since) // bucket).label("slot")
        stmt = (
            select(slot, attempts.c.outcome, func.count())
            .where(attempts.c.end_time >= since, attempts.c.outcome.in_(ENDED))
            .group_by(slot, attempts.c.outcome)
            .order_by(slot)
        )
        if queues is not None:
            stmt = stmt.select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id)).where(
                jobs.c.queue.in_(sorted(queues))
            )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(since + int(s) * bucket, AttemptOutcome(o), int(n)) for s, o, n in rows]

    async def task_summaries(
        self, since: Micros, queues: Collection[str] | None = None
    ) -> list[TaskSummary]:
        """Per task, the attempts (of jobs of `queues` only, when given) that ended at or
        after `since`."""
        duration = attempts.c.end_time - attempts.c.start_time
        ok = attempts.c.outcome == AttemptOutcome.SUCCEEDED.value
        stmt = (
            select(
                jobs.c.task,
                ok.label("ok"),
                func.count(),
                func.avg(duration),
                func.max(duration),
            )
            .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
            .where(attempts.c.end_time >= since, attempts.c.outcome.in_(ENDED))
            .group_by(jobs.c.task, ok)
        )
        if queues is not None:
            stmt = stmt.where(jobs.c.queue.in_(sorted(queues)))
        found: dict[str, dict[str, int]] = {}
        async with self._read() as conn:
            for task, succeeded, count, mean, longest in await conn.execute(stmt):
                entry = found.setdefault(task, {"ok": 0, "bad": 0, "mean": 0, "max": 0})
                if succeeded:
                    entry.update(ok=int(count), mean=int(mean or 0), max=int(longest or 0))
                else:
                    entry["bad"] = int(count)
        return [
            TaskSummary(task, e["ok"], e["bad"], e["mean"], e["max"])
            for task, e in sorted(found.items())
        ]

    async def queue_throughput(
        self, since: Micros, names: list[str] | None = None
    ) -> dict[str, tuple[int, int]]:
        """Per queue (of `names` only, when given), (succeeded, other ended outcomes) of the
        attempts that ended at or after `since`."""
        ok = attempts.c.outcome == AttemptOutcome.SUCCEEDED.value
        stmt = (
            select(jobs.c.queue, ok.label("ok"), func.count())
            .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
            .where(attempts.c.end_time >= since, attempts.c.outcome.in_(ENDED))
            .group_by(jobs.c.queue, ok)
        )
        if names is not None:
            stmt = stmt.where(jobs.c.queue.in_(names))
        found: dict[str, tuple[int, int]] = {}
        async with self._read() as conn:
            for queue, succeeded, count in await conn.execute(stmt):
                good, bad = found.get(queue, (0, 0))
                found[queue] = (good + int(count), bad) if succeeded else (good, bad + int(count))
        return found

    async def start_lateness(
        self, since: Micros, limit: int = 5000, queues: Collection[str] | None = None
    ) -> list[tuple[Micros, Micros]]:
        """(start time, lateness) of up to `limit` of the newest attempt starts (of jobs of
        `queues` only, when given) at or after `since`: how long after its due time (next run
        time) each job started."""
        stmt = (
            select(events.c.time, events.c.job)
            .where(events.c.time >= since, events.c.type == EventType.STARTED.value)
            .order_by(events.c.time.desc())
            .limit(limit)
        )
        if queues is not None:
            stmt = stmt.select_from(events.join(jobs, jobs.c.id == events.c.job_id)).where(
                jobs.c.queue.in_(sorted(queues))
            )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        out: list[tuple[Micros, Micros]] = []
        for time, snapshot in rows:
            due = json.loads(snapshot).get("next_run_time")
            if due is not None:
                out.append((int(time), max(0, int(time) - int(due))))
        out.reverse()
        return out

    async def job_timeline(self, job_id: str, limit: int = 500) -> list[TimelineEntry]:
        """The newest `limit` events of one job still in the event log, oldest first."""
        stmt = (
            select(events.c.revision, events.c.type, events.c.time, events.c.job)
            .where(events.c.job_id == job_id)
            .order_by(events.c.revision.desc())
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        out = []
        for revision, etype, time, snapshot in reversed(rows):
            doc = json.loads(snapshot)
            out.append(
                TimelineEntry(
                    revision=int(revision),
                    type=EventType(etype),
                    time=int(time),
                    state=str(doc.get("state", "")),
                    attempt=int(doc.get("attempt", 0)),
                    error=str(doc.get("last_error", "")),
                )
            )
        return out

    async def last_attempts(self, job_ids: list[str]) -> dict[str, Attempt]:
        """The newest attempt of each of `job_ids` that has one (one index probe per job)."""
        found: dict[str, Attempt] = {}
        async with self._read() as conn:
            for job_id in job_ids:
                stmt = (
                    select(attempts)
                    .where(attempts.c.job_id == job_id)
                    .order_by(attempts.c.execution.desc(), attempts.c.number.desc())
                    .limit(1)
                )
                row = (await conn.execute(stmt)).mappings().first()
                if row is not None:
                    found[job_id] = attempt_from_row(row)
        return found
