"""The dashboard's pure parts: the filter form, scopes, formatting, roles and sessions."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from jobwheel.server import model
from jobwheel.server.config import parse_settings
from jobwheel.server.security import roles
from jobwheel.server.security.principal import Principal
from jobwheel.server.security.roles import Role
from jobwheel.server.web import views
from jobwheel.server.web.auth import BULK_RPCS, JOB_RPCS, QUEUE_RPCS, VIEW, Sessions, allowed, may
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
@example({"queue": ["", "0"]})  # a repeated single-valued field: the link kept the second
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
    assert scoped(flt, None) == flt  # an unscoped principal
    assert scoped(flt, frozenset()) is None  # a scope of no queue sees nothing
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


def test_the_dashboard_reads_the_servers_role_table() -> None:
    def who(method: str) -> list[Role]:
        return [r for r in Role if may(Principal("x", r), method)]

    # every action is an RPC of the one table, and a role may take it when it may call it
    for method in (VIEW, *JOB_RPCS.values(), *BULK_RPCS.values(), *QUEUE_RPCS.values()):
        assert roles.needed(method) is not None, method
        assert who(method) == [r for r in Role if roles.allowed(r, method)]
    assert who(VIEW) == [Role.READER, Role.PRODUCER, Role.OPERATOR, Role.ADMIN]
    assert who(JOB_RPCS["cancel"]) == [Role.OPERATOR, Role.ADMIN]
    assert who(QUEUE_RPCS["limits"]) == [Role.ADMIN]  # UpdateQueue
    assert allowed(Principal("x", Role.READER), JOB_RPCS) == frozenset()
    assert allowed(Principal("x", Role.OPERATOR), QUEUE_RPCS) == {"pause", "resume"}
    assert allowed(Principal("x", Role.ADMIN), BULK_RPCS) == set(BULK_RPCS)


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


@pytest.mark.parametrize(
    "listen", ["nonsense", ":8080", "127.0.0.1:99999", "127.0.0.1:", "no-port", "[::1:80"]
)
def test_a_bad_http_listen_stops_with_one_line(
    listen: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, env in ((["--http-listen", listen], {}), ([], {"JOBWHEEL_HTTP_LISTEN": listen})):
        with pytest.raises(SystemExit) as info:
            parse_settings(argv, env=env)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--http-listen" in err and "JOBWHEEL_HTTP_LISTEN" in err
    assert parse_settings(["--http-listen", "[::1]:0"], env={}).http_listen == "[::1]:0"
