"""JSON logs: every line parses; job fields and tracebacks come through; debug RPC lines."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from jobwheel.server.observability import logs
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

from tests.acceptance.process import ServerProcess

ONE_ATTEMPT = job_pb2.RetryPolicy(max_attempts=1)


def test_json_line_has_the_job_fields_extras_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("tests.logs.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        raise ValueError("bad input\nsecond line")
    except ValueError:
        logger.error(
            "attempt %d of job %s failed",
            2,
            "j1",
            exc_info=True,
            extra={"job_id": "j1", "task": "t", "queue": "q", "attempt": 2,
                   "worker_id": "inprocess@x", "principal": "alice", "other": {"k": (1, 2)}},
        )  # fmt: skip
    logger.info('plain \u2603 "quoted"')
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "attempt 2 of job j1 failed"
    assert first["level"] == "ERROR" and first["logger"] == "tests.logs.json"
    assert first["time"].endswith("+00:00")
    assert {k: first[k] for k in logs.JOB_FIELDS} == {
        "job_id": "j1", "task": "t", "queue": "q", "attempt": 2,
        "worker_id": "inprocess@x", "principal": "alice",
    }  # fmt: skip
    assert first["other"] == {"k": [1, 2]}
    assert first["exc_type"] == "ValueError"
    assert "Traceback (most recent call last)" in first["traceback"]
    assert "ValueError: bad input\nsecond line" in first["traceback"]
    assert second["message"] == 'plain \u2603 "quoted"' and "traceback" not in second


def test_text_format_appends_job_fields() -> None:
    record = logging.makeLogRecord(
        {"msg": "hello", "levelname": "INFO", "name": "x", "job_id": "j1", "attempt": 1}
    )
    assert logs.TextFormatter().format(record).endswith("hello [job_id=j1 attempt=1]")


def test_text_format_does_not_repeat_a_field_the_message_states() -> None:
    def line(msg: str) -> str:
        record = logging.makeLogRecord(
            {"msg": msg, "levelname": "INFO", "name": "x", "principal": "ci", "job_id": "j1"}
        )
        return logs.TextFormatter().format(record)

    assert line("audit m principal=ci count=1").endswith("audit m principal=ci count=1 [job_id=j1]")
    assert line("principal=ci").endswith(" principal=ci [job_id=j1]")
    # a longer value, or the same value under another key, is not the field
    assert line("principal=cid").endswith("principal=cid [job_id=j1 principal=ci]")
    assert line("owner=ci").endswith("owner=ci [job_id=j1 principal=ci]")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("INFO", "xml")


@pytest.fixture
def json_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'jobwheel.db'}",
        tmp_path / "server.log",
        "--log-format", "json", "--log-level", "DEBUG", "--handlers", "tests.handlers",
    )  # fmt: skip
    proc.start()
    yield proc
    proc.stop()


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()]  # every line parses


def _run_jobs(proc: ServerProcess) -> tuple[str, str]:
    with grpc.insecure_channel(proc.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        ok = stub.EnqueueJob(pb.EnqueueJobRequest(task="test.echo")).job.id
        bad = stub.EnqueueJob(
            pb.EnqueueJobRequest(task="test.boom", retry_policy=ONE_ATTEMPT)
        ).job.id
        deadline = time.monotonic() + 15
        for job_id in (ok, bad):
            while stub.GetJob(pb.GetJobRequest(id=job_id)).job.state not in (
                job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED,
            ):  # fmt: skip
                assert time.monotonic() < deadline
                time.sleep(0.02)
        with pytest.raises(grpc.RpcError):
            stub.GetJob(pb.GetJobRequest(id=""))
    return ok, bad


@pytest.mark.slow
def test_server_json_log(json_server: ServerProcess, tmp_path: Path) -> None:
    _run_jobs(json_server)
    assert json_server.terminate() == 0
    lines = _lines(tmp_path / "server.log")
    first = lines[0]
    assert first["message"].startswith("jobwheel ") and "auth none" in first["message"]
    assert first["auth"] == "none" and first["version"]
    assert first["database"].startswith("sqlite:///") and first["listen"] == "127.0.0.1:0"
    assert "test.boom" in first["handlers"]
    rpcs = [line for line in lines if "rpc_method" in line]
    codes = {(r["rpc_method"], r["grpc_code"]) for r in rpcs}
    assert ("/jobwheel.v1.JobService/EnqueueJob", "OK") in codes
    assert ("/jobwheel.v1.JobService/GetJob", "INVALID_ARGUMENT") in codes
    assert all(r["duration_ms"] >= 0 and r["level"] == "DEBUG" for r in rpcs)


@pytest.mark.slow
def test_failed_attempt_logs_one_line_with_job_fields_and_traceback(
    json_server: ServerProcess, tmp_path: Path
) -> None:
    _, bad = _run_jobs(json_server)
    json_server.terminate()
    failed = [line for line in _lines(tmp_path / "server.log") if line.get("job_id") == bad]
    assert len(failed) == 1
    [line] = failed
    assert line["task"] == "test.boom" and line["attempt"] == 1 and line["queue"] == "default"
    assert "ValueError: boom" in line["traceback"]


def test_held_start_up_lines_come_out_in_order_or_not_at_all(root_stream: io.StringIO) -> None:
    log = logging.getLogger("tests.logs.held")
    held = logs.HeldLines()
    log.info("jobwheel starting")
    log.warning("something to know")
    assert root_stream.getvalue() == ""
    held.release()
    lines = root_stream.getvalue().splitlines()
    # both, in order; the throttle saw the warning once (held lines are not counted twice)
    assert [line.split(" ", 3)[-1] for line in lines] == [
        "tests.logs.held jobwheel starting",
        "tests.logs.held something to know",
    ]
    log.info("after")
    assert root_stream.getvalue().splitlines()[-1].endswith("after")

    dropped = logs.HeldLines()
    log.info("a start that failed")
    dropped.drop()
    log.info("later")
    assert "a start that failed" not in root_stream.getvalue()
    assert root_stream.getvalue().splitlines()[-1].endswith("later")
