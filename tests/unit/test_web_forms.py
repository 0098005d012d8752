"""The dashboard's pure parts: the filter form, scopes, formatting, roles and sessions."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server import model
from jobwheel.server.config import parse_settings
from jobwheel.server.web import views
from jobwheel.server.web.auth import GRANTS, Permission, Principal, Role, Sessions
from jobwheel.server.web.forms import FIELDS, parse_job_query, scoped
from starlette.datastructures import ImmutableMultiDict

S = model.SECOND


def test_every_field_makes_its_filter() -> None:
    q = parse_job_query(
        ImmutableMultiDict(
            [
                ("state", "queued"),
                ("state", "failed"),
                ("queue", "a, b"),
                ("task", "send_email"),
                ("label", "team=billing, env = prod"),
                ("payload", 'n=42, ok=true, s="42", word=hello, obj={"a": 1}'),
                ("created_from", "2026-01-01T00:00"),
                ("created_to", "2026-01-02T00:00:30Z"),
                ("next_from", "2026-01-01T10:00+02:00"),
                ("id", "01A2"),
                ("recurring", "yes"),
            ]
        )
    )
    f = q.filter
    assert q.errors == []
    assert f.states == (model.JobState.QUEUED, model.JobState.FAILED)
    assert f.queues == ("a", "b") and f.tasks == ("send_email",)
    assert f.labels == (("env", "prod"), ("team", "billing"))
    assert dict(f.payload) == {"n": 42, "ok": True, "s": "42", "word": "hello", "obj": '{"a": 1}'}
    assert f.create_time == model.TimeRange(1_767_225_600 * S, 1_767_312_030 * S)
    assert f.next_run_time == model.TimeRange(1_767_254_400 * S, None)
    assert f.id_prefix == "01a2" and f.ids == ()
    assert f.recurring is True
    full = "01a226db-a253-7001-bc69-96fbccdc5ef0"
    assert parse_job_query(ImmutableMultiDict([("id", full.upper())])).filter.ids == (full,)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("state", "nope", "unknown state"),
        ("queue", "has space", "queue:"),
        ("task", ",".join(["t"] * 33), "at most 32"),
        ("label", "novalue", "key=value"),
        ("label", "=v", "key=value"),
        ("payload", "k", "key=value"),
        ("created_from", "yesterday", "created:"),
        ("next_to", "0001-01-01T00:00", "next run:"),
        ("id", "xyz", "id:"),
        ("id", "0" * 37, "id:"),
    ],
)
def test_bad_inputs_are_named_and_left_out(field: str, value: str, error: str) -> None:
    q = parse_job_query(ImmutableMultiDict([(field, value)]))
    assert any(error in e for e in q.errors), q.errors


@given(st.dictionaries(st.sampled_from(FIELDS), st.lists(st.text(max_size=60), max_size=3)))
def test_any_input_gives_a_filter_or_named_errors_and_survives_its_link(
    params: dict[str, list[str]],
) -> None:
    q = parse_job_query(ImmutableMultiDict([(k, v) for k, vs in params.items() for v in vs]))
    for name in (*q.filter.queues, *q.filter.tasks):
        assert name and " " not in name
    for error in q.errors:
        assert error.split(":")[0] in {
            "state",
            "queue",
            "task",
            "label",
            "payload",
            "created",
            "next run",
            "id",
        }
    # the page's links carry the same filter
    again = parse_job_query(ImmutableMultiDict(parse_qsl(q.query(), keep_blank_values=True)))
    if not q.errors:
        assert again.filter == q.filter


def test_scopes_limit_the_queues() -> None:
    flt = model.JobFilter(tasks=("t",))
    assert scoped(flt, frozenset()) == flt
    assert scoped(flt, frozenset({"b", "a"})) == model.JobFilter(tasks=("t",), queues=("a", "b"))
    both = model.JobFilter(queues=("a", "c"))
    assert scoped(both, frozenset({"a", "b"})) == model.JobFilter(queues=("a",))
    assert scoped(model.JobFilter(queues=("c",)), frozenset({"a"})) is None


def test_spans_and_times() -> None:
    assert views.span(850_000) == "850 ms"
    assert views.span(12_400_000) == "12.4 s"
    assert views.span(185 * S) == "3 m 05 s"
    assert views.span(900 * S) == "15 m"
    assert views.span(7800 * S) == "2 h 10 m"
    assert views.span(4 * 86_400 * S + 3 * 3600 * S) == "4 d 3 h"
    assert views.span(-2 * S) == "-2.0 s"
    assert views.span(None) == ""
    assert views.utc(0) == "1970-01-01 00:00:00Z"
    assert views.percent(1, 3) == "33.3%" and views.percent(0, 0) == "-"
    assert views.schedule_text(model.Schedule(cron="0 9 * * *", time_zone="Asia/Tokyo")) == (
        "cron 0 9 * * * (Asia/Tokyo)"
    )
    assert views.schedule_text(model.Schedule(interval=3600 * S)) == "every 1 h"


def test_the_role_table() -> None:
    def can(role: Role, p: Permission) -> bool:
        return Principal("x", role).can(p)

    assert all(
        can(r, Permission.VIEW) for r in (Role.READER, Role.PRODUCER, Role.OPERATOR, Role.ADMIN)
    )
    assert not can(Role.WORKER, Permission.VIEW)
    for p in (Permission.MANAGE_JOBS, Permission.MANAGE_QUEUES):
        assert [r for r in Role if can(r, p)] == [Role.OPERATOR, Role.ADMIN]
    assert set(GRANTS) == set(Role)
    scoped_principal = Principal("x", Role.OPERATOR, frozenset({"a"}))
    assert scoped_principal.sees_queue("a") and not scoped_principal.sees_queue("b")


def test_sessions_and_csrf_tokens() -> None:
    sessions = Sessions(max_age=60, max_sessions=2)
    a, b = sessions.create(), sessions.create("tok")
    assert sessions.get(a.id) is a and sessions.get(b.id) is b
    assert sessions.csrf_ok(a, sessions.csrf_token(a))
    assert not sessions.csrf_ok(a, sessions.csrf_token(b))
    assert not sessions.csrf_ok(a, "") and not sessions.csrf_ok(None, sessions.csrf_token(a))
    assert Sessions().csrf_token(a) != sessions.csrf_token(a)  # keyed per process
    sessions.create()  # the oldest goes
    assert sessions.get(a.id) is None
    b.expires = 0
    assert sessions.get(b.id) is None
    assert sessions.get(None) is None and sessions.get("unknown") is None


def test_http_listen_flag() -> None:
    assert parse_settings([], env={}).http_listen == ""
    assert parse_settings([], env={"JOBWHEEL_HTTP_LISTEN": "0.0.0.0:8080"}).http_listen == (
        "0.0.0.0:8080"
    )
    flag = ["--http-listen", "127.0.0.1:9"]
    assert parse_settings(flag, env={"JOBWHEEL_HTTP_LISTEN": "x:1"}).http_listen == "127.0.0.1:9"
