"""job_snapshot written in SQLite's SQL: the statement that changes or reads a job's row also
returns the event log's text of it, so the dispatch cycle encodes no snapshot in Python (two
per attempt, a fifth of its CPU when it did, and under the GIL).

The text is job_snapshot(job_from_row(row)) byte for byte: the same members in the same
order, each left out under the same rule; document columns hold `dumps` of their value (the
store writes them so) and go in as they are; strings go through json_quote, which escapes as
`dumps` does (a test compares the two over every code point; an SQLite spelling an escape
otherwise would still write equal JSON). One printf per row: a chain of concatenations costs
half as much again.
"""

from __future__ import annotations

from jobwheel.server.storage.bulk_writes import sqlite_literal
from jobwheel.server.storage.convert import snapshot_members
from jobwheel.server.storage.schema import jobs
from sqlalchemy import Integer, String

# columns that hold a JSON document: `dumps` of the job's value
_DOCUMENTS = frozenset(("labels", "schedule", "retry_policy", "http", "result", "progress"))


def _value(name: str) -> tuple[str, str]:
    """(printf conversion, SQL expression) for the JSON text of column `name`'s value: NULL
    for a NULL document or integer, null for a NULL string."""
    column = jobs.c[name]
    if name in _DOCUMENTS:
        return "%s", name
    if isinstance(column.type, String):
        return "%s", f"json_quote({name})"
    # an integer's text in SQLite is Python's
    assert isinstance(column.type, Integer), name
    return ("%s", name) if column.nullable else ("%d", name)


def _snapshot_sql() -> str:
    # No `IS NULL`: in a RETURNING clause SQLite 3.40 finds no column of jobs NULL (the test
    # reads false); a NULL column makes its member's text NULL instead, which coalesce
    # replaces.
    text, args = "", []
    leading = True  # before the first member every snapshot holds (a comma after each)
    for name, always, default in snapshot_members():
        conversion, value = _value(name)
        if always:
            text += f'{"" if leading else ","}"{name}":{conversion}'
            nullable = jobs.c[name].nullable and not value.startswith("json_quote")
            args.append(f"coalesce({value}, 'null')" if nullable else value)
            leading = False
            continue
        # an optional member: its own text or '', with its comma
        member = f"'\"{name}\":' || {value} || ','" if leading else f"',\"{name}\":' || {value}"
        text += "%s"
        if default is None:
            args.append(f"coalesce({member}, '')")
        else:
            assert not jobs.c[name].nullable, name  # NULL would not equal the default
            args.append(f"CASE WHEN {name} = {sqlite_literal(default)} THEN '' ELSE {member} END")
    assert "'" not in text and not leading
    return f"printf('{{{text}}}', {', '.join(args)})"


# An SQL expression over the columns of a `jobs` row (unqualified): its job_snapshot.
JOB_SNAPSHOT_SQL = _snapshot_sql()
