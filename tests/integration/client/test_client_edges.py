"""The client library and the `jobwheel` CLI at their edges: durations, times and numbers
no message can hold, payloads nested past the parser, ports past 65535 (each one line and
exit 2, not a traceback), and an AsyncClient closed under a call in flight."""

from __future__ import annotations

import asyncio

import pytest
from jobwheel.client import AsyncClient
from jobwheel.client.connection import Connection, server_address
from jobwheel.client.errors import JobwheelError

from tests.conftest import Running
from tests.integration.client.scripted import Scripted
from tests.integration.client.test_cli import Result, jw


def assert_usage_error(r: Result) -> None:
    # README "Command line": "Exit codes: ... 2 usage error or INVALID_ARGUMENT";
    # cli/__init__.py run(): "bad duration/time text, unreadable payload file" -> exit 2, one line
    assert "Traceback" not in r.err, r.err
    assert r.code == 2, (r.code, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jobwheel: "), r.err


@pytest.mark.parametrize(
    "args",
    [
        ("enqueue", "test.noop", "--in", "1e20"),
        ("enqueue", "test.noop", "--in", "inf"),
        ("enqueue", "test.noop", "--in", "99999999999d"),
        ("enqueue", "test.noop", "--timeout", "1e300"),
        ("enqueue", "test.noop", "--every=-inf"),
    ],
)
async def test_cli_huge_duration_is_a_usage_error_not_a_traceback(
    server: Running, args: tuple[str, ...]
) -> None:
    # parser.DESCRIPTION: "Durations are like 90s, 5m, 2h, 1h30m or a number of seconds"
    assert_usage_error(await jw(server.address, *args))


@pytest.mark.parametrize(
    "args",
    [
        ("enqueue", "test.noop", "--at", "0001-01-01T00:00:00+01:00"),
        ("list", "--created-after", "0001-01-01T00:00:00+05:00"),
    ],
)
async def test_cli_time_out_of_range_is_a_usage_error_not_a_traceback(
    server: Running, args: tuple[str, ...]
) -> None:
    # parser.DESCRIPTION: "times are ISO 8601"; a bad time is a usage error (exit 2)
    assert_usage_error(await jw(server.address, *args))


async def test_cli_payload_with_a_huge_integer_is_a_usage_error(server: Running) -> None:
    # README: "--payload '{...}'"; base.read_payload: invalid payloads -> UsageError (exit 2)
    huge = "1" + "0" * 400
    assert_usage_error(
        await jw(server.address, "enqueue", "test.noop", "--payload", f'{{"n": {huge}}}')
    )
    assert_usage_error(await jw(server.address, "list", "--where", f"n={huge}"))


async def test_cli_deeply_nested_payload_from_stdin_is_a_usage_error(server: Running) -> None:
    # README: "the payload from stdin" (--payload-file -); hostile JSON must not crash the CLI
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = await jw(server.address, "enqueue", "test.noop", "--payload-file", "-", stdin=deep)
    assert_usage_error(r)


async def test_cli_server_port_out_of_range_is_a_usage_error(server: Running) -> None:
    # connection.server_address: "Raises ValueError for ... not HOST:PORT"; README: exit 2 for
    # a usage error. 127.0.0.1:99999 silently dialled port 34463 (99999 mod 65536).
    with pytest.raises(ValueError):
        server_address("127.0.0.1:99999")
    r = await jw(server.address, "--server", "127.0.0.1:99999", "queues", "-o", "json")
    assert_usage_error(r)


async def test_async_client_closed_with_a_call_in_flight_raises_a_typed_error(
    scripted: tuple[Scripted, str],
) -> None:
    # errors.JobwheelError: "Any failed call"; aio.py: "the same methods as `Client`" -- the
    # blocking Client raises errors.Cancelled here; the task itself was never cancelled.
    service, address = scripted
    for coalesce in (False, True):
        client = AsyncClient(address, coalesce=coalesce)
        before = len(service.calls)
        call = asyncio.create_task(client.enqueue_job("test.noop", payload={"n": 1}))
        while len(service.calls) == before:  # noqa: ASYNC110 (the server holds the call)
            await asyncio.sleep(0.01)
        await client.close()
        try:
            await asyncio.wait_for(call, 5)
        except JobwheelError:
            pass
        except asyncio.CancelledError:
            pytest.fail(f"coalesce={coalesce}: a bare CancelledError escaped, not Cancelled")


async def test_a_token_with_a_line_break_or_control_character(server: Running) -> None:
    # a token read from a file keeps its newline: dropped; inside one, no header can carry it
    # (the CLI answered "internal: Invalid metadata", exit 1, and gRPC core's own line)
    assert Connection.of("127.0.0.1:1", token="jw_abc\n").token == "jw_abc"
    for bad in ("jw_a\nb", "jw_\x01", "jw_é"):
        with pytest.raises(ValueError, match="the token holds characters"):
            Connection.of("127.0.0.1:1", token=bad)
    r = await jw(server.address, "--token", "jw_a\nb", "queues")
    assert_usage_error(r)
