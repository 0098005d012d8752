"""The dashboard's reads: id prefixes, outcome buckets, per-task summaries, fire lateness,
a job's timeline and the latest attempts."""

from __future__ import annotations

import uuid

from jobwheel.server.model import SECOND, AttemptOutcome, EventType, JobFilter, JobState
from jobwheel.server.rules.states import cancel
from jobwheel.server.storage import Store
from jobwheel.server.storage.schema import attempts

from tests.integration.storage.factories import T0, new_job


async def add_attempt(
    store: Store,
    job_id: str,
    execution: int,
    number: int,
    outcome: AttemptOutcome,
    start: int,
    end: int | None,
) -> None:
    async with store.write_engine.begin() as conn:
        await conn.execute(
            attempts.insert().values(
                id=str(uuid.uuid4()),
                job_id=job_id,
                execution=execution,
                number=number,
                start_time=start,
                end_time=end,
                outcome=outcome.value,
            )
        )


async def test_id_prefix_matches_exactly_the_ids_that_start_with_it(store: Store) -> None:
    ids = ["0abc-1", "0abc-2", "0abd-1", "1abc-1", "0ab%-x", "0ab_-y"]
    for job_id in ids:
        await store.insert_jobs([new_job(id=job_id)])

    async def found(prefix: str) -> set[str]:
        return {j.id for j in await store.list_jobs(JobFilter(id_prefix=prefix), limit=100)}

    assert await found("0abc") == {"0abc-1", "0abc-2"}
    assert await found("0ab") == {"0abc-1", "0abc-2", "0abd-1", "0ab%-x", "0ab_-y"}
    # LIKE wildcards in the prefix are plain characters
    assert await found("0ab%") == {"0ab%-x"}
    assert await found("0ab_") == {"0ab_-y"}
    assert await found("0abc-1") == {"0abc-1"}
    assert await found("2") == set()


async def test_attempt_buckets_and_task_summaries(store: Store) -> None:
    a = new_job(task="mail")
    b = new_job(task="report")
    await store.insert_jobs([a, b])
    base = T0 + 3600 * SECOND
    await add_attempt(store, a.id, 1, 1, AttemptOutcome.FAILED, base, base + 2 * SECOND)
    await add_attempt(store, a.id, 1, 2, AttemptOutcome.SUCCEEDED, base, base + 4 * SECOND)
    await add_attempt(store, b.id, 1, 1, AttemptOutcome.SUCCEEDED, base, base + 70 * SECOND)
    await add_attempt(store, b.id, 2, 1, AttemptOutcome.RUNNING, base, None)
    # before the window: not counted
    await add_attempt(store, b.id, 0, 1, AttemptOutcome.TIMED_OUT, T0, T0 + 1)

    buckets = await store.attempt_buckets(base, 60 * SECOND)
    # slots ascend; within a slot the outcomes come in any order
    assert sorted(buckets) == [
        (base, AttemptOutcome.FAILED, 1),
        (base, AttemptOutcome.SUCCEEDED, 1),
        (base + 60 * SECOND, AttemptOutcome.SUCCEEDED, 1),
    ]
    assert [slot for slot, _, _ in buckets] == sorted(slot for slot, _, _ in buckets)
    summaries = {s.task: s for s in await store.task_summaries(base)}
    assert summaries["mail"].succeeded == 1
    assert summaries["mail"].failed == 1
    assert summaries["mail"].mean_duration == 4 * SECOND
    assert summaries["report"].succeeded == 1
    assert summaries["report"].failed == 0
    assert summaries["report"].max_duration == 70 * SECOND

    assert await store.queue_throughput(base) == {"default": (2, 1)}
    assert await store.queue_throughput(base + 10 * SECOND) == {"default": (1, 0)}

    last = await store.last_attempts([a.id, b.id, "missing"])
    assert set(last) == {a.id, b.id}
    assert (last[a.id].execution, last[a.id].number) == (1, 2)
    assert (last[b.id].execution, last[b.id].outcome) == (2, AttemptOutcome.RUNNING)


async def test_lateness_and_timeline_come_from_the_event_log(store: Store) -> None:
    due = T0 + 10 * SECOND
    job = new_job(task="t", next_run_time=due)
    other = new_job(task="t", next_run_time=due)
    await store.insert_jobs([job, other])
    started = due + 250_000
    claimed = await store.claim("default", ["t"], 10, "w1", started, started + 60 * SECOND)
    assert len(claimed) == 2
    await store.apply_action(JobFilter(ids=(job.id,)), cancel("stop"), started + SECOND)

    lateness = await store.start_lateness(T0)
    assert lateness == [(started, 250_000), (started, 250_000)]
    assert await store.start_lateness(started + 1) == []

    timeline = await store.job_timeline(job.id)
    assert [e.type for e in timeline] == [
        EventType.ENQUEUED,
        EventType.STARTED,
        EventType.CANCELLED,
    ]
    assert [e.state for e in timeline] == ["queued", "running", JobState.CANCELLED.value]
    assert timeline[1].attempt == 1
    assert [e.revision for e in timeline] == sorted(e.revision for e in timeline)
    assert await store.job_timeline("missing") == []


async def test_many_ids_with_a_prefix_page_newest_first(store: Store) -> None:
    # enough ids share the prefix that the index range is not used: same answers
    many = [new_job(id=f"aa-{i:05d}") for i in range(2100)]
    await store.insert_jobs([*many, new_job(id="ab-1")])
    page = await store.list_jobs(JobFilter(id_prefix="aa-"), limit=3)
    assert [j.id for j in page] == ["aa-02099", "aa-02098", "aa-02097"]
    page = await store.list_jobs(JobFilter(id_prefix="aa-0001"), limit=100)
    assert len(page) == 10 and page[0].id == "aa-00019"


async def test_a_seq_window_bounds_the_rows_looked_at(store: Store) -> None:
    jobs = [job for job, _ in await store.insert_jobs([new_job() for _ in range(10)])]
    seqs = [j.seq for j in jobs]
    assert await store.newest_seq() == seqs[-1]
    page = await store.list_jobs(JobFilter(), limit=100, seq_window=(seqs[2], seqs[5]))
    assert [j.seq for j in page] == list(reversed(seqs[2:6]))
    page = await store.list_jobs(
        JobFilter(), limit=100, after_seq=seqs[4], seq_window=(seqs[2], seqs[5])
    )
    assert [j.seq for j in page] == [seqs[3], seqs[2]]
