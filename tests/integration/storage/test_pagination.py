"""list_jobs keyset pagination: both orders, page boundaries, concurrent inserts; pages
bounded by stored size."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from jobwheel.server.model import Job, JobFilter
from jobwheel.server.storage import Store, paging
from sqlalchemy import event

from tests.integration.storage.factories import new_job


async def insert_n(store: Store, n: int, **fields: object) -> list[Job]:
    return [job for job, _ in await store.insert_jobs([new_job(**fields) for _ in range(n)])]


async def page_through(
    store: Store, flt: JobFilter, *, limit: int, descending: bool
) -> list[list[Job]]:
    pages: list[list[Job]] = []
    after: int | None = None
    while True:
        page = await store.list_jobs(flt, limit=limit, after_seq=after, descending=descending)
        if not page:
            return pages
        pages.append(page)
        after = page[-1].seq


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 3, 5, 7, 100])
async def test_pages_cover_every_job_once_in_order(
    store: Store, descending: bool, limit: int
) -> None:
    jobs = await insert_n(store, 15)
    pages = await page_through(store, JobFilter(), limit=limit, descending=descending)
    flat = [j.id for page in pages for j in page]
    expected = [j.id for j in (reversed(jobs) if descending else jobs)]
    assert flat == expected
    # full pages until the last; 15 jobs in pages of 5 end exactly on a boundary
    assert [len(p) for p in pages[:-1]] == [limit] * (len(pages) - 1)
    assert len(pages) == -(-15 // limit)


async def test_page_boundaries(store: Store) -> None:
    jobs = await insert_n(store, 4)
    assert await store.list_jobs(JobFilter(), limit=0) == []
    with pytest.raises(ValueError):
        await store.list_jobs(JobFilter(), limit=-1)
    # a cursor past either end
    assert await store.list_jobs(JobFilter(), limit=10, after_seq=jobs[0].seq) == []
    last = jobs[-1].seq
    assert await store.list_jobs(JobFilter(), limit=10, after_seq=last, descending=False) == []
    # a cursor is a position, not a job: it need not exist (e.g. the job was deleted)
    beyond = await store.list_jobs(JobFilter(), limit=10, after_seq=last + 1000)
    assert [j.id for j in beyond] == [j.id for j in reversed(jobs)]
    asc = await store.list_jobs(JobFilter(), limit=2, after_seq=0, descending=False)
    assert [j.id for j in asc] == [j.id for j in jobs[:2]]


async def test_pages_with_a_filter(store: Store) -> None:
    wanted = []
    for _ in range(6):
        wanted += await insert_n(store, 2, queue="a")
        await insert_n(store, 3, queue="b")
    pages = await page_through(store, JobFilter(queues=("a",)), limit=5, descending=True)
    assert [j.id for p in pages for j in p] == [j.id for j in reversed(wanted)]


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
async def test_inserts_between_pages_cause_no_duplicates_or_gaps(
    store: Store, descending: bool
) -> None:
    before = await insert_n(store, 30)
    seen: list[str] = []
    after: int | None = None
    while True:
        page = await store.list_jobs(JobFilter(), limit=4, after_seq=after, descending=descending)
        if not page:
            break
        seen += [j.id for j in page]
        after = page[-1].seq
        if len(seen) < len(before):  # (ascending would otherwise never run out)
            await insert_n(store, 3)  # lands after every existing job
    assert len(seen) == len(set(seen))
    assert {j.id for j in before} <= set(seen)
    if descending:
        assert seen == [j.id for j in reversed(before)]


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
async def test_paging_while_inserting_concurrently(store: Store, descending: bool) -> None:
    before = await insert_n(store, 200)
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            await insert_n(store, 5)
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        seen: list[str] = []
        after: int | None = None
        for _ in range(1000):
            page = await store.list_jobs(
                JobFilter(), limit=9, after_seq=after, descending=descending
            )
            if not page or (not descending and set(j.id for j in before) <= set(seen)):
                break
            seen += [j.id for j in page]
            after = page[-1].seq
    finally:
        stop.set()
        await task
    assert len(seen) == len(set(seen))
    assert {j.id for j in before} <= set(seen)


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
async def test_pages_bounded_by_stored_size(store: Store, descending: bool) -> None:
    """list_jobs_page: every job once, in order; a page of several jobs holds at most
    max_bytes of stored documents; only the last page says no more follow."""
    sizes = [10, 40_000, 5, 90_000, 30_000, 30_000, 30_000, 1, 120_000, 7]
    jobs = [
        job
        for job, _ in await store.insert_jobs([new_job(payload={"blob": "x" * n}) for n in sizes])
    ]
    budget = 100_000
    pages: list[list[Job]] = []
    after: int | None = None
    more = True
    while more:
        found, more = await store.list_jobs_page(
            JobFilter(), limit=1000, max_bytes=budget, after_seq=after, descending=descending
        )
        page = list(found)
        assert page, "a page is never empty while more follow"
        pages.append(page)
        after = page[-1].seq
    flat = [j.id for page in pages for j in page]
    assert flat == [j.id for j in (reversed(jobs) if descending else jobs)]
    for page in pages:
        stored = sum(len(json.dumps(j.payload, separators=(",", ":"))) for j in page)
        assert len(page) == 1 or stored <= budget
    # the 120,000-character payload is alone on its page, and pages are not cut short
    assert any(len(p) == 1 and len(p[0].payload["blob"]) == 120_000 for p in pages)
    assert len(pages) < len(sizes)


async def test_page_size_limit_still_applies(store: Store) -> None:
    await insert_n(store, 5)
    found, more = await store.list_jobs_page(JobFilter(), limit=3, max_bytes=1 << 20)
    assert len(list(found)) == 3 and more
    found, more = await store.list_jobs_page(JobFilter(), limit=5, max_bytes=1 << 20)
    assert len(list(found)) == 5 and not more


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
async def test_size_lookups_continue_across_chunks(store: Store, descending: bool) -> None:
    """More rows than one size query looks at: pages continue where the last one stopped."""
    sizes = [10] * 40 + [60_000] * 3 + [10] * 57
    jobs = [
        job
        for job, _ in await store.insert_jobs([new_job(payload={"blob": "x" * n}) for n in sizes])
    ]
    expected = [j.id for j in (reversed(jobs) if descending else jobs)]
    found, more = await store.list_jobs_page(
        JobFilter(), limit=1000, max_bytes=10 << 20, descending=descending
    )
    assert [j.id for j in found] == expected and not more
    seen: list[str] = []
    after: int | None = None
    more = True
    while more:
        found, more = await store.list_jobs_page(
            JobFilter(), limit=70, max_bytes=100_000, after_seq=after, descending=descending
        )
        page = list(found)
        assert 1 <= len(page) <= 70
        seen += [j.id for j in page]
        after = page[-1].seq
    assert seen == expected


async def _selects(store: Store, read: Callable[[], Awaitable[object]]) -> list[str]:
    """The SELECT statements `read` sends (on either engine)."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append(statement)

    engines = {store.read_engine.sync_engine, store.write_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        await read()
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
    return sent


async def test_a_page_of_small_rows_takes_one_statement_and_big_rows_are_read_again(
    store: Store,
) -> None:
    """Rows whose documents are small come whole with their sizes; a row past
    a document's share of paging.INLINE_BYTES is read by key, whole."""
    small = await insert_n(store, 12, payload={"n": 1})
    pages: list[tuple[list[Job], bool]] = []

    async def page(limit: int) -> None:
        found, more = await store.list_jobs_page(JobFilter(), limit=limit, max_bytes=4 << 20)
        pages.append((list(found), more))

    assert len(await _selects(store, lambda: page(10))) == 1
    assert [j.id for j in pages[-1][0]] == [j.id for j in reversed(small)][:10]
    assert pages[-1][1]
    blob = "x" * (paging.INLINE_BYTES + 1)  # over any document's share of it
    (big, _), *_ = await store.insert_jobs([new_job(payload={"blob": blob})])
    sent = await _selects(store, lambda: page(3))
    assert len(sent) == 2
    got, more = pages[-1]
    assert [j.id for j in got] == [big.id, small[-1].id, small[-2].id] and more
    assert got[0].payload == {"blob": blob} and got[1].payload == {"n": 1}
