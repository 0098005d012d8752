"""list_jobs: every JobFilter field, alone and combined."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from jobwheel.server.model import Job, JobFilter, JobState, NewJob, Schedule, TimeRange
from jobwheel.server.storage import Store

from tests.storage.factories import T0, new_job, set_columns


async def insert(store: Store, *jobs: NewJob) -> list[Job]:
    return [job for job, _ in await store.insert_jobs(list(jobs))]


async def ids(store: Store, flt: JobFilter, *, limit: int = 1000) -> set[str]:
    return {job.id for job in await store.list_jobs(flt, limit=limit)}


def id_set(*jobs: Job) -> set[str]:
    return {job.id for job in jobs}


async def test_empty_filter_lists_everything_newest_first(store: Store) -> None:
    jobs = await insert(store, *(new_job() for _ in range(5)))
    listed = await store.list_jobs(JobFilter(), limit=10)
    assert [j.id for j in listed] == [j.id for j in reversed(jobs)]
    assert listed[0] == jobs[-1]  # full rows, not just ids


async def test_ids_states_queues_tasks(store: Store) -> None:
    a, b, c, d = await insert(
        store,
        new_job(queue="q1", task="t1", state=JobState.QUEUED),
        new_job(queue="q1", task="t2", state=JobState.SCHEDULED),
        new_job(queue="q2", task="t1", state=JobState.PAUSED),
        new_job(queue="q3", task="t3", state=JobState.QUEUED),
    )
    assert await ids(store, JobFilter(ids=(a.id, c.id, "missing"))) == id_set(a, c)
    assert await ids(store, JobFilter(states=(JobState.QUEUED,))) == id_set(a, d)
    states = (JobState.SCHEDULED, JobState.PAUSED)
    assert await ids(store, JobFilter(states=states)) == id_set(b, c)
    assert await ids(store, JobFilter(states=(JobState.FAILED,))) == set()
    assert await ids(store, JobFilter(queues=("q1",))) == id_set(a, b)
    assert await ids(store, JobFilter(queues=("q2", "q3"))) == id_set(c, d)
    assert await ids(store, JobFilter(tasks=("t1",))) == id_set(a, c)
    # fields combine with AND, values within a field with OR
    flt = JobFilter(queues=("q1", "q2"), tasks=("t1",), states=(JobState.QUEUED,))
    assert await ids(store, flt) == id_set(a)


async def test_labels_exact_match_on_every_pair(store: Store) -> None:
    a, b, c, _ = await insert(
        store,
        new_job(labels={"team": "x", "env": "prod"}),
        new_job(labels={"team": "x", "env": "dev"}),
        new_job(labels={"team": "xy", "env": "prod", 'we"ird key': "v.1"}),
        new_job(labels={}),
    )
    assert await ids(store, JobFilter(labels=(("team", "x"),))) == id_set(a, b)
    assert await ids(store, JobFilter(labels=(("team", "x"), ("env", "prod")))) == id_set(a)
    assert await ids(store, JobFilter(labels=(("env", "prod"),))) == id_set(a, c)
    assert await ids(store, JobFilter(labels=(('we"ird key', "v.1"),))) == id_set(c)
    assert await ids(store, JobFilter(labels=(("team", "X"),))) == set()
    assert await ids(store, JobFilter(labels=(("missing", ""),))) == set()


TRICKY_STRINGS = ["acme", "acme x", "acm", 'a"c\\me', "é\u2028€", "😀", "a\tb", ""]


async def test_string_values_match_exactly(store: Store) -> None:
    # every string the API admits (no U+0000) matches itself only, in labels and payloads
    jobs = await insert(
        store, *(new_job(labels={"k": v}, payload={"k": v}) for v in TRICKY_STRINGS)
    )
    for job, value in zip(jobs, TRICKY_STRINGS, strict=True):
        assert await ids(store, JobFilter(labels=(("k", value),))) == id_set(job), value
        assert await ids(store, JobFilter(payload=(("k", value),))) == id_set(job), value


PAYLOADS: list[dict[str, Any]] = [
    {"s": "abc", "n": 1, "f": 1.5, "b": True, "z": None, "o": {"x": 1, "y": [1, 2]}, "l": [1, 2]},
    {"s": "1", "n": 2, "f": 2.5, "b": False, "o": {"x": 1}, "l": [2, 1]},
    {"s": "ABC", "n": 1.0, "b": 1, "z": 0, "o": {"y": [1, 2], "x": 1}, "l": [], "k.e y": "v"},
    {"s": {"abc": 1}, "n": "1", "b": "true", "z": "null", 'q"uote': "v"},
]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("s", "abc", {0}),  # strings: exact, case sensitive
        ("s", "1", {1}),  # a string is not a number
        ("n", 1, {0, 2}),  # numbers compare numerically: 1 == 1.0, but not "1"
        ("n", 1.0, {0, 2}),
        ("f", 2.5, {1}),
        ("b", True, {0}),  # true is not 1 nor "true"
        ("b", False, {1}),
        ("z", None, {0}),  # null needs the key present with null; 0 and "null" differ
        ("o", {"x": 1, "y": [1, 2]}, {0, 2}),  # nested: whole value, key order ignored
        ("o", {"x": 1}, {1}),  # not a subset match
        ("l", [1, 2], {0}),  # arrays: order matters
        ("l", [], {2}),
        ("missing", None, set()),
        ("k.e y", "v", {2}),  # keys are literal, not paths
        ('q"uote', "v", {3}),
    ],
)
async def test_payload_partial_match(
    store: Store, key: str, value: Any, expected: set[int]
) -> None:
    jobs = await insert(store, *(new_job(payload=p) for p in PAYLOADS))
    want = {jobs[i].id for i in expected}
    assert await ids(store, JobFilter(payload=((key, value),))) == want


async def test_payload_several_fields_and_with_labels(store: Store) -> None:
    jobs = await insert(
        store, *(new_job(payload=p, labels={"i": str(i)}) for i, p in enumerate(PAYLOADS))
    )
    flt = JobFilter(payload=(("n", 1), ("s", "ABC")))
    assert await ids(store, flt) == id_set(jobs[2])
    flt = JobFilter(payload=(("n", 1),), labels=(("i", "0"),))
    assert await ids(store, flt) == id_set(jobs[0])


@pytest.mark.parametrize("field", ["create_time", "next_run_time"])
async def test_time_ranges_are_half_open(store: Store, field: str) -> None:
    jobs = await insert(store, *(new_job(**{field: T0 + i * 10}) for i in range(5)))
    if field == "next_run_time":
        await insert(store, new_job(next_run_time=None))

    async def between(start: int | None, end: int | None) -> set[str]:
        bounds: dict[str, Any] = {field: TimeRange(start, end)}
        flt = replace(JobFilter(), **bounds)
        return await ids(store, flt)

    assert await between(T0 + 10, T0 + 30) == id_set(jobs[1], jobs[2])
    assert await between(T0 + 11, T0 + 30) == id_set(jobs[2])
    assert await between(None, T0 + 10) == id_set(jobs[0])
    assert await between(T0 + 40, None) == id_set(jobs[4])
    assert await between(T0 + 20, T0 + 20) == set()
    # an unbounded range still requires a value: jobs without one never match
    assert await between(None, None) == id_set(*jobs)


async def test_end_time_range(store: Store) -> None:
    jobs = await insert(store, *(new_job() for _ in range(4)))
    for i, job in enumerate(jobs[:3]):
        await set_columns(store, job.id, end_time=T0 + 100 * i, state=JobState.COMPLETED.value)

    assert await ids(store, JobFilter(end_time=TimeRange(T0 + 100, None))) == id_set(*jobs[1:3])
    assert await ids(store, JobFilter(end_time=TimeRange(None, T0 + 100))) == id_set(jobs[0])
    assert await ids(store, JobFilter(end_time=TimeRange())) == id_set(*jobs[:3])


async def test_recurring(store: Store) -> None:
    cron, interval, once, plain = await insert(
        store,
        new_job(schedule=Schedule(cron="0 * * * *")),
        new_job(schedule=Schedule(interval=1_000_000)),
        new_job(schedule=Schedule(start_time=T0)),
        new_job(),
    )
    assert await ids(store, JobFilter(recurring=True)) == id_set(cron, interval)
    assert await ids(store, JobFilter(recurring=False)) == id_set(once, plain)
    assert await ids(store, JobFilter(recurring=None)) == id_set(cron, interval, once, plain)


async def test_every_field_at_once(store: Store) -> None:
    target = new_job(
        queue="q",
        task="t",
        state=JobState.SCHEDULED,
        labels={"a": "1"},
        payload={"p": [1]},
        schedule=Schedule(interval=5),
        create_time=T0 + 1,
        next_run_time=T0 + 2,
    )
    job, _ = await insert(store, target, new_job(queue="q", task="t"))
    await set_columns(store, job.id, end_time=T0 + 3)
    flt = JobFilter(
        ids=(job.id,),
        states=(JobState.SCHEDULED,),
        queues=("q",),
        tasks=("t",),
        labels=(("a", "1"),),
        payload=(("p", [1]),),
        create_time=TimeRange(T0 + 1, T0 + 2),
        next_run_time=TimeRange(T0 + 2, T0 + 3),
        end_time=TimeRange(T0 + 3, T0 + 4),
        recurring=True,
    )
    assert await ids(store, flt) == id_set(job)
