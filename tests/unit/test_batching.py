"""GroupCommit merges concurrent calls, answers each after its batch, isolates failures."""

from __future__ import annotations

import asyncio

import pytest
from jobwheel.server.batching import GroupCommit


async def test_concurrent_calls_share_batches_and_get_their_own_results() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        writes.append(items)
        await asyncio.sleep(0.01)  # a commit in progress: later calls queue up meanwhile
        return [i * 10 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(write)
    results = await asyncio.gather(*(gc([i, i + 1000]) for i in range(100)))
    assert results == [[i * 10, (i + 1000) * 10] for i in range(100)]
    assert sorted(x for w in writes for x in w) == sorted(
        [i for i in range(100)] + [i + 1000 for i in range(100)]
    )
    assert len(writes) <= 3  # the first call alone, then the rest together


async def test_a_failing_call_does_not_fail_its_neighbours() -> None:
    async def write(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if -1 in items:
            raise ValueError("bad item")
        return items

    gc: GroupCommit[int, int] = GroupCommit(write)
    calls = [gc([1]), gc([-1]), gc([2]), gc([3])]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == [1] and results[2] == [2] and results[3] == [3]
    assert isinstance(results[1], ValueError)


async def test_max_batch_is_respected() -> None:
    sizes: list[int] = []

    async def write(items: list[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0.001)
        return items

    gc: GroupCommit[int, int] = GroupCommit(write, max_batch=10)
    await asyncio.gather(*(gc([i, i]) for i in range(50)))
    assert max(sizes) <= 10 and sum(sizes) == 100


async def test_a_cancelled_caller_does_not_cancel_the_batch() -> None:
    done = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        await asyncio.sleep(0.02)
        done.set()
        return items

    gc: GroupCommit[int, int] = GroupCommit(write)
    first = asyncio.create_task(gc([1]))
    second = asyncio.create_task(gc([2]))
    await asyncio.sleep(0.005)
    first.cancel()
    assert await second == [2]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert done.is_set()


async def test_a_cancelled_write_settles_every_waiting_caller() -> None:
    started = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        started.set()
        await asyncio.sleep(10)
        return items

    gc: GroupCommit[int, int] = GroupCommit(write)
    first = asyncio.create_task(gc([1]))
    await started.wait()
    second = asyncio.create_task(gc([2]))  # queued behind the write in progress
    await asyncio.sleep(0)
    assert gc._flusher is not None
    gc._flusher.cancel()
    for call in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call, 2)


async def test_a_cancelled_caller_ends_once_its_batch_is_written() -> None:
    written: list[list[int]] = []
    release = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        await release.wait()
        written.append(items)
        return items

    gc: GroupCommit[int, int] = GroupCommit(write)
    caller = asyncio.create_task(gc([1]))
    await asyncio.sleep(0.01)
    caller.cancel()
    await asyncio.sleep(0.01)
    assert not caller.done()  # its items are in a write in progress
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert written == [[1]]


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_under_load_a_batch_waits_a_few_turns_for_more_calls() -> None:
    writes: list[list[str]] = []
    late: list[asyncio.Task[list[str]]] = []

    async def write(items: list[str]) -> list[str]:
        writes.append(items)
        await asyncio.sleep(0.01)
        if len(writes) == 1:  # a call that reaches the group commit two turns after this write
            late.append(asyncio.create_task(_after_turns(2, "late")))
        return items

    async def _after_turns(n: int, item: str) -> list[str]:
        await _turns(n)
        return await gc([item])

    gc: GroupCommit[str, str] = GroupCommit(write, gather_turns=4)
    first = await asyncio.gather(gc(["a"]), gc(["b"]), _after_turns(1, "c"))
    assert first == [["a"], ["b"], ["c"]]
    assert await late[0] == ["late"]
    # "c" waited for the first write; "late" came in the turns waited before the second
    assert writes == [["a", "b"], ["c", "late"]]


class _Recorded:
    """A group commit gathering 8 turns under load, whose writes (10 ms each) are recorded."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.gc: GroupCommit[str, str] = GroupCommit(self._write, gather_turns=8)

    async def _write(self, items: list[str]) -> list[str]:
        self.writes.append(items)
        await asyncio.sleep(0.01)
        return items

    async def after_turns(self, n: int, item: str) -> list[str]:
        await _turns(n)
        return await self.gc([item])


async def test_when_idle_a_call_is_written_without_waiting_turns() -> None:
    rec = _Recorded()
    # written alone, so the next write (under no load) does not wait either
    assert await asyncio.gather(rec.gc(["a"]), rec.after_turns(2, "b")) == [["a"], ["b"]]
    assert rec.writes == [["a"], ["b"]]
    assert await asyncio.gather(rec.gc(["c"]), rec.after_turns(2, "d")) == [["c"], ["d"]]
    assert rec.writes == [["a"], ["b"], ["c"], ["d"]]


async def test_after_a_burst_an_idle_call_is_written_without_waiting_turns() -> None:
    rec = _Recorded()
    # a burst whose last write merged calls: "a" alone, then "b" and "c" together
    burst = await asyncio.gather(rec.gc(["a"]), rec.after_turns(1, "b"), rec.after_turns(1, "c"))
    assert burst == [["a"], ["b"], ["c"]]
    assert rec.writes == [["a"], ["b", "c"]]
    await asyncio.sleep(0.05)  # idle
    # a call then is written at once: one arriving two turns later is not gathered into it
    assert await asyncio.gather(rec.gc(["d"]), rec.after_turns(2, "e")) == [["d"], ["e"]]
    assert rec.writes[2:] == [["d"], ["e"]]
