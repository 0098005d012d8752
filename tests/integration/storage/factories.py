"""Builders of model objects for the storage tests."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from typing import Any

from jobwheel.server.model import (
    DstFoldPolicy,
    DstGapPolicy,
    HttpTarget,
    JobState,
    MisfirePolicy,
    NewJob,
    OverlapPolicy,
    RetryPolicy,
    Schedule,
)
from jobwheel.server.storage import Store
from jobwheel.server.storage.dialect import dumps
from jobwheel.server.storage.schema import jobs
from sqlalchemy import update

T0 = 1_700_000_000_000_000  # an arbitrary fixed instant, in microseconds
_counter = itertools.count()


def new_job(**overrides: Any) -> NewJob:
    """A minimal valid job (immediate, no key, no schedule); fields replaceable by keyword."""
    n = next(_counter)
    base = NewJob(
        id=str(uuid.uuid4()),
        queue="default",
        task="noop",
        payload={},
        labels={},
        priority=0,
        state=JobState.QUEUED,
        schedule=None,
        retry_policy=RetryPolicy(),
        timeout=None,
        idempotency_key=None,
        http=None,
        create_time=T0 + n,
        next_run_time=T0 + n,
    )
    return replace(base, **overrides)


def full_job(**overrides: Any) -> NewJob:
    """A job with every optional field set to a non-default value."""
    schedule = Schedule(
        start_time=T0 + 5,
        cron="*/5 * * * *",
        time_zone="Europe/Berlin",
        interval=None,
        limit=10,
        end_time=T0 + 10**12,
        jitter=1_000,
        overlap_policy=OverlapPolicy.BUFFER_ONE,
        misfire_policy=MisfirePolicy.RUN_ALL,
        catchup_window=3_600_000_000,
        dst_gap_policy=DstGapPolicy.SKIP,
        dst_fold_policy=DstFoldPolicy.BOTH,
    )
    job = new_job(
        queue="emails",
        task="send_email",
        payload={
            "to": "ann@example.com",
            "n": 3,
            "ratio": 0.25,
            "ok": True,
            "none": None,
            "nested": {"b": [1, "two", {"three": 3.0}], "a": {}},
            "text": 'grüße \u2603 "quoted" \\ back',
        },
        labels={"team": "growth", "env": "prod"},
        priority=-7,
        state=JobState.SCHEDULED,
        schedule=schedule,
        retry_policy=RetryPolicy(
            max_attempts=9, initial_backoff=1, max_backoff=2, multiplier=1.5, jitter=0.0
        ),
        timeout=45_000_000,
        idempotency_key=f"key-{uuid.uuid4()}",
        http=HttpTarget(
            url="https://example.com/hook", method="PUT", headers={"X-A": "1", "x-b": "two"}
        ),
        next_run_time=T0 + 5,
    )
    return replace(job, **overrides)


async def set_columns(store: Store, job_id: str, **values: Any) -> None:
    """Write run-time columns directly (the engine's transitions are not part of this suite).
    Document columns take Python values and are encoded like the store does."""
    docs = {"result", "progress", "payload", "labels"}
    row = {k: (dumps(v) if k in docs and v is not None else v) for k, v in values.items()}
    async with store.write_engine.begin() as conn:
        await conn.execute(update(jobs).where(jobs.c.id == job_id).values(**row))
