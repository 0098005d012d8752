"""insert_jobs / get_job: round trips, idempotency, durability."""

from __future__ import annotations

import asyncio
from dataclasses import fields

import pytest
from jobwheel.server.api.job_service import MAX_BATCH
from jobwheel.server.model import HttpTarget, Job, JobFilter, JobState, NewJob, Schedule
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.bulk_writes import PG_COPY_MIN_ROWS
from jobwheel.server.storage.convert import NEW_JOB_COLUMNS, new_job_values
from jobwheel.server.storage.schema import jobs
from sqlalchemy import delete, insert

from tests.integration.storage.factories import full_job, new_job, set_columns
from tests.integration.storage.pg_waits import waiting_on_locks


def assert_matches_new(job: Job, new: NewJob) -> None:
    """Every NewJob field comes back unchanged; run-time fields hold their initial values."""
    for f in fields(NewJob):
        assert getattr(job, f.name) == getattr(new, f.name), f.name
    assert job.update_time == new.create_time
    assert (job.attempt, job.execution_count, job.skipped_count) == (0, 0, 0)
    assert (job.start_time, job.end_time, job.lease_expire_time) == (None, None, None)
    assert (job.last_error, job.cancel_reason, job.worker_id) == ("", "", "")
    assert job.result is None and job.progress is None
    assert job.seq > 0


@pytest.mark.parametrize("factory", [new_job, full_job], ids=["minimal", "full"])
async def test_insert_then_get_round_trips_every_field(store: Store, factory: object) -> None:
    new = factory()  # type: ignore[operator]
    [(inserted, existed)] = await store.insert_jobs([new])
    assert not existed
    assert_matches_new(inserted, new)
    fetched = await store.get_job(new.id)
    assert fetched == inserted
    assert fetched is not None and fetched.recurring == (new.schedule is not None)


async def test_empty_and_none_variants(store: Store) -> None:
    variants = [
        new_job(payload={}, labels={}, schedule=None, http=None, timeout=None),
        new_job(schedule=Schedule(), timeout=0, next_run_time=None, state=JobState.PAUSED),
        new_job(schedule=Schedule(interval=60_000_000), idempotency_key=""),
        new_job(http=HttpTarget(url="http://h/"), payload={"e": [], "o": {}, "s": ""}),
    ]
    inserted = await store.insert_jobs(variants)
    for (job, existed), new in zip(inserted, variants, strict=True):
        assert not existed
        assert_matches_new(job, new)
        assert await store.get_job(new.id) == job
    recurring = [j.recurring for j, _ in inserted]
    assert recurring == [False, False, True, False]


async def test_run_time_fields_round_trip(store: Store) -> None:
    [(job, _)] = await store.insert_jobs([new_job()])
    values = {
        "state": JobState.RUNNING.value,
        "update_time": 11,
        "attempt": 3,
        "execution_count": 2,
        "start_time": 12,
        "end_time": 13,
        "last_error": "boom\ntraceback",
        "result": {"rows": [1, 2], "ok": False},
        "cancel_reason": "user asked",
        "skipped_count": 4,
        "progress": {"done": 5, "of": 10},
        "worker_id": "worker-1",
        "lease_expire_time": 14,
    }
    await set_columns(store, job.id, **values)
    got = await store.get_job(job.id)
    assert got is not None
    assert got.state is JobState.RUNNING
    for name, value in values.items():
        if name != "state":
            assert getattr(got, name) == value, name
    for scalar in ("text", 7, None):
        await set_columns(store, job.id, result=scalar)
        got = await store.get_job(job.id)
        assert got is not None and got.result == scalar


async def test_get_missing_job_is_none(store: Store) -> None:
    assert await store.get_job("00000000-0000-0000-0000-000000000000") is None


async def test_batch_keeps_input_order_and_assigns_increasing_seq(store: Store) -> None:
    batch = [new_job(payload={"i": i}) for i in range(250)]
    results = await store.insert_jobs(batch)
    assert [j.id for j, _ in results] == [n.id for n in batch]
    seqs = [j.seq for j, _ in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for job, _ in results[::50]:
        assert await store.get_job(job.id) == job
    assert await store.insert_jobs([]) == []


async def test_idempotency_key_already_stored(store: Store) -> None:
    [(first, existed)] = await store.insert_jobs([new_job(idempotency_key="k1")])
    assert not existed
    again = new_job(idempotency_key="k1", task="other")
    plain = new_job()
    results = await store.insert_jobs([plain, again])
    assert results[0][1] is False and results[0][0].id == plain.id
    assert results[1] == (first, True)
    assert await store.get_job(again.id) is None


async def test_idempotency_key_repeated_within_batch(store: Store) -> None:
    batch = [
        new_job(idempotency_key="a"),
        new_job(idempotency_key="b"),
        new_job(idempotency_key="a"),
        new_job(),
        new_job(idempotency_key="b"),
        new_job(idempotency_key="a"),
    ]
    results = await store.insert_jobs(batch)
    assert [existed for _, existed in results] == [False, False, True, False, True, True]
    assert [j.id for j, _ in results] == [
        batch[0].id,
        batch[1].id,
        batch[0].id,
        batch[3].id,
        batch[1].id,
        batch[0].id,
    ]
    for dup in (batch[2], batch[4], batch[5]):
        assert await store.get_job(dup.id) is None


async def test_idempotency_mixed_stored_and_repeated(store: Store) -> None:
    [(stored, _)] = await store.insert_jobs([new_job(idempotency_key="s")])
    results = await store.insert_jobs(
        [new_job(idempotency_key="s"), new_job(idempotency_key="s"), new_job(idempotency_key="t")]
    )
    assert results[0] == (stored, True)
    assert results[1] == (stored, True)
    assert results[2][1] is False


async def test_fifty_concurrent_identical_inserts_make_one_job(store: Store) -> None:
    async def enqueue() -> tuple[Job, bool]:
        [result] = await store.insert_jobs([new_job(idempotency_key="same", payload={"x": 1})])
        return result

    results = await asyncio.gather(*(enqueue() for _ in range(50)))
    ids = {job.id for job, _ in results}
    assert len(ids) == 1
    assert sum(not existed for _, existed in results) == 1
    [winner_id] = ids
    winner = await store.get_job(winner_id)
    assert winner is not None and winner.idempotency_key == "same"


async def test_concurrent_overlapping_batches(store: Store) -> None:
    keys = [f"k{i}" for i in range(40)]

    async def enqueue(offset: int) -> list[tuple[Job, bool]]:
        batch = [new_job(idempotency_key=keys[(offset + i) % 40]) for i in range(20)]
        return await store.insert_jobs(batch)

    batches = await asyncio.gather(*(enqueue(o) for o in range(0, 40, 3)))
    owner: dict[str | None, str] = {}
    for results in batches:
        for job, _ in results:
            assert owner.setdefault(job.idempotency_key, job.id) == job.id
    assert sum(not e for results in batches for _, e in results) == len(owner)


async def test_batches_with_the_same_keys_in_opposite_orders_do_not_deadlock(
    store: Store,
) -> None:
    # each batch takes its keys in its own order: unordered, two such batches on PostgreSQL
    # each held a key the other waited for
    keys = [f"k{i}" for i in range(200)]

    async def enqueue(n: int) -> list[tuple[Job, bool]]:
        order = keys if n % 2 else keys[::-1]
        return await store.insert_jobs([new_job(idempotency_key=k) for k in order])

    for _ in range(3):
        batches = await asyncio.gather(*(enqueue(n) for n in range(6)))
        owners = {job.idempotency_key: job.id for job, _ in batches[0]}
        for results in batches:
            assert {job.idempotency_key: job.id for job, _ in results} == owners
        keys = [f"{k}'" for k in keys]  # fresh keys for the next round


async def test_a_key_an_unlocking_writer_commits_meanwhile_names_its_job(
    store: Store, backend: str
) -> None:
    # a writer that takes no key locks (a replica of an earlier version) inserts the key
    # after our look-up: our insert waits on the unique index, then skips the row
    if backend != "postgres":
        pytest.skip("PostgreSQL's locks")
    theirs = new_job(idempotency_key="late")
    async with store.write_engine.connect() as conn:
        await conn.execute(
            insert(jobs).values(dict(zip(NEW_JOB_COLUMNS, new_job_values(theirs), strict=True)))
        )
        ours = asyncio.create_task(store.insert_jobs([new_job(idempotency_key="late")]))
        async with store.write_engine.connect() as probe:
            await waiting_on_locks(probe, 1)  # ours, on their key
        await conn.commit()
    [(job, existed)] = await ours
    assert existed and job.id == theirs.id
    assert [j.id for j in await store.list_jobs(JobFilter(), limit=10)] == [theirs.id]


async def test_two_largest_keyed_batches_at_once_are_both_created(store: Store) -> None:
    # a lock per key filled PostgreSQL's shared lock table (out of shared memory) here
    async def enqueue(n: int) -> list[tuple[Job, bool]]:
        return await store.insert_jobs(
            [new_job(idempotency_key=f"{n}-{i}") for i in range(MAX_BATCH)]
        )

    batches = await asyncio.gather(enqueue(0), enqueue(1))
    assert [sum(not existed for _, existed in results) for results in batches] == [MAX_BATCH] * 2


async def test_duplicate_id_is_an_error_and_inserts_nothing(store: Store) -> None:
    [(job, _)] = await store.insert_jobs([new_job()])
    fresh = new_job()
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await store.insert_jobs([fresh, new_job(id=job.id)])
    assert await store.get_job(fresh.id) is None  # the whole batch rolled back


async def test_a_large_batch_without_keys_fails_or_commits_whole(store: Store) -> None:
    # enough jobs without keys for the bulk path (COPY on PostgreSQL)
    size = 2 * PG_COPY_MIN_ROWS
    [(job, _)] = await store.insert_jobs([new_job()])
    head = await store.head_revision()
    batch = [new_job(payload={"i": i}) for i in range(size)]
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await store.insert_jobs([*batch, new_job(id=job.id)])
    assert [await store.get_job(n.id) for n in batch[:3]] == [None] * 3
    assert await store.head_revision() == head

    results = await store.insert_jobs(batch)
    seqs = [j.seq for j, _ in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == size
    assert [await store.get_job(j.id) for j, _ in results[:: size // 4]] == [
        j for j, _ in results[:: size // 4]
    ]
    # one ENQUEUED event per job, gap-free revisions in input order, each the job as stored
    events = await store.read_events(head, size + 1)
    assert [e.revision for e in events] == list(range(head + 1, head + size + 1))
    assert [e.job for e in events] == [j for j, _ in results]


async def test_a_batch_of_differing_jobs_round_trips(store: Store) -> None:
    # jobs alike but for id, payload and times share one statement's values; these do not
    makers = [
        lambda: new_job(queue="a"),
        lambda: full_job(idempotency_key=None),  # keys take the general path
        lambda: new_job(labels={"k": "it's"}),
        lambda: new_job(priority=-3),
    ]
    batch = [makers[i % 4]() for i in range(80)]
    results = await store.insert_jobs(batch)
    for (job, _), new in zip(results, batch, strict=True):
        assert_matches_new(job, new)
    assert [await store.get_job(j.id) for j, _ in results[:4]] == [j for j, _ in results[:4]]


async def test_committed_jobs_survive_close_and_reopen(store_url: str) -> None:
    first = await open_store(store_url)
    batch = [full_job(), new_job(), new_job(idempotency_key="durable")]
    inserted = [job for job, _ in await first.insert_jobs(batch)]
    await first.close()

    second = await open_store(store_url)
    try:
        for job in inserted:
            assert await second.get_job(job.id) == job
        [(again, existed)] = await second.insert_jobs([new_job(idempotency_key="durable")])
        assert existed and again == inserted[2]
        [(later, _)] = await second.insert_jobs([new_job()])
        assert later.seq > max(j.seq for j in inserted)
    finally:
        await second.close()


async def test_seq_stays_correct_after_the_newest_jobs_are_deleted(store: Store) -> None:
    old = [job for job, _ in await store.insert_jobs([new_job() for _ in range(5)])]
    async with store.write_engine.begin() as conn:
        await conn.execute(delete(jobs).where(jobs.c.id.in_([j.id for j in old[3:]])))
    fresh = [job for job, _ in await store.insert_jobs([new_job() for _ in range(5)])]
    assert min(j.seq for j in fresh) > max(j.seq for j in old)  # deleted seqs are not reused
    for job in fresh:
        assert await store.get_job(job.id) == job
