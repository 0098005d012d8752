"""A value written into a statement as a literal (storage/bulk_writes.sqlite_literal, which
the snapshot SQL uses for defaults) is stored as binding it stores it: same type, same value;
and the shared insert (bulk_writes.sqlite_insert_shared) binds each row's own values in one
JSON array and every other value once."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server.storage.bulk_writes import shared_params, sqlite_insert_shared, sqlite_literal

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"])),
    st.sampled_from(["", "'", "''", "a'b", '{"k":"it\'s"}', "é😀", "NULL", "?"]),
)


def _stored(db: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> tuple[object, ...]:
    db.execute("DELETE FROM t")
    db.execute(sql, params)
    return tuple(db.execute("SELECT a, typeof(a), b, typeof(b) FROM t").fetchone())


@given(values)
def test_a_literal_stores_what_binding_stores(value: bool | int | str | None) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a TEXT, b INTEGER)")  # both affinities the jobs table has
    lit = sqlite_literal(value)
    bound = _stored(db, "INSERT INTO t (a, b) VALUES (?, ?)", (value, value))
    assert _stored(db, f"INSERT INTO t (a, b) VALUES ({lit}, {lit})", ()) == bound


def test_the_shared_insert_binds_the_rows_and_the_shared_values() -> None:
    columns, own = ("id", "q", "p", "n"), ("id", "p")
    sql = sqlite_insert_shared("t", columns, own)
    assert sql == (
        "INSERT INTO t (id, q, p, n) SELECT json_extract(value, '$[0]'), ?2, "
        "json_extract(value, '$[1]'), ?3 FROM json_each(?1) ORDER BY key"
    )
    assert sqlite_insert_shared("t", columns, own) is sql  # built once
    shared = shared_params(columns, own, ("x", "it's\x00", "y", 5))
    assert shared == ("it's\x00", 5)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id TEXT, q TEXT, p TEXT, n INTEGER)")
    db.execute(sql, ('[["a", "1"], ["b", "2"]]', *shared))
    assert db.execute("SELECT * FROM t ORDER BY rowid").fetchall() == [
        ("a", "it's\x00", "1", 5), ("b", "it's\x00", "2", 5),
    ]  # fmt: skip
    with pytest.raises(TypeError):
        sqlite_literal(1.5)  # type: ignore[arg-type]
