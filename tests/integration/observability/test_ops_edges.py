"""Observability and the server's admin commands at their edges: the /metrics endpoint,
label bounds under hostile names, gauges after cancels and retries, log lines fed hostile text,
garbage trace context, health, and `jobwheel-server token create` with its tokens file."""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobwheel.server.observability import logs
from jobwheel.server.security.roles import Role
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.server.security.tokens import TokensFile, digest, entry_text, new_token, parse
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Running, running_server
from tests.integration.api.waiting import wait_for_state
from tests.integration.observability.test_traces import spans  # noqa: F401

SERVER_BIN = str(Path(sys.executable).with_name("jobwheel-server"))
ONE_ATTEMPT = job_pb2.RetryPolicy(max_attempts=1)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
async def mserver(db_url: str) -> AsyncIterator[Running]:
    async with running_server(db_url, metrics_listen="127.0.0.1:0") as running:
        obs = running.app.observability
        assert obs is not None and obs.jobs is not None
        obs.jobs.recount_every = 0.05
        yield running


@pytest.fixture
async def sqlite_mserver(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_server(
        f"sqlite:///{tmp_path / 'jw.db'}", metrics_listen="127.0.0.1:0"
    ) as running:
        yield running


def metrics_port(running: Running) -> int:
    assert running.app.observability is not None
    return running.app.observability.port


def http_call(port: int, method: str, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        return reply.status, reply.getheader("Content-Type") or "", reply.read()
    finally:
        conn.close()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(running: Running) -> Samples:
    status, _, body = await asyncio.to_thread(http_call, metrics_port(running), "GET", "/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def token_create(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SERVER_BIN, "token", "create", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# -- the /metrics endpoint ----------------------------------------------------------------------


async def test_metrics_get_answers_with_the_prometheus_text_format(
    sqlite_mserver: Running,
) -> None:
    status, ctype, body = await asyncio.to_thread(
        http_call, metrics_port(sqlite_mserver), "GET", "/metrics"
    )
    assert status == 200
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"jobwheel_build_info", "jobwheel_jobs", "grpc_server_started"} <= names
    # POST is not a scrape
    status, _, _ = await asyncio.to_thread(
        http_call, metrics_port(sqlite_mserver), "POST", "/metrics"
    )
    assert status == 405


# -- label bounds and gauges ----------------------------------------------------------------------


async def test_hostile_distinct_names_keep_every_series_bounded(mserver: Running) -> None:
    """Hundreds of distinct queues and tasks: no metric gets more than the cap + `other` label
    values, the jobs gauge and the without-worker gauge included."""
    many = 260
    await mserver.jobs.BatchEnqueueJobs(
        pb.BatchEnqueueJobsRequest(
            jobs=[pb.EnqueueJobRequest(task=f"nobody.t{i}", queue=f"q{i}") for i in range(many)]
        )
    )
    roster = mserver.app.roster
    assert roster is not None and roster.after_flush is not None
    roster.started -= 3600  # as if the server had run for long: "without worker" applies
    await roster.flush()
    roster.after_flush(roster.unserved)
    samples = await scrape(mserver)
    for metric in ("jobwheel_jobs", "jobwheel_jobs_enqueued_total", "jobwheel_jobs_without_worker"):
        for label in ("queue", "task"):
            values = {
                dict(labels).get(label)
                for name, labels in samples
                if name == metric and dict(labels).get(label) is not None
            }
            assert len(values) <= 101, (metric, label, len(values))
    assert value(samples, "jobwheel_jobs_enqueued_total", queue="other", task="other") > 0
    total_queued = sum(
        v for (name, labels), v in samples.items()
        if name == "jobwheel_jobs" and dict(labels).get("state") == "queued"
    )  # fmt: skip
    assert total_queued == many  # folded, not lost


async def test_cancel_of_a_running_in_process_job_brings_running_gauges_back_to_zero(
    mserver: Running,
) -> None:
    job = (await mserver.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.hang"))).job
    await wait_for_state(mserver.jobs, job.id, (job_pb2.JOB_STATE_RUNNING,))
    samples = await scrape(mserver)
    assert value(samples, "jobwheel_attempts_running", executor="inprocess") == 1
    assert value(samples, "jobwheel_jobs", state="running", queue="default") == 1
    await mserver.jobs.CancelJob(pb.CancelJobRequest(id=job.id, reason="operator"))
    await wait_for_state(mserver.jobs, job.id, (job_pb2.JOB_STATE_CANCELLED,))
    deadline = time.monotonic() + 10
    while True:
        samples = await scrape(mserver)
        running = value(samples, "jobwheel_jobs", state="running", queue="default")
        inproc = value(samples, "jobwheel_attempts_running", executor="inprocess")
        if running == 0 and inproc == 0:
            break
        assert running >= 0 and inproc >= 0, samples  # never negative
        assert time.monotonic() < deadline, (running, inproc)
        await asyncio.sleep(0.05)
    assert value(samples, "jobwheel_jobs_cancelled_total", queue="default", task="test.hang") == 1
    assert value(samples, "jobwheel_jobs_completed_total", queue="default", task="test.hang") == 0


async def test_operator_retry_and_delete_keep_counters_and_gauge_exact(mserver: Running) -> None:
    failed = (
        await mserver.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="test.boom", retry_policy=ONE_ATTEMPT)
        )
    ).job
    await wait_for_state(mserver.jobs, failed.id, (job_pb2.JOB_STATE_FAILED,))
    samples = await scrape(mserver)
    labels = {"queue": "default", "task": "test.boom"}
    assert value(samples, "jobwheel_jobs_failed_total", **labels) == 1
    assert value(samples, "jobwheel_jobs_retried_total", **labels) == 0
    # RetryJob of a FAILED job: one retry, one more start and failure
    await mserver.jobs.RetryJob(pb.RetryJobRequest(id=failed.id))
    deadline = time.monotonic() + 10
    while value(samples, "jobwheel_jobs_failed_total", **labels) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
        samples = await scrape(mserver)
    assert value(samples, "jobwheel_jobs_retried_total", **labels) == 1
    assert value(samples, "jobwheel_jobs_started_total", **labels) == 2
    # deleting a scheduled job: the gauge drops it (after the recount), never below zero
    later = (
        await mserver.jobs.EnqueueJob(
            pb.EnqueueJobRequest(
                task="test.echo", queue="dq", schedule=job_pb2.Schedule(delay={"seconds": 600})
            )
        )
    ).job
    samples = await scrape(mserver)
    assert value(samples, "jobwheel_jobs", state="scheduled", queue="dq") == 1
    await mserver.jobs.DeleteJob(pb.DeleteJobRequest(id=later.id))
    deadline = time.monotonic() + 10
    while value(samples, "jobwheel_jobs", state="scheduled", queue="dq") != 0:
        assert value(samples, "jobwheel_jobs", state="scheduled", queue="dq") > 0
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
        samples = await scrape(mserver)
    assert all(v >= 0 for (name, _), v in samples.items() if name == "jobwheel_jobs")


# -- logs --------------------------------------------------------------------------------------

FORGED = "2026-01-01 00:00:00,000 ERROR jobwheel.server.security forged: admin token leaked"


async def test_text_log_line_of_a_failed_attempt_cannot_be_forged_by_its_error(
    tmp_path: Path, root_stream: io.StringIO
) -> None:
    """A remote worker's FailJob error is free text quoted in the text-format log line: a
    newline in it must not start a line that looks like a record of its own, nor an ANSI
    escape reach the operator's terminal."""
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}") as server:
        job = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.x"))).job
        leased = await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id="w", tasks=["remote.x"], max_jobs=1)
        )
        [lease] = leased.leases
        await server.workers.FailJob(
            wpb.FailJobRequest(
                job_id=job.id,
                epoch=lease.epoch,
                worker_id="w",
                error=f"Oops: first\n{FORGED}\n\x1b[2J\x1b[31mred",
                retryable=False,
            )
        )
        await wait_for_state(server.jobs, job.id, (job_pb2.JOB_STATE_FAILED,))
        deadline = time.monotonic() + 5
        while job.id not in root_stream.getvalue():
            assert time.monotonic() < deadline, root_stream.getvalue()
            await asyncio.sleep(0.02)
    out = root_stream.getvalue()
    assert "Oops" in out
    assert not any(line.startswith(FORGED) for line in out.splitlines()), out
    assert "\x1b" not in out


async def test_json_log_line_of_a_failed_attempt_stays_one_line(tmp_path: Path) -> None:
    """The JSON format escapes hostile error text: one parseable line, the text intact."""
    import json

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    try:
        async with running_server(f"sqlite:///{tmp_path / 'jw.db'}") as server:
            job = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.y"))).job
            [lease] = (
                await server.workers.LeaseJobs(
                    wpb.LeaseJobsRequest(worker_id="w", tasks=["remote.y"], max_jobs=1)
                )
            ).leases
            error = f"Oops: a\n{FORGED}\r\x1b[2J" + "x" * 100_000
            await server.workers.FailJob(
                wpb.FailJobRequest(
                    job_id=job.id, epoch=lease.epoch, worker_id="w", error=error, retryable=False
                )
            )
            await wait_for_state(server.jobs, job.id, (job_pb2.JOB_STATE_FAILED,))
            deadline = time.monotonic() + 5
            while job.id not in stream.getvalue():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().split("\n") if line]
    [failed] = [line for line in lines if line.get("job_id") == job.id]
    assert FORGED in failed["message"] and len(failed["message"]) < 20_000  # bounded
    assert "\x1b" not in stream.getvalue()  # escaped as \u001b


# -- health -----------------------------------------------------------------------------------


async def test_health_per_service_unknown_service_and_shutdown(tmp_path: Path) -> None:
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}") as server:
        stub = health_pb2_grpc.HealthStub(server.channel)
        for service in ("", "jobwheel.v1.JobService", "jobwheel.v1.WorkerService"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="x" * 100_000))
        assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        # Watch says SERVING first, then NOT_SERVING when the server drains
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(server.app.stop(0.5))
        statuses = []
        try:
            async with asyncio.timeout(5):
                while True:
                    message = await watch.read()
                    if message is grpc.aio.EOF:
                        break
                    statuses.append(message.status)
                    if message.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        break
        except grpc.aio.AioRpcError:
            pass
        await stopping
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses


# -- traces ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("spans")  # the process's one tracer provider, as test_traces sets it
async def test_garbage_or_huge_traceparent_neither_breaks_a_call_nor_is_stored(
    tmp_path: Path,
) -> None:
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}") as server:
        assert server.app.observability is not None and server.app.observability.tracing
        hostile = [
            "garbage",
            "00-" + "0" * 32 + "-" + "0" * 16 + "-01",  # all-zero ids: invalid
            "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",  # version ff: invalid
            "01-" + "a" * 32 + "-" + "b" * 16 + "-01-" + "z" * 6000,  # future version, huge
            "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + " " * 3000,
        ]
        for tp in hostile:
            reply = await server.jobs.EnqueueJob(
                pb.EnqueueJobRequest(task="remote.t", queue="tp"),
                metadata=(("traceparent", tp), ("tracestate", "k=" + "v" * 200)),
            )
            stored = await server.app.store.get_job(reply.job.id)  # type: ignore[union-attr]
            assert stored is not None and re.fullmatch(
                r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", stored.traceparent
            ), tp
            assert "z" * 10 not in stored.traceparent
        leased = await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id="w", tasks=["remote.t"], max_jobs=len(hostile))
        )
        assert all(len(lease.traceparent) == 55 for lease in leased.leases)


# -- token create and the tokens file -----------------------------------------------------------


def test_token_create_refuses_a_name_that_injects_toml(tmp_path: Path) -> None:
    """A crafted `--name` cannot add an entry of the caller's choosing (here an admin token
    whose secret the caller knows, while the command says it added a reader one)."""
    path = tmp_path / "tokens.toml"
    known = "jw_" + "k" * 43
    name = f'ci"\nrole = "admin"\nsha256 = "{digest(known)}"\n[[token]]\nname = "ci2'
    done = token_create("--file", str(path), "--name", name, "--role", "reader")
    smuggled = TokensFile(path).lookup(known) if path.exists() else None
    assert smuggled is None, f"exit {done.returncode}: {smuggled} (the caller knows its token)"
    assert done.returncode == 2


def test_token_create_stores_the_name_it_was_given(tmp_path: Path) -> None:
    """A TOML escape in `--name` is not decoded into another principal ('a\\u0062' is not
    'ab')."""
    path = tmp_path / "tokens.toml"
    done = token_create("--file", str(path), "--name", "a\\u0062", "--role", "reader")
    if done.returncode == 0:
        principal = TokensFile(path).lookup(done.stdout.strip())
        assert principal is not None and principal.name == "a\\u0062", principal
    else:
        assert done.returncode == 2 and "Traceback" not in done.stderr


def test_token_create_refuses_hostile_names_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    for bad in ("", "a b", "x" * 129, "\x1b[31m", "name\nwith newline", "ü"):
        done = token_create("--file", str(path), "--name", bad, "--role", "reader")
        assert done.returncode == 2 and "Traceback" not in done.stderr, (bad, done.stderr)
        assert done.stdout == ""  # no token printed for an entry not written
    assert not path.exists() or parse(path.read_text()).tokens == []


def test_token_create_on_a_corrupt_or_unreadable_file_fails_cleanly(tmp_path: Path) -> None:
    """A tokens file that is not UTF-8, or a directory, is refused in one line, as a file that
    does not parse is."""
    corrupt = tmp_path / "corrupt.toml"
    corrupt.write_text("[[token\n")
    done = token_create("--file", str(corrupt), "--name", "ci", "--role", "reader")
    assert done.returncode == 2 and "Traceback" not in done.stderr  # the documented refusal
    assert corrupt.read_text() == "[[token\n"
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes("# café\n".encode("latin-1"))
    done = token_create("--file", str(latin1), "--name", "ci", "--role", "reader")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2
    done = token_create("--file", str(tmp_path), "--name", "ci", "--role", "reader")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode != 0


def test_token_create_from_env_and_no_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "sub.toml"
    done = token_create("--name", "ci", "--role", "worker", "--queues", "a, b,,c",
                        env={"JOBWHEEL_AUTH_TOKENS": str(path)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert os.stat(path).st_mode & 0o077 == 0
    principal = TokensFile(path).lookup(done.stdout.strip())
    assert principal is not None and principal.queues == frozenset({"a", "b", "c"})
    # a bad queue: refused, nothing written
    before = path.read_text()
    done = token_create("--file", str(path), "--name", "x", "--role", "reader", "--queues", "a b")
    assert done.returncode == 2 and path.read_text() == before


def test_token_create_warns_of_a_tokens_file_others_may_read(tmp_path: Path) -> None:
    # os.open's mode applies only to a file it creates: one made by `touch` or an editor stays
    # as it was, and the command says so
    path = tmp_path / "tokens.toml"
    path.write_text("")
    path.chmod(0o644)
    done = token_create("--file", str(path), "--name", "ci", "--role", "admin")
    assert done.returncode == 0, done.stderr
    assert f"warning: others than its owner may read {path}" in done.stderr
    assert f"chmod 600 {path}" in done.stderr
    path.chmod(0o600)
    done = token_create("--file", str(path), "--name", "ci2", "--role", "admin")
    assert done.returncode == 0 and "warning" not in done.stderr


async def test_running_server_keeps_tokens_when_the_file_becomes_non_utf8(tmp_path: Path) -> None:
    """The README: a tokens file that no longer reads keeps the previous tokens in force
    (an editor saving Latin-1 made every authenticated call fail)."""
    path = tmp_path / "tokens.toml"
    token = new_token()
    path.write_text(entry_text("ci", Role.READER, (), token))
    settings = SecuritySettings(auth_tokens=str(path))
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
        md = (("authorization", f"Bearer {token}"),)
        await server.jobs.ListJobs(pb.ListJobsRequest(), metadata=md)
        path.write_bytes(path.read_bytes() + "# café\n".encode("latin-1"))
        try:
            await server.jobs.ListJobs(pb.ListJobsRequest(), metadata=md)
        except grpc.aio.AioRpcError as err:
            pytest.fail(f"previous token no longer works: {err.code()} {err.details()}")
        # health stays open whatever the file holds
        reply = await health_pb2_grpc.HealthStub(server.channel).Check(
            health_pb2.HealthCheckRequest()
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_tokens_file_removed_then_recreated_while_running(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    first = new_token()
    path.write_text(entry_text("ci", Role.READER, (), first))
    settings = SecuritySettings(auth_tokens=str(path))

    async def code(server: Running, token: str) -> grpc.StatusCode:
        try:
            await server.jobs.ListJobs(
                pb.ListJobsRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
        assert await code(server, first) is grpc.StatusCode.OK
        path.unlink()
        assert await code(server, first) is grpc.StatusCode.UNAUTHENTICATED
        done = await asyncio.to_thread(
            token_create, "--file", str(path), "--name", "ci", "--role", "reader"
        )
        assert done.returncode == 0
        assert await code(server, done.stdout.strip()) is grpc.StatusCode.OK
        assert await code(server, first) is grpc.StatusCode.UNAUTHENTICATED
        # the same size and a set-back modification time still count as a change
        st = os.stat(path)
        other = new_token()
        path.write_text(path.read_text().replace(digest(done.stdout.strip()), digest(other)))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert await code(server, other) is grpc.StatusCode.OK
        # past grpc's soft metadata limit a call may be refused before it reaches the server
        assert await code(server, "jw_" + "x" * 10_000) in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert await code(server, "") is grpc.StatusCode.UNAUTHENTICATED


# keep the unused-import linters quiet for helpers used only in some paths
_ = (duration_pb2,)
