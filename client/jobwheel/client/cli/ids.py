"""Job ids on the command line: a full id is checked before it is sent, and an unambiguous
prefix (like git's short hashes) is resolved to the job it names.

The server has no id-prefix filter, so a prefix is resolved with ListJobs. Job ids are
UUIDv7, whose first 48 bits are the creation time in Unix milliseconds: a prefix bounds
that time, and ListJobs is asked for the jobs created in that span (plus a margin, as the
server stamps create_time and the id separately) and the ids are matched here. A short
prefix spans a long time: when more than SCAN_LIMIT jobs were created in its span, the
CLI asks for more characters instead of reading them all.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from jobwheel.client.cli.base import NoSuchJob, UsageError
from jobwheel.client.sync import Client
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

FULL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LAYOUT = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
MIN_PREFIX = 4  # hex digits, as git asks
SCAN_LIMIT = 10_000
MARGIN = timedelta(minutes=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # the last instant a Timestamp holds
SHOWN = 10  # candidates listed for an ambiguous prefix


def is_prefix(text: str) -> bool:
    """True when `text` could start a UUID: hex digits, dashes only where a UUID has them
    (or none at all)."""
    if not text:
        return False
    if "-" not in text:
        return len(text) <= 32 and all(c in "0123456789abcdef" for c in text)
    if len(text) > len(LAYOUT):
        return False
    return all(
        (c == "-") if shape == "-" else c in "0123456789abcdef"
        for c, shape in zip(text, LAYOUT, strict=False)
    )


def span(hexes: str) -> tuple[datetime, datetime]:
    """The creation times (from, before) a UUIDv7 starting with these hex digits can have,
    widened by MARGIN and kept within what a Timestamp holds."""
    stamp = hexes[:12]
    low = int(stamp.ljust(12, "0"), 16) * 1000  # microseconds
    high = (int(stamp.ljust(12, "f"), 16) + 1) * 1000
    limit = int((LAST - EPOCH).total_seconds() * 1_000_000)
    margin = int(MARGIN.total_seconds() * 1_000_000)
    return (
        EPOCH + timedelta(microseconds=min(low, limit)) - MARGIN,
        # clamped after the margin is added: within a minute of the end it would overflow
        EPOCH + timedelta(microseconds=min(high + margin, limit)),
    )


def resolve(client: Client, text: str) -> str:
    """The full id `text` names. UsageError for what is not an id or a prefix of one, or
    for an ambiguous prefix (the candidates listed); NoSuchJob when no job matches."""
    given = text.strip().lower()
    if FULL.match(given):
        return given
    if not is_prefix(given):
        raise UsageError(f"{text!r} is not a job id (a UUID such as {LAYOUT}) or a prefix of one")
    hexes = given.replace("-", "")
    if len(hexes) < MIN_PREFIX:
        raise UsageError(f"job id prefix {text!r} is too short: give at least {MIN_PREFIX} digits")
    after, before = span(hexes)
    flt = job_pb2.JobFilter()
    flt.create_time.start_time.FromDatetime(after)
    flt.create_time.end_time.FromDatetime(before)
    matches: list[str] = []
    scanned, token = 0, ""
    while True:
        page = client.list_jobs(
            flt, page_size=1000, page_token=token, order=pb.JOB_ORDER_CREATE_TIME_ASC
        )
        scanned += len(page.jobs)
        matches += [j.id for j in page.jobs if j.id.replace("-", "").startswith(hexes)]
        token = page.next_page_token
        if not token or len(matches) > SHOWN:
            break
        if scanned >= SCAN_LIMIT:
            raise UsageError(
                f"job id prefix {text!r} spans more than {SCAN_LIMIT:,} jobs: give more digits"
            )
    if not matches:
        raise NoSuchJob(f"no job id starts with {text!r}")
    if len(matches) > 1:
        listed = "\n  ".join(matches[:SHOWN]) + ("\n  ..." if len(matches) > SHOWN else "")
        raise UsageError(f"job id prefix {text!r} is ambiguous; it matches:\n  {listed}")
    return matches[0]
