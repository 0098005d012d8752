"""The engine's execution of in-process handlers at its edges.

Retries and backoff limits, timeouts of handlers that ignore cancellation, operator actions
on a RUNNING job, handlers raising unusual exceptions or returning values that cannot be
stored, queue changes with attempts in flight, and a restart mid-attempt.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from jobwheel.server import task
from jobwheel.server.execution.inprocess import TaskContext
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import job_service_pb2_grpc

from tests.conftest import Running, running_server
from tests.integration.api.waiting import until, until_watching, wait_for_state

# -- handlers of these tests (also loaded by server subprocesses: --handlers <this module>) --


class Abort(BaseException):
    """What a library may raise to unwind (e.g. gevent's GreenletExit, trio's Cancelled)."""


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


@task("edge.base_exception")
async def base_exception(payload: dict[str, Any]) -> None:
    raise Abort("unwinding")


@task("edge.generator_exit")
async def generator_exit(payload: dict[str, Any]) -> None:
    raise GeneratorExit


@task("edge.system_exit")
async def system_exit(payload: dict[str, Any]) -> None:
    raise SystemExit(3)


@task("edge.keyboard_interrupt")
def keyboard_interrupt(payload: dict[str, Any]) -> None:  # in the thread pool
    raise KeyboardInterrupt


@task("edge.str_raises")
async def str_raises(payload: dict[str, Any]) -> None:
    raise BadStr()


@task("edge.str_raises_sync")
def str_raises_sync(payload: dict[str, Any]) -> None:
    raise BadStr()


# when each run of edge.stubborn began, and whether it saw a cancel (by job id)
STUBBORN_CANCELS: dict[str, int] = {}


@task("edge.stubborn")
async def stubborn(payload: dict[str, Any], ctx: TaskContext) -> str:
    """Ignores cancellation (swallows CancelledError) for `seconds`, then returns."""
    seconds = payload.get("seconds", 1.0)
    if payload.get("first_only") and (ctx.attempt > 1 or ctx.execution > 1):
        seconds = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            await asyncio.sleep(left)
        except asyncio.CancelledError:
            STUBBORN_CANCELS[ctx.job_id] = STUBBORN_CANCELS.get(ctx.job_id, 0) + 1
    return "finished anyway"


@task("edge.sync_stubborn")
def sync_stubborn(payload: dict[str, Any], ctx: TaskContext) -> str:
    """A blocking handler that never looks at ctx.cancelled."""
    time.sleep(payload.get("seconds", 1.0))
    return "slept"


# the attempts edge.sync_quick actually ran (by job id)
SYNC_QUICK_RAN: dict[str, list[int]] = {}


@task("edge.sync_quick")
def sync_quick(payload: dict[str, Any], ctx: TaskContext) -> str:
    SYNC_QUICK_RAN.setdefault(ctx.job_id, []).append(ctx.attempt)
    return "quick"


@task("edge.own_cancelled_error")
async def own_cancelled_error(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Its first attempt fails with a CancelledError of its own (say, of a future a library
    cancelled); nobody cancelled the attempt."""
    if ctx.attempt == 1:
        inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        inner.cancel()
        await inner
    return ctx.attempt


@task("edge.returns")
async def returns(payload: dict[str, Any]) -> Any:
    kind = payload["kind"]
    if kind == "big_int":
        return 10**400
    if kind == "int_keys":
        return {1: "a", 2: [1, 2]}
    if kind == "inf":
        return [float("inf")]
    if kind == "huge_finite":
        return {"n": 10**300, "m": 2**64}
    if kind == "tuple":
        return ("a", 1)
    if kind == "bytes_key":
        return {b"k": 1}
    raise AssertionError(kind)


GATES: dict[str, asyncio.Event] = {}


@task("edge.gate")
async def gate(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    await GATES.setdefault(payload["gate"], asyncio.Event()).wait()
    return {"attempt": ctx.attempt}


# -- helpers ---------------------------------------------------------------------------------


def payload(**fields: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


def ms(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=n // 1000, nanos=(n % 1000) * 1_000_000)


ONCE = j.RetryPolicy(max_attempts=1)


async def enqueue(server: Running, **kw: Any) -> j.Job:
    return (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(**kw))).job


async def get(server: Running, job_id: str) -> j.Job:
    return (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job


async def history(server: Running, job_id: str) -> list[j.Attempt]:
    resp = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
    return list(resp.attempts)


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


# -- unusual exceptions ------------------------------------------------------------------------


@pytest.mark.parametrize("task_name", ["edge.str_raises", "edge.str_raises_sync"])
async def test_exception_whose_str_raises_fails_the_attempt(
    server: Running, task_name: str
) -> None:
    # an error text built from str(exc) raised again, and the job hung RUNNING for its lease
    job = await enqueue(server, task=task_name, retry_policy=ONCE)
    done = await wait_for_state(server.jobs, job.id, within=8)
    assert done.state == j.JOB_STATE_FAILED
    assert done.last_error.startswith("BadStr")
    [attempt] = await history(server, job.id)
    assert attempt.outcome == j.ATTEMPT_OUTCOME_FAILED


@pytest.mark.parametrize("task_name", ["edge.base_exception", "edge.generator_exit"])
async def test_base_exception_from_a_handler_fails_the_attempt(
    server: Running, task_name: str
) -> None:
    # only Exception was caught: the job hung RUNNING for its lease, then re-ran as LOST
    job = await enqueue(server, task=task_name, retry_policy=ONCE)
    done = await wait_for_state(server.jobs, job.id, within=8)
    assert done.state == j.JOB_STATE_FAILED
    [attempt] = await history(server, job.id)
    assert attempt.outcome == j.ATTEMPT_OUTCOME_FAILED
    assert attempt.error.startswith("GeneratorExit" if "generator" in task_name else "Abort")


@pytest.mark.parametrize("task_name", ["edge.system_exit", "edge.keyboard_interrupt"])
async def test_system_exit_or_keyboard_interrupt_in_a_handler_does_not_kill_the_server(
    tmp_path: Path, task_name: str
) -> None:
    # asyncio re-raises SystemExit and KeyboardInterrupt from a task into the event loop:
    # one handler calling sys.exit() ended the whole server
    from tests.acceptance.process import ServerProcess

    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'j.db'}",
        tmp_path / "server.log",
        "--handlers",
        "tests.integration.api.test_engine_edges",
    )
    proc.start()
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            req = pb.EnqueueJobRequest(task=task_name, retry_policy=ONCE)
            job = (await stub.EnqueueJob(req)).job
            deadline = time.monotonic() + 8
            while True:
                assert proc.proc is not None
                assert proc.proc.poll() is None, (
                    f"server exited with {proc.proc.returncode} running {task_name}"
                )
                got = (await stub.GetJob(pb.GetJobRequest(id=job.id), timeout=2)).job
                if got.state == j.JOB_STATE_FAILED:
                    break
                assert time.monotonic() < deadline, j.JobState.Name(got.state)
                await asyncio.sleep(0.05)
    finally:
        proc.stop()


async def test_a_handlers_own_cancelled_error_is_a_retried_failure(server: Running) -> None:
    # a CancelledError nobody sent (the job was not cancelled) is the handler's failure,
    # retried per the policy; it was taken for a cancel and the job ended FAILED
    policy = j.RetryPolicy(max_attempts=3, initial_backoff=ms(10), max_backoff=ms(10), jitter=0)
    job = await enqueue(server, task="edge.own_cancelled_error", retry_policy=policy)
    done = await wait_for_state(server.jobs, job.id)
    rows = await history(server, job.id)
    assert done.state == j.JOB_STATE_COMPLETED, (
        j.JobState.Name(done.state),
        [(a.number, j.AttemptOutcome.Name(a.outcome), a.error) for a in rows],
    )
    assert done.result.number_value == 2
    assert rows[0].outcome == j.ATTEMPT_OUTCOME_FAILED


# -- timeouts and handlers that ignore cancellation ----------------------------------------------


async def test_async_handler_that_swallows_the_timeout_does_not_succeed(server: Running) -> None:
    # a handler that swallows the timeout's cancellation and returns is not a success, and
    # the attempt ends at its timeout, not when the handler likes
    job = await enqueue(
        server,
        task="edge.stubborn",
        payload=payload(seconds=1.0),
        timeout=ms(100),
        retry_policy=ONCE,
    )
    done = await wait_for_state(server.jobs, job.id)
    [attempt] = await history(server, job.id)
    assert attempt.outcome == j.ATTEMPT_OUTCOME_TIMED_OUT, j.AttemptOutcome.Name(attempt.outcome)
    assert done.state == j.JOB_STATE_FAILED and done.last_error.startswith("TimeoutError")
    assert attempt.duration.ToMilliseconds() < 700  # ended at its timeout, not at the handler's


async def test_cancelled_job_whose_handler_ignores_cancel_frees_its_queue_slot(
    server: Running,
) -> None:
    # a cancelled job whose handler swallows the cancel gives its queue's room back (it
    # kept a queue of concurrency 1 blocked by a CANCELLED job)
    queue = "edge-one"
    await server.jobs.UpdateQueue(pb.UpdateQueueRequest(name=queue, max_concurrency=1))
    stuck = await enqueue(server, task="edge.stubborn", queue=queue, payload=payload(seconds=4))
    await wait_for_state(server.jobs, stuck.id, (j.JOB_STATE_RUNNING,))
    await server.jobs.CancelJob(pb.CancelJobRequest(id=stuck.id, reason="stop"))
    assert (await get(server, stuck.id)).state == j.JOB_STATE_CANCELLED
    nxt = await enqueue(server, task="test.echo", queue=queue)
    done = await wait_for_state(server.jobs, nxt.id, within=2.5)
    assert done.state == j.JOB_STATE_COMPLETED
    after = await get(server, stuck.id)
    assert after.state == j.JOB_STATE_CANCELLED and after.cancel_reason == "stop"
    [attempt] = await history(server, stuck.id)
    assert attempt.outcome == j.ATTEMPT_OUTCOME_CANCELLED


async def test_timed_out_sync_handler_does_not_time_out_the_next_jobs_unrun(
    db_url: str,
) -> None:
    # a sync handler past its timeout keeps its pool thread (threads cannot be killed); the
    # next sync jobs' timeouts start with their handlers, not while they wait for a thread
    # (they ended TIMED_OUT, charged, without having run)
    async with running_server(db_url, threads=1) as server:
        hog = await enqueue(
            server,
            task="edge.sync_stubborn",
            payload=payload(seconds=2.0),
            timeout=ms(100),
            retry_policy=ONCE,
        )
        await wait_for_state(server.jobs, hog.id)
        quick = await enqueue(server, task="edge.sync_quick", timeout=ms(500), retry_policy=ONCE)
        done = await wait_for_state(server.jobs, quick.id)
        [attempt] = await history(server, quick.id)
        assert (done.state, attempt.outcome) == (
            j.JOB_STATE_COMPLETED,
            j.ATTEMPT_OUTCOME_SUCCEEDED,
        ) or SYNC_QUICK_RAN.get(quick.id), (
            f"{j.JobState.Name(done.state)} / {attempt.error!r} though its handler never ran"
        )


# -- retries and backoff -----------------------------------------------------------------------


async def test_default_retry_policy_waits_30s_before_the_second_attempt(server: Running) -> None:
    job = await enqueue(server, task="test.boom")
    assert job.retry_policy.max_attempts == 4
    after = await wait_for_state(server.jobs, job.id, (j.JOB_STATE_RETRYING,))
    [attempt] = await history(server, job.id)
    assert attempt.outcome == j.ATTEMPT_OUTCOME_FAILED and after.attempt == 1
    wait = after.next_run_time.ToMicroseconds() - attempt.end_time.ToMicroseconds()
    assert 27_000_000 <= wait <= 33_000_001  # 30 s +/- 10 % jitter
    assert after.last_error == "ValueError: boom"


async def test_max_backoff_caps_a_steep_multiplier(server: Running) -> None:
    # without the cap the third wait would be 0.05 s * 100**2 = 500 s
    policy = j.RetryPolicy(
        max_attempts=4, initial_backoff=ms(50), max_backoff=ms(100), multiplier=100, jitter=0
    )
    job = await enqueue(server, task="test.boom", retry_policy=policy)
    done = await wait_for_state(server.jobs, job.id, within=10)
    assert done.state == j.JOB_STATE_FAILED and done.attempt == 4
    rows = await history(server, job.id)
    assert [a.number for a in rows] == [1, 2, 3, 4]
    assert all(a.outcome == j.ATTEMPT_OUTCOME_FAILED for a in rows)
    gaps = [
        b.start_time.ToMicroseconds() - a.end_time.ToMicroseconds()
        for a, b in itertools.pairwise(rows)
    ]
    assert gaps[0] >= 50_000 and all(g >= 100_000 for g in gaps[1:])  # never early
    assert not done.HasField("next_run_time") and done.HasField("end_time")


async def test_timeouts_are_retried_and_counted_like_failures(server: Running) -> None:
    policy = j.RetryPolicy(max_attempts=3, initial_backoff=ms(10), max_backoff=ms(10), jitter=0)
    job = await enqueue(
        server, task="test.flaky", payload=payload(succeed_on=9), retry_policy=policy
    )
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == j.JOB_STATE_FAILED and done.attempt == 3
    assert done.last_error == "RuntimeError: attempt 3 fails"
    hung = await enqueue(server, task="test.hang", timeout=ms(50), retry_policy=policy)
    done = await wait_for_state(server.jobs, hung.id)
    assert done.state == j.JOB_STATE_FAILED and done.attempt == 3
    assert [a.outcome for a in await history(server, hung.id)] == [j.ATTEMPT_OUTCOME_TIMED_OUT] * 3


# -- results that cannot be stored -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["big_int", "inf", "bytes_key"])
async def test_unstorable_results_fail_the_attempt_and_the_job_stays_readable(
    server: Running, kind: str
) -> None:
    job = await enqueue(server, task="edge.returns", payload=payload(kind=kind), retry_policy=ONCE)
    done = await wait_for_state(server.jobs, job.id)
    [attempt] = await history(server, job.id)
    if done.state == j.JOB_STATE_COMPLETED:  # a result that was stored must read back
        assert attempt.outcome == j.ATTEMPT_OUTCOME_SUCCEEDED
        return
    assert done.state == j.JOB_STATE_FAILED
    assert attempt.outcome == j.ATTEMPT_OUTCOME_FAILED
    assert attempt.error.startswith("ResultError"), attempt.error
    listed = await server.jobs.ListJobs(pb.ListJobsRequest(filter=j.JobFilter(ids=[job.id])))
    assert [x.id for x in listed.jobs] == [job.id]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("int_keys", {"1": "a", "2": [1.0, 2.0]}),
        ("tuple", ["a", 1.0]),
        ("huge_finite", {"n": 1e300, "m": float(2**64)}),
    ],
)
async def test_results_json_coerces_are_stored_as_json(
    server: Running, kind: str, expected: Any
) -> None:
    from google.protobuf.json_format import MessageToDict

    job = await enqueue(server, task="edge.returns", payload=payload(kind=kind), retry_policy=ONCE)
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == j.JOB_STATE_COMPLETED, done.last_error
    assert MessageToDict(done.result) == expected
    # the same after a round trip through the database (a fresh read, a listing)
    listed = await server.jobs.ListJobs(pb.ListJobsRequest(filter=j.JobFilter(ids=[job.id])))
    assert MessageToDict(listed.jobs[0].result) == expected


# -- operator actions on a RUNNING job ---------------------------------------------------------


async def test_actions_refused_on_a_running_job_leave_its_attempt_alone(
    server: Running, request: pytest.FixtureRequest
) -> None:
    name = request.node.name
    job = await enqueue(server, task="edge.gate", payload=payload(gate=name))
    await wait_for_state(server.jobs, job.id, (j.JOB_STATE_RUNNING,))
    calls = [
        server.jobs.RetryJob(pb.RetryJobRequest(id=job.id)),
        server.jobs.DeleteJob(pb.DeleteJobRequest(id=job.id)),
        server.jobs.TriggerJob(pb.TriggerJobRequest(id=job.id)),
        server.jobs.PauseJob(pb.PauseJobRequest(id=job.id)),
        server.jobs.ResumeJob(pb.ResumeJobRequest(id=job.id)),
        server.jobs.RescheduleJob(pb.RescheduleJobRequest(id=job.id, schedule=j.Schedule())),
    ]
    for call in calls:
        assert await code_of(call) == grpc.StatusCode.FAILED_PRECONDITION
    assert (await get(server, job.id)).state == j.JOB_STATE_RUNNING
    GATES.setdefault(name, asyncio.Event()).set()
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == j.JOB_STATE_COMPLETED and done.attempt == 1
    [attempt] = await history(server, job.id)
    assert attempt.outcome == j.ATTEMPT_OUTCOME_SUCCEEDED


async def test_cancel_while_running_watch_is_gap_free_and_ends_cancelled(
    server: Running, request: pytest.FixtureRequest
) -> None:
    name = request.node.name
    job = await enqueue(
        server,
        task="edge.gate",
        payload=payload(gate=name),
        retry_policy=j.RetryPolicy(max_attempts=5, initial_backoff=ms(0)),
    )
    await wait_for_state(server.jobs, job.id, (j.JOB_STATE_RUNNING,))
    stream = server.jobs.WatchJobs(pb.WatchJobsRequest(include_snapshot=True))
    events: list[j.JobEvent] = []

    async def read() -> None:
        async for msg in stream:
            if msg.HasField("event"):
                events.append(msg.event)

    reader = asyncio.ensure_future(read())
    try:
        await until_watching(server, 1)
        await server.jobs.CancelJob(pb.CancelJobRequest(id=job.id, reason="enough"))
        assert server.app.engine is not None
        dispatcher = server.app.engine.dispatcher

        async def let_go() -> bool:
            return not dispatcher.holds(job.id)

        await until(server, let_go)
        await asyncio.sleep(0.5)  # anything late (a retry, a FAILED) would show by now
    finally:
        reader.cancel()
    live = [e for e in events if e.type != j.JOB_EVENT_TYPE_SNAPSHOT]
    assert live, "no live events"
    revs = [e.revision for e in live]
    assert revs == list(range(revs[0], revs[0] + len(revs))), revs
    assert live[-1].job.state == j.JOB_STATE_CANCELLED
    assert all(e.job.state == j.JOB_STATE_CANCELLED for e in live), [
        (j.JobEventType.Name(e.type), j.JobState.Name(e.job.state)) for e in live
    ]
    after = await get(server, job.id)
    assert after.state == j.JOB_STATE_CANCELLED and after.attempt == 1
    [attempt] = await history(server, job.id)
    assert attempt.outcome == j.ATTEMPT_OUTCOME_CANCELLED and attempt.HasField("end_time")
    # a retry of the cancelled job is a fresh execution that runs to its end
    GATES.setdefault(name, asyncio.Event()).set()
    await server.jobs.RetryJob(pb.RetryJobRequest(id=job.id))
    done = await wait_for_state(server.jobs, job.id, (j.JOB_STATE_COMPLETED,))
    assert done.execution_count == 2 and done.attempt == 1
    rows = await history(server, job.id)
    assert [(a.execution, a.number) for a in rows] == [(1, 1), (2, 1)]


# -- queues with attempts in flight -------------------------------------------------------------


async def test_pausing_a_queue_lets_running_attempts_finish_and_starts_nothing(
    server: Running, request: pytest.FixtureRequest
) -> None:
    name = request.node.name
    queue = "edge-pause"
    await server.jobs.UpdateQueue(pb.UpdateQueueRequest(name=queue, max_concurrency=2))
    jobs = [
        await enqueue(server, task="edge.gate", queue=queue, payload=payload(gate=name))
        for _ in range(5)
    ]
    for _ in range(100):
        states = [(await get(server, x.id)).state for x in jobs]
        if states.count(j.JOB_STATE_RUNNING) == 2:
            break
        await asyncio.sleep(0.02)
    assert states.count(j.JOB_STATE_RUNNING) == 2 and states.count(j.JOB_STATE_QUEUED) == 3
    await server.jobs.PauseQueue(pb.PauseQueueRequest(name=queue))
    GATES.setdefault(name, asyncio.Event()).set()
    running = [x for x, s in zip(jobs, states, strict=True) if s == j.JOB_STATE_RUNNING]
    waiting = [x for x, s in zip(jobs, states, strict=True) if s == j.JOB_STATE_QUEUED]
    for x in running:
        assert (await wait_for_state(server.jobs, x.id)).state == j.JOB_STATE_COMPLETED
    await asyncio.sleep(0.3)
    assert [(await get(server, x.id)).state for x in waiting] == [j.JOB_STATE_QUEUED] * 3
    await server.jobs.ResumeQueue(pb.ResumeQueueRequest(name=queue))
    for x in waiting:
        done = await wait_for_state(server.jobs, x.id)
        assert done.state == j.JOB_STATE_COMPLETED and done.attempt == 1


async def test_lowering_concurrency_with_attempts_in_flight_is_honoured(server: Running) -> None:
    from tests import handlers

    queue = "edge-shrink"
    await server.jobs.UpdateQueue(pb.UpdateQueueRequest(name=queue, max_concurrency=4))
    first = [
        await enqueue(server, task="test.overlap", queue=queue, payload=payload(ms=300))
        for _ in range(4)
    ]
    for x in first:
        await wait_for_state(server.jobs, x.id, (j.JOB_STATE_RUNNING, *[j.JOB_STATE_COMPLETED]))
    await server.jobs.UpdateQueue(pb.UpdateQueueRequest(name=queue, max_concurrency=1))
    reqs = [
        pb.EnqueueJobRequest(task="test.overlap", queue=queue, payload=payload(ms=30))
        for _ in range(10)
    ]
    resp = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    for x in first:
        await wait_for_state(server.jobs, x.id)
    handlers.OVERLAP_MOST[queue] = handlers.OVERLAP_NOW[queue]  # from now on
    for r in resp.results:
        done = await wait_for_state(server.jobs, r.job.id)
        assert done.state == j.JOB_STATE_COMPLETED
    assert handlers.OVERLAP_MOST[queue] <= 1
    rows = [(await get(server, r.job.id)) for r in resp.results]
    spans = sorted((x.start_time.ToMicroseconds(), x.end_time.ToMicroseconds()) for x in rows)
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))


# -- restart mid-attempt -----------------------------------------------------------------------


async def test_stop_mid_attempt_then_restart_reruns_uncharged_with_honest_history(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    name = request.node.name
    url = f"sqlite:///{tmp_path / 'jobwheel.db'}"
    async with running_server(url) as server:
        job = await enqueue(server, task="edge.gate", payload=payload(gate=name), retry_policy=ONCE)
        await wait_for_state(server.jobs, job.id, (j.JOB_STATE_RUNNING,))
    # stopped with the attempt still in its handler: released, not charged
    GATES.setdefault(name, asyncio.Event()).set()
    async with running_server(url) as server:
        done = await wait_for_state(server.jobs, job.id)
        assert done.state == j.JOB_STATE_COMPLETED, done.last_error
        assert done.attempt == 2 and done.execution_count == 1
        assert done.result.struct_value["attempt"] == 2
        rows = await history(server, job.id)
        assert [a.number for a in rows] == [1, 2]
        assert rows[0].outcome == j.ATTEMPT_OUTCOME_LOST and rows[0].HasField("end_time")
        assert rows[1].outcome == j.ATTEMPT_OUTCOME_SUCCEEDED
        assert rows[0].end_time.ToMicroseconds() <= rows[1].start_time.ToMicroseconds()


async def test_rate_limit_holds_under_a_batch_burst(server: Running) -> None:
    queue = "edge-rated"
    await server.jobs.UpdateQueue(
        pb.UpdateQueueRequest(name=queue, max_dispatches_per_second=5, max_concurrency=256)
    )
    reqs = [pb.EnqueueJobRequest(task="test.noop", queue=queue) for _ in range(15)]
    resp = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    starts = []
    for r in resp.results:
        done = await wait_for_state(server.jobs, r.job.id)
        assert done.state == j.JOB_STATE_COMPLETED and done.attempt == 1
        starts.append(done.start_time.ToMicroseconds())
    starts.sort()
    # a bucket of 5 refilled at 5/s: 15 starts take about 2 s, and no second holds more than
    # the burst plus a second's refill
    assert starts[-1] - starts[0] >= 1_800_000
    for i, first in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < first + 1_000_000) <= 10


async def test_stop_with_a_handler_ignoring_cancel_is_not_charged_as_a_crash(
    tmp_path: Path,
) -> None:
    # after the grace period and RELEASE_WAIT, an attempt whose handler goes on is released
    # unused, as the others are (it stayed RUNNING, and the next start charged it as LOST)
    url = f"sqlite:///{tmp_path / 'jobwheel.db'}"
    async with running_server(url) as server:
        job = await enqueue(
            server,
            task="edge.stubborn",
            payload=payload(seconds=7, first_only=True),
            retry_policy=ONCE,
        )
        await wait_for_state(server.jobs, job.id, (j.JOB_STATE_RUNNING,))
    async with running_server(url) as server:
        done = await wait_for_state(server.jobs, job.id, within=10)
        rows = await history(server, job.id)
        assert [j.AttemptOutcome.Name(a.outcome) for a in rows] == [
            "ATTEMPT_OUTCOME_LOST",
            "ATTEMPT_OUTCOME_SUCCEEDED",
        ], (j.JobState.Name(done.state), done.last_error)
        assert done.state == j.JOB_STATE_COMPLETED


async def test_retry_of_a_cancelled_job_whose_handler_still_runs_keeps_queue_accounting(
    server: Running, request: pytest.FixtureRequest
) -> None:
    # a retried execution claimed while the cancelled attempt's handler still runs: the old
    # attempt's end gives back its own room, not the new attempt's (the queue ran one fewer
    # job at once for good)
    name = request.node.name
    queue = "edge-two"
    await server.jobs.UpdateQueue(pb.UpdateQueueRequest(name=queue, max_concurrency=2))
    job = await enqueue(
        server,
        task="edge.stubborn",
        queue=queue,
        payload=payload(seconds=1.5, first_only=True),
    )
    await wait_for_state(server.jobs, job.id, (j.JOB_STATE_RUNNING,))
    await server.jobs.CancelJob(pb.CancelJobRequest(id=job.id))
    await server.jobs.RetryJob(pb.RetryJobRequest(id=job.id))
    done = await wait_for_state(server.jobs, job.id, (j.JOB_STATE_COMPLETED,))
    assert done.execution_count == 2
    await asyncio.sleep(2.0)  # the first handler has returned by now
    assert server.app.engine is not None
    dispatcher = server.app.engine.dispatcher
    assert not dispatcher.holds(job.id)
    assert dispatcher.rooms.running[queue] == 0, "a slot of the queue is still counted as taken"
    # the queue runs two at once again
    pair = [
        await enqueue(server, task="edge.gate", queue=queue, payload=payload(gate=name))
        for _ in range(2)
    ]
    try:
        for x in pair:
            await wait_for_state(server.jobs, x.id, (j.JOB_STATE_RUNNING,), within=3)
    finally:
        GATES.setdefault(name, asyncio.Event()).set()
    rows = await history(server, job.id)
    assert [(a.execution, a.number, a.outcome) for a in rows] == [
        (1, 1, j.ATTEMPT_OUTCOME_CANCELLED),
        (2, 1, j.ATTEMPT_OUTCOME_SUCCEEDED),
    ]
