"""A value written into an INSERT as a literal (storage/bulk_writes.sqlite_insert_shared) is
stored as binding it stores it: same type, same value."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server.storage.bulk_writes import sqlite_insert_shared, sqlite_literal

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


def test_the_shared_insert_binds_only_the_own_columns() -> None:
    sql = sqlite_insert_shared("t", ("id", "q", "p", "n"), ("id", "p"), ("x", "it's", "y", 5))
    assert sql == (
        "INSERT INTO t (id, q, p, n) SELECT json_extract(value, '$[0]'), 'it''s', "
        "json_extract(value, '$[1]'), 5 FROM json_each(?) ORDER BY key"
    )
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id TEXT, q TEXT, p TEXT, n INTEGER)")
    db.execute(sql, ('[["a", "1"], ["b", "2"]]',))
    assert db.execute("SELECT * FROM t ORDER BY rowid").fetchall() == [
        ("a", "it's", "1", 5), ("b", "it's", "2", 5),
    ]  # fmt: skip
    # U+0000 cannot stand in a statement: such a value must be bound
    assert sqlite_insert_shared("t", ("id", "q"), ("id",), ("x", "a\x00b")) is None
    with pytest.raises(TypeError):
        sqlite_literal(1.5)  # type: ignore[arg-type]
