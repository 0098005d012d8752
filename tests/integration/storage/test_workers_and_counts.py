"""The workers table (ListWorkers), held jobs, the metrics' starting count, trace context."""

from __future__ import annotations

import json
from dataclasses import replace

from jobwheel.server.model import SECOND, JobState
from jobwheel.server.storage import Store
from jobwheel.server.storage.schema import workers
from jobwheel.server.storage.workers import WorkerRow
from sqlalchemy import update

from tests.integration.storage.factories import T0, new_job

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_workers_are_recorded_replaced_listed_and_forgotten(store: Store) -> None:
    await store.record_workers(
        [
            WorkerRow("inprocess@a", "server", T0, tasks=("t1",), info={"version": "1.0"}),
            WorkerRow("w1", "remote", T0, queues=("q",), tasks=("t2",), server="inprocess@a"),
            WorkerRow("w2", "remote", T0 - 100 * SECOND),
        ]
    )
    # seen again, asking for something else; an older sighting never moves last_seen back
    await store.record_workers([WorkerRow("w1", "remote", T0 + SECOND, tasks=("t3",))])
    await store.record_workers([WorkerRow("inprocess@a", "server", T0 - SECOND, tasks=("t1",))])
    rows = {r.id: r for r in await store.list_workers(T0 - 10 * SECOND)}
    assert set(rows) == {"inprocess@a", "w1"}
    assert rows["w1"].last_seen == T0 + SECOND and rows["w1"].tasks == ("t3",)
    assert rows["inprocess@a"].last_seen == T0 and rows["inprocess@a"].info == {"version": "1.0"}
    assert await store.forget_workers(T0 - 10 * SECOND) == 1
    assert {r.id for r in await store.list_workers(0)} == {"inprocess@a", "w1"}
    await store.record_workers([])


async def test_jobs_held_counts_running_jobs_by_worker(store: Store) -> None:
    await store.insert_jobs([new_job(task="t") for _ in range(3)])
    await store.lease("w1", queue_names=(), tasks=("t",), skip_tasks=(), limit=2, now=T0,
                      lease_until=T0 + 30 * SECOND)  # fmt: skip
    await store.lease("w2", queue_names=(), tasks=("t",), skip_tasks=(), limit=5, now=T0,
                      lease_until=T0 + 30 * SECOND)  # fmt: skip
    assert await store.jobs_held() == {"w1": 2, "w2": 1}


async def test_active_counts_by_state_queue_and_task(store: Store) -> None:
    revision = await store.head_revision()
    await store.insert_jobs(
        [
            new_job(task="a", queue="q1"),
            new_job(task="a", queue="q1"),
            new_job(task="b", queue="q2", state=JobState.SCHEDULED, next_run_time=T0 * 2),
        ]
    )
    head, counts = await store.active_counts()
    assert head == revision + 3
    assert counts == {(JobState.QUEUED, "q1", "a"): 2, (JobState.SCHEDULED, "q2", "b"): 1}


async def test_trace_context_is_kept_with_the_job(store: Store) -> None:
    [(job, _)] = await store.insert_jobs([new_job(traceparent=TRACEPARENT)])
    assert job.traceparent == TRACEPARENT
    got = await store.get_job(job.id)
    assert got is not None and got.traceparent == TRACEPARENT
    [leased] = await store.lease("w", queue_names=(), tasks=(), skip_tasks=(), limit=1, now=T0,
                                 lease_until=T0 + SECOND)  # fmt: skip
    assert leased.traceparent == TRACEPARENT


async def test_forget_workers_keeps_the_most_recently_seen_remote_rows(store: Store) -> None:
    await store.record_workers(
        [
            WorkerRow("inprocess@a", "server", T0 - 50 * SECOND),
            *(WorkerRow(f"w{i}", "remote", T0 + i * SECOND) for i in range(6)),
        ]
    )
    assert await store.forget_workers(T0 - 100 * SECOND, keep_remote=10) == 0
    assert await store.forget_workers(T0 - 100 * SECOND, keep_remote=4) == 2
    assert {r.id for r in await store.list_workers(0)} == {"inprocess@a", "w2", "w3", "w4", "w5"}
    # the old rule still applies, to every kind
    assert await store.forget_workers(T0 + 3 * SECOND, keep_remote=4) == 2
    assert {r.id for r in await store.list_workers(0)} == {"w3", "w4", "w5"}


async def test_forget_workers_keeps_asks_within_a_budget(store: Store) -> None:
    asks = tuple(f"q{i}" for i in range(10))  # 50 characters of JSON: ["q0", "q1", ...]
    size = len(json.dumps(list(asks))) + len("[]")
    await store.record_workers(
        [WorkerRow(f"w{i}", "remote", T0 + i * SECOND, queues=asks) for i in range(5)]
    )
    # room for two rows and a half: the two most recently seen stay
    assert await store.forget_workers(T0 - SECOND, keep_asks=size * 5 // 2) == 3
    rows = await store.list_workers(0)
    assert [r.id for r in rows] == ["w3", "w4"]
    assert rows[0].queues == asks and rows[0].queues is rows[1].queues  # one tuple, shared


async def set_stored_queues(store: Store, worker_id: str, text: str) -> None:
    """Changes a row behind the store's back: a write of the asks would undo it."""
    async with store.write_engine.begin() as conn:
        await conn.execute(update(workers).where(workers.c.id == worker_id).values(queues=text))


async def test_unchanged_workers_only_move_last_seen(store: Store) -> None:
    await store.record_workers(
        [
            WorkerRow("w1", "remote", T0, queues=("q",), server="a"),
            WorkerRow("w2", "remote", T0, queues=("q",), server="b"),
            WorkerRow("w3", "remote", T0, queues=("q",), server="a"),
        ]
    )
    for worker_id in ("w1", "w2", "w3"):
        await set_stored_queues(store, worker_id, '["sentinel"]')
    again = [
        WorkerRow(f"w{i}", "remote", T0 + SECOND, queues=("q",), server="a") for i in (1, 2, 3, 4)
    ]
    await store.record_workers(again, unchanged={"w1", "w2", "w4"})
    rows = {r.id: r for r in await store.list_workers(0)}
    assert {w: r.last_seen for w, r in rows.items()} == {w: T0 + SECOND for w in rows}
    # w1: unchanged and still as "a" wrote it; w2: "b" wrote it; w3: changed; w4: no row
    assert rows["w1"].queues == ("sentinel",)
    assert rows["w2"].queues == rows["w3"].queues == rows["w4"].queues == ("q",)
    assert {rows[w].server for w in ("w2", "w3", "w4")} == {"a"}
    # an older sighting moves nothing, unchanged or not
    await store.record_workers([replace(again[0], last_seen=T0)], unchanged={"w1"})
    assert {r.id: r.last_seen for r in await store.list_workers(0)}["w1"] == T0 + SECOND


async def test_listed_workers_may_omit_what_a_replica_holds(store: Store) -> None:
    await store.record_workers(
        [
            WorkerRow("inprocess@a", "server", T0 + 5 * SECOND),
            WorkerRow("w1", "remote", T0, server="inprocess@a"),
            WorkerRow("w2", "remote", T0 + SECOND, server="inprocess@a"),
            WorkerRow("w3", "remote", T0 + 2 * SECOND, server="inprocess@a"),
            WorkerRow("w4", "remote", T0 + 2 * SECOND, server="inprocess@b"),
        ]
    )
    listed = await store.list_workers(0, omit=("inprocess@a", {"w2", "w3"}))
    assert [r.id for r in listed] == ["inprocess@a", "w1", "w4"]
    everything = await store.list_workers(0, omit=("inprocess@a", ()))
    assert [r.id for r in everything] == ["inprocess@a", "w1", "w2", "w3", "w4"]


async def test_asks_a_writer_does_not_know_are_never_written(store: Store) -> None:
    await store.record_workers([WorkerRow("w1", "remote", T0, queues=("q",), server="a")])
    unknown = [
        WorkerRow(w, "remote", T0 + SECOND, server="b") for w in ("w1", "w2")
    ]  # heard from at "b", leased through "a"
    assert await store.record_workers(unknown, asks_unknown={"w1", "w2"}) == {"w2"}
    rows = {r.id: r for r in await store.list_workers(0)}
    assert set(rows) == {"w1"}  # no row saying "any queue, any task" for w2
    assert (rows["w1"].queues, rows["w1"].server, rows["w1"].last_seen) == (
        ("q",),
        "a",
        T0 + SECOND,
    )


async def test_changed_asks_are_written_even_when_seen_later_elsewhere(store: Store) -> None:
    await store.record_workers([WorkerRow("w1", "remote", T0, queues=("q1",), server="a")])
    # another replica's heartbeat moved last_seen past this replica's lease with new asks
    await store.record_workers(
        [WorkerRow("w1", "remote", T0 + 2 * SECOND, server="b")], asks_unknown={"w1"}
    )
    await store.record_workers([WorkerRow("w1", "remote", T0 + SECOND, queues=("q2",), server="a")])
    (row,) = await store.list_workers(0)
    assert (row.queues, row.server, row.last_seen) == (("q2",), "a", T0 + 2 * SECOND)
