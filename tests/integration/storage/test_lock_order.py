"""PostgreSQL: writes that name jobs by id lock them in seq order, as bulk actions do, so two
replicas cannot deadlock; a deadlock the database reports anyway answers ABORTED.

Each test forces the interleaving that deadlocked: a third transaction holds the first job's
row while a CancelJobs (seq order: first, then second) queues behind it, then the write under
test starts; once the holder commits, a write that had locked the second job first would
deadlock with the cancel.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import pytest
from jobwheel.server.api.errors import expected_status
from jobwheel.server.model import AttemptOutcome, Job, JobFilter, JobState
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.leases import Renewal
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from tests.conftest import fresh_pg_schema
from tests.integration.storage.factories import T0, new_job
from tests.integration.storage.pg_waits import waiting_on_locks

WORKER = "w@replica-a"


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one PostgreSQL schema: two replicas."""
    async with fresh_pg_schema() as url:
        a, b = await open_store(url), await open_store(url)
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()


async def _running_pair(store: Store) -> tuple[Job, Job]:
    """Two RUNNING jobs held by WORKER, lower seq first; ids in the other order (a plan
    reading by id locks the second first)."""
    prefix = uuid.uuid4().hex
    await store.insert_jobs([new_job(id=f"{prefix}-2"), new_job(id=f"{prefix}-1")])
    first, second = await store.claim("default", {"noop"}, 2, WORKER, T0, T0 + 10**9)
    assert first.seq < second.seq
    return first, second


async def _against_a_cancel(
    a: Store, b: Store, first: Job, second: Job, write: Awaitable[Any]
) -> tuple[Any, list[Job]]:
    """Runs `write` (on replica a) while replica b cancels both jobs, in the order that
    deadlocked; returns what each returned (raising what either raised)."""
    async with a.write_engine.connect() as holder, b.write_engine.connect() as probe:
        await holder.execute(text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": first.id})
        cancel = asyncio.ensure_future(
            b.apply_action(JobFilter(ids=(first.id, second.id)), states.cancel("stop"), T0 + 7)
        )
        await waiting_on_locks(probe, 1)
        under_test = asyncio.ensure_future(write)
        await waiting_on_locks(probe, 2)
        await holder.commit()
        done = await asyncio.gather(under_test, cancel, return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    return done[0], done[1]


@pytest.mark.postgres
async def test_a_heartbeat_with_progress_and_a_cancel_do_not_deadlock(
    replicas: tuple[Store, Store],
) -> None:
    a, b = replicas
    first, second = await _running_pair(a)
    # one renewal with progress, one without: two UPDATE shapes, the second job's first
    renewals = [
        Renewal(first.id, first.epoch, WORKER, T0 + 2 * 10**9, T0 + 5, progress={"p": 1}),
        Renewal(second.id, second.epoch, WORKER, T0 + 2 * 10**9, T0 + 5),
    ]
    renewed, cancelled = await _against_a_cancel(a, b, first, second, a.renew(renewals))
    assert {j.id for j in cancelled} == {first.id, second.id}
    # whichever committed first, the heartbeat renewed both leases or (cancelled) neither
    assert [r.applied for r in renewed] in ([False, False], [True, True])
    for job in (first, second):
        after = await a.get_job(job.id)
        assert after is not None and after.state is JobState.CANCELLED


@pytest.mark.postgres
async def test_settlements_and_a_cancel_do_not_deadlock(replicas: tuple[Store, Store]) -> None:
    a, b = replicas
    first, second = await _running_pair(a)
    ok = AttemptResult(AttemptOutcome.SUCCEEDED, result={"n": 1})
    # the batch names the second job first
    settlements = [states.settle(job, ok, T0 + 6, 0.5) for job in (second, first)]
    applied, cancelled = await _against_a_cancel(a, b, first, second, a.settle(settlements))
    # settled first, the jobs had ended and the cancel skipped them
    assert (applied, len(cancelled)) in (([False, False], 2), ([True, True], 0))


async def test_settlements_report_in_input_order(store: Store) -> None:
    first, second = await _running_pair(store)
    ok = AttemptResult(AttemptOutcome.SUCCEEDED)
    # of first's two settlements the first applies; second's applies, named before both
    early = states.settle(first, ok, T0 + 6, 0.5)
    late = states.settle(first, AttemptResult(AttemptOutcome.FAILED, error="x"), T0 + 7, 0.5)
    batch = [states.settle(second, ok, T0 + 6, 0.5), early, late]
    assert await store.settle(batch) == [True, True, False]
    after = await store.get_job(first.id)
    assert after is not None and after.state is JobState.COMPLETED


@pytest.mark.postgres
async def test_a_deadlock_the_database_reports_answers_aborted(
    replicas: tuple[Store, Store],
) -> None:
    a, b = replicas
    first, second = await _running_pair(a)
    lock = text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE")
    async with a.write_engine.connect() as one, b.write_engine.connect() as two:
        for conn in (one, two):
            await conn.execute(text("SET deadlock_timeout = '50ms'"))
        await one.execute(lock, {"id": first.id})
        await two.execute(lock, {"id": second.id})
        crossed = await asyncio.gather(
            one.execute(lock, {"id": second.id}),
            two.execute(lock, {"id": first.id}),
            return_exceptions=True,
        )
        for conn in (one, two):
            await conn.rollback()
    errors = [e for e in crossed if isinstance(e, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], sa_exc.DBAPIError)
    status = expected_status(errors[0])
    assert status is not None and status.code == grpc.StatusCode.ABORTED
    assert "rolled back; retry it" in status.details
