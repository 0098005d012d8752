"""job_snapshot written in SQL: the statement that changes or reads a job's row also returns the
event log's text of it, so the dispatch cycle and the fire encode no snapshot in Python (two or
three per attempt: a fifth of the dispatch cycle's CPU, and a third of a PostgreSQL fire's, when
they did, under the GIL).

The text is job_snapshot(job_from_row(row)) byte for byte: the same members in the same
order, each left out under the same rule; document columns hold `dumps` of their value (the
store writes them so) and go in as they are; strings go through SQLite's json_quote or
PostgreSQL's to_json, which escape as `dumps` does (a test compares them over every code point
each backend stores; a spelling of an escape otherwise would still write equal JSON).
"""

from __future__ import annotations

from collections.abc import Callable

from jobwheel.server.storage.bulk_writes import sqlite_literal
from jobwheel.server.storage.convert import snapshot_members
from jobwheel.server.storage.schema import jobs
from sqlalchemy import Integer, String

# columns that hold a JSON document: `dumps` of the job's value
_DOCUMENTS = frozenset(("labels", "schedule", "retry_policy", "http", "result", "progress"))


def _kind(name: str) -> str:
    """What column `name` holds: "document", "string" or "integer"."""
    column = jobs.c[name]
    if name in _DOCUMENTS:
        return "document"
    if isinstance(column.type, String):
        return "string"
    assert isinstance(column.type, Integer), name  # an integer's text is Python's in both
    return "integer"


def _sqlite_snapshot() -> str:
    # One printf per row: a chain of concatenations costs half as much again. No `IS NULL`:
    # in a RETURNING clause SQLite 3.40 finds no column of jobs NULL (the test reads false); a
    # NULL column makes its member's text NULL instead, which coalesce replaces.
    text, args = "", []
    leading = True  # before the first member every snapshot holds (a comma after each)
    for name, always, default in snapshot_members():
        kind = _kind(name)
        value = f"json_quote({name})" if kind == "string" else name
        if always:
            nullable = jobs.c[name].nullable and kind != "string"  # json_quote(NULL) is null
            conversion = "%d" if kind == "integer" and not nullable else "%s"
            text += f'{"" if leading else ","}"{name}":{conversion}'
            args.append(f"coalesce({value}, 'null')" if nullable else value)
            leading = False
            continue
        text += "%s"  # an optional member: its own text or '', with its comma
        args.append(_optional(name, value, default, leading, _sqlite_concat))
    assert "'" not in text and not leading
    return f"printf('{{{text}}}', {', '.join(args)})"


def pg_job_snapshot_sql(table: str = "") -> str:
    """The PostgreSQL expression over a `jobs` row (its columns qualified by `table`, when
    given: in an UPDATE ... FROM whose other relation has columns of the same names)."""
    prefix = f"{table}." if table else ""
    parts: list[str] = []
    leading = True
    for name, always, default in snapshot_members():
        kind, column = _kind(name), prefix + name
        # to_json(NULL) is NULL, unlike json_quote: every nullable member takes coalesce
        value = {"document": column, "string": f"to_json({column})::text"}.get(
            kind, f"{column}::text"
        )
        if always:
            text = value if not jobs.c[name].nullable else f"coalesce({value}, 'null')"
            parts.append(f"'{'' if leading else ','}\"{name}\":' || {text}")
            leading = False
            continue
        parts.append(_optional(name, value, default, leading, _pg_concat, column))
    assert not leading
    return "'{' || " + " || ".join(parts) + " || '}'"


def _optional(
    name: str,
    value: str,
    default: object,
    leading: bool,
    concat: Callable[[str, str, str], str],
    column: str | None = None,
) -> str:
    """An optional member's text or '', with its comma: NULL and `default` leave it out."""
    member = (
        concat(f"'\"{name}\":'", value, "','") if leading else concat(f"',\"{name}\":'", value, "")
    )
    if default is None:
        return f"coalesce({member}, '')"
    assert not jobs.c[name].nullable, name  # NULL would not equal the default
    assert isinstance(default, int | str)
    return f"CASE WHEN {column or name} = {sqlite_literal(default)} THEN '' ELSE {member} END"


def _sqlite_concat(*parts: str) -> str:
    return " || ".join(p for p in parts if p)


def _pg_concat(*parts: str) -> str:
    return "(" + " || ".join(p for p in parts if p) + ")"


# An SQLite expression over the columns of a `jobs` row (unqualified): its job_snapshot.
JOB_SNAPSHOT_SQL = _sqlite_snapshot()
# The same in PostgreSQL's SQL.
PG_JOB_SNAPSHOT_SQL = pg_job_snapshot_sql()
