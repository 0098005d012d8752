"""Fuzzing every RPC of both services from their request descriptors, on SQLite and PostgreSQL.

Each example is one call to a `jobwheel-server` subprocess: a well-typed request drawn by
tests/fuzz/messages.py, or a raw body that is mostly not protobuf. Every answer must be a
status a client's request may earn (never UNKNOWN, INTERNAL or UNAVAILABLE), and at the end
the server log holds no traceback, every stored job still lists with times a Timestamp can
hold, and the server's resident memory stayed bounded.

The normal suite runs a few hundred examples per backend. The large run (the figures in the
issue) sets the number of examples and prints the count by status code and the server's RSS
before, at peak and after:

    export JOBWHEEL_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test
    JOBWHEEL_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/fuzz -q -s
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.acceptance.process import ServerProcess
from tests.fuzz import harness
from tests.fuzz.messages import DURATION_MAX, TS_MAX, TS_MIN, Pool, messages, raw_bodies

EXAMPLES = int(os.environ.get("JOBWHEEL_FUZZ_EXAMPLES", "300"))
LARGE = "JOBWHEEL_FUZZ_EXAMPLES" in os.environ
# Growth of the server's peak RSS over the fuzz run. Requests are at most a few MB; a server
# that keeps what it is sent, or builds replies without bound, passes this in a few hundred
# examples.
MAX_GROWTH_MIB = 400
METHODS = harness.methods()


@pytest.fixture
def target(db_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, Pool]]:
    proc = ServerProcess(db_url, tmp_path / "server.log").start()
    try:
        pool = Pool()
        harness.seed(proc.address, pool)
        yield proc, pool
    finally:
        proc.stop()


def _fuzz(proc: ServerProcess, requests: st.SearchStrategy[tuple[int, bytes]]) -> harness.Fuzzer:
    fuzzer = harness.Fuzzer(proc.address)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests)
    def one(call: tuple[int, bytes]) -> None:
        index, body = call
        fuzzer.send(METHODS[index], body)

    try:
        one()
    finally:
        fuzzer.close()
    return fuzzer


def _report(label: str, fuzzer: harness.Fuzzer, rss: list[tuple[int, int]]) -> str:
    counts = ", ".join(f"{code} {n}" for code, n in fuzzer.counts.most_common())
    (before, _), (after, peak) = rss[0], rss[-1]
    return (
        f"{label}: {sum(fuzzer.counts.values())} calls: {counts}; server RSS before "
        f"{before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, after {after / 1024:.0f} MiB"
    )


def _check_aftermath(proc: ServerProcess, rss: list[tuple[int, int]]) -> None:
    log = proc.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    for job in harness.every_job(proc.address):
        _check_times(job)
    (before, _), (_, peak) = rss[0], rss[-1]
    assert (peak - before) / 1024 < MAX_GROWTH_MIB, rss


def _check_times(msg: Message) -> None:
    """Every Timestamp and Duration in `msg` is one that every client can decode."""
    for field, value in msg.ListFields():
        items = value if field.is_repeated else [value]
        for item in items:
            if isinstance(item, timestamp_pb2.Timestamp):
                assert TS_MIN <= item.seconds <= TS_MAX, (field.name, item)
            elif isinstance(item, duration_pb2.Duration):
                assert abs(item.seconds) <= DURATION_MAX, (field.name, item)
            elif isinstance(item, Message):
                _check_times(item)


def _typed_requests(pool: Pool) -> st.SearchStrategy[tuple[int, bytes]]:
    """Per RPC, half the requests from every value, half from values the server accepts."""
    tame = dataclasses.replace(pool, tame=True)
    per_method = [
        st.one_of(messages(m.input_type, pool), messages(m.input_type, tame)).map(
            lambda msg, i=i: (i, msg.SerializeToString())
        )
        for i, m in enumerate(METHODS)
    ]
    return st.one_of(per_method)


def test_well_typed_requests(
    target: tuple[ServerProcess, Pool], capsys: pytest.CaptureFixture[str]
) -> None:
    proc, pool = target
    rss = [harness.rss_kib(proc.pid)]
    fuzzer = _fuzz(proc, _typed_requests(pool))
    harness.settle(1.0)
    rss.append(harness.rss_kib(proc.pid))
    report = _report(f"well-typed requests ({proc.db_url.split(':')[0]})", fuzzer, rss)
    with capsys.disabled() if LARGE else contextlib.nullcontext():
        print("\n" + report)
        if fuzzer.slow:
            print(f"slow answers (deadline exceeded): {sorted(set(fuzzer.slow))}")
    assert not fuzzer.slow, report
    _check_aftermath(proc, rss)


def test_raw_bodies(target: tuple[ServerProcess, Pool], capsys: pytest.CaptureFixture[str]) -> None:
    proc, _ = target
    rss = [harness.rss_kib(proc.pid)]
    bodies = st.tuples(st.integers(0, len(METHODS) - 1), raw_bodies())
    fuzzer = _fuzz(proc, bodies)
    harness.settle(1.0)
    rss.append(harness.rss_kib(proc.pid))
    report = _report(f"raw bodies ({proc.db_url.split(':')[0]})", fuzzer, rss)
    with capsys.disabled() if LARGE else contextlib.nullcontext():
        print("\n" + report)
    _check_aftermath(proc, rss)
