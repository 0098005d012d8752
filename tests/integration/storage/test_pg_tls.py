"""A PostgreSQL URL's libpq parameters (storage/pg_url.py): TLS to the database, the
application name, the connection timeout, checked at the edge; and a running server that
reaches a real PostgreSQL only through TLS (a front that ends TLS with a test CA's
certificate and refuses plaintext, pg_tls_front.py)."""

from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest
import trustme
from jobwheel.server.app import App
from jobwheel.server.config import Settings
from jobwheel.server.startup import describe
from jobwheel.server.storage import StorageUrlError, open_store
from jobwheel.server.storage.dialect import parse_url
from jobwheel.server.storage.pg_url import (
    APPLICATION_NAME_MAX,
    CONNECT_TIMEOUT_MAX_S,
    CONNECT_TIMEOUT_S,
    DSN_PARAMS,
    SESSION_ATTRS,
    SSL_MODES,
    TLS_VERSIONS,
)
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from sqlalchemy.engine import make_url

from tests.conftest import PG_ENV, fresh_pg_schema, running_server
from tests.integration.api.waiting import wait_for_state
from tests.integration.storage.pg_tls_front import TlsFront

BASE = "postgresql://u:secret-pw@h/db"


def _dsn(url: str) -> dict[str, str]:
    connect_args = parse_url(url).connect_args
    return dict(parse_qsl(urlsplit(connect_args.get("dsn", "")).query))


def test_tls_parameters_travel_to_asyncpg_as_a_dsn_and_leave_the_url() -> None:
    given = {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/jobwheel/ca & co.pem",
        "sslcert": "/etc/jobwheel/client.pem",
        "sslkey": "/etc/jobwheel/client.key",
        "sslpassword": "p&w=1",
        "sslcrl": "/etc/jobwheel/crl.pem",
        "ssl_min_protocol_version": "TLSv1.2",
        "ssl_max_protocol_version": "TLSv1.3",
        "target_session_attrs": "read-write",
    }
    url = make_url(BASE).update_query_dict(
        {**given, "application_name": "billing", "connect_timeout": "9", "keepalives_idle": "7"}
    )
    parsed = parse_url(url.render_as_string(False))
    assert not parsed.url.query  # SQLAlchemy would hand each to asyncpg.connect as a keyword
    assert _dsn(url.render_as_string(False)) == given
    assert parsed.connect_args["timeout"] == 9
    assert parsed.server_settings == {"application_name": "billing"}
    assert parsed.keepalive is not None and parsed.keepalive.idle_s == 7


def test_without_parameters_there_is_no_dsn_and_the_default_timeout() -> None:
    parsed = parse_url(BASE)
    assert parsed.connect_args == {"timeout": CONNECT_TIMEOUT_S}
    assert parsed.server_settings == {}


def test_asyncpgs_ssl_is_sslmode() -> None:
    assert _dsn(f"{BASE}?ssl=require") == {"sslmode": "require"}
    with pytest.raises(StorageUrlError, match="ssl and sslmode are one setting"):
        parse_url(f"{BASE}?ssl=require&sslmode=disable")


@pytest.mark.parametrize(
    ("name", "allowed", "wrong"),
    [
        ("sslmode", SSL_MODES, ["verify_full", "REQUIRE", "true", "x" * 5000]),
        ("ssl", SSL_MODES, ["on", "1"]),
        ("ssl_min_protocol_version", TLS_VERSIONS, ["TLSv1.4", "tlsv1.2", "1.2"]),
        ("ssl_max_protocol_version", TLS_VERSIONS, ["SSLv3", " TLSv1.3"]),
        ("target_session_attrs", SESSION_ATTRS, ["master", "read_write", "any\n"]),
    ],
)
def test_each_value_it_may_take_and_others_refused_with_the_name(
    name: str, allowed: tuple[str, ...], wrong: list[str]
) -> None:
    for value in allowed:
        parse_url(make_url(BASE).update_query_dict({name: value}).render_as_string(False))
    for value in wrong:
        url = make_url(BASE).update_query_dict({name: value}).render_as_string(False)
        with pytest.raises(StorageUrlError, match=f"{name} must be one of") as err:
            parse_url(url)
        assert len(str(err.value)) < 300  # a long value is not echoed whole


@pytest.mark.parametrize("name", [n for n, allowed in DSN_PARAMS.items() if allowed is None])
def test_paths_hold_no_control_characters(name: str) -> None:
    for bad in ("/etc/a\nb.pem", "/etc/a\x00b", "\x7f"):
        url = make_url(BASE).update_query_dict({name: bad}).render_as_string(False)
        with pytest.raises(StorageUrlError, match=f"{name} must be a path"):
            parse_url(url)


def test_an_unknown_parameter_is_refused_by_name_without_the_password() -> None:
    for name in ("sslmdoe", "foo", "host", "passfile", "x" * 5000):
        with pytest.raises(StorageUrlError, match="unknown parameter") as err:
            parse_url(f"{BASE}?{name}=1")
        text = str(err.value)
        assert "sslmode" in text and "application_name" in text  # what it takes
        assert "secret-pw" not in text and len(text) < 600


def test_a_parameter_given_twice_is_refused() -> None:
    with pytest.raises(StorageUrlError, match="sslmode is given 2 times"):
        parse_url(f"{BASE}?sslmode=require&sslmode=disable")


def test_connect_timeout_limits() -> None:
    for ok in (1, CONNECT_TIMEOUT_MAX_S):
        assert parse_url(f"{BASE}?connect_timeout={ok}").connect_args["timeout"] == ok
    for bad in ("0", str(CONNECT_TIMEOUT_MAX_S + 1), "-1", "1.5", "ten", "\u0665", "9" * 5000):
        with pytest.raises(StorageUrlError, match="connect_timeout must be whole seconds") as e:
            parse_url(f"{BASE}?connect_timeout={bad}")
        assert len(str(e.value)) < 200


def test_application_name_limits() -> None:
    longest = "a" * APPLICATION_NAME_MAX
    assert parse_url(f"{BASE}?application_name={longest}").server_settings == {
        "application_name": longest
    }
    for bad in (longest + "a", "caf%C3%A9", "a%0Ab", "a%00b"):
        with pytest.raises(StorageUrlError, match="application_name must be at most 63"):
            parse_url(f"{BASE}?application_name={bad}")


def test_options_and_application_name_together() -> None:
    parsed = parse_url(f"{BASE}?options=-c%20search_path%3Ds1&application_name=jw")
    assert parsed.server_settings == {"search_path": "s1", "application_name": "jw"}
    with pytest.raises(StorageUrlError, match="unsupported PostgreSQL options"):
        parse_url(f"{BASE}?options=-c%20%27unclosed")


@pytest.mark.parametrize("name", ["sslrootcert", "sslcert", "sslkey", "sslcrl"])
async def test_a_file_that_cannot_be_read_stops_the_store_naming_it(
    name: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(StorageUrlError, match=f"{name} '{missing}': No such file"):
        await open_store(f"{BASE}?sslmode=verify-full&{name}={missing}")
    with pytest.raises(StorageUrlError, match=f"{name} '{tmp_path}': Is a directory"):
        await open_store(f"{BASE}?sslmode=verify-full&{name}={tmp_path}")


# --- a running server behind TLS --------------------------------------------------------------


@dataclass
class Tls:
    ca: trustme.CA
    dir: Path

    def pem(self, name: str, blob: trustme.Blob) -> str:
        path = self.dir / name
        blob.write_to_path(str(path))
        return str(path)

    async def front(
        self, target: tuple[str, int], *names: str, client_ca: trustme.CA | None = None
    ) -> TlsFront:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*(names or ("127.0.0.1",))).configure_cert(context)
        if client_ca is not None:
            client_ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        return await TlsFront(target, context).start()


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(trustme.CA(), tmp_path)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with fresh_pg_schema() as url:
        yield url


def _target(schema_url: str) -> tuple[str, int]:
    url = make_url(schema_url)
    return (url.host or "127.0.0.1", url.port or 5432)


def _through(schema_url: str, front: TlsFront, **params: str) -> str:
    """`schema_url` (of the database behind `front`) by way of `front`, with `params`."""
    url = make_url(schema_url)
    assert _target(schema_url) == front.target
    url = url.set(host="127.0.0.1", port=front.port).update_query_dict(params)
    return url.render_as_string(False)


async def _start_fails(url: str) -> str:
    """The one line an operator reads when the server cannot start on `url`."""
    app = App(Settings(listen="127.0.0.1:0", db=url, grace_period=0.5))
    try:
        with pytest.raises(Exception) as err:
            await app.start()
    finally:
        await app.stop(0)
    line = describe(err.value, url)
    assert "\n" not in line
    return line


@pytest.mark.postgres
async def test_verify_full_serves_with_every_connection_over_tls(tls: Tls, schema: str) -> None:
    front = await tls.front(_target(schema))
    url = _through(
        schema, front, sslmode="verify-full", sslrootcert=tls.pem("ca.pem", tls.ca.cert_pem)
    )
    try:
        async with running_server(url) as s:
            reply = await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))
            job = await wait_for_state(s.jobs, reply.job.id)
            assert job.state == job_pb2.JOB_STATE_COMPLETED
    finally:
        await front.close()
    # the front carries TLS only: a plaintext connection would have been refused, and the
    # server would have failed instead of serving
    assert front.refused == 0
    assert front.tls_sessions >= 2  # the pool's and the enqueues' own connection at least


@pytest.mark.postgres
async def test_a_certificate_from_another_ca_stops_the_start_in_one_line(
    tls: Tls, schema: str
) -> None:
    front = await tls.front(_target(schema))
    other = tls.pem("other.pem", trustme.CA().cert_pem)
    try:
        line = await _start_fails(_through(schema, front, sslmode="verify-full", sslrootcert=other))
    finally:
        await front.close()
    assert "certificate verify failed" in line
    assert front.tls_sessions == 0


@pytest.mark.postgres
async def test_verify_full_checks_the_host_name_and_verify_ca_does_not(
    tls: Tls, schema: str
) -> None:
    front = await tls.front(_target(schema), "db.example")  # not 127.0.0.1
    ca = tls.pem("ca.pem", tls.ca.cert_pem)
    try:
        line = await _start_fails(_through(schema, front, sslmode="verify-full", sslrootcert=ca))
        assert "127.0.0.1" in line and "certificate" in line
        async with running_server(_through(schema, front, sslmode="verify-ca", sslrootcert=ca)):
            pass
    finally:
        await front.close()
    assert front.tls_sessions >= 1


@pytest.mark.postgres
async def test_require_encrypts_without_checking_and_disable_is_refused(
    tls: Tls, schema: str
) -> None:
    front = await tls.front(_target(schema))
    try:
        async with running_server(_through(schema, front, sslmode="require")) as s:
            await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))
        sessions = front.tls_sessions
        assert sessions >= 1
        line = await _start_fails(_through(schema, front, sslmode="disable"))
    finally:
        await front.close()
    assert line.startswith("cannot ")
    assert front.tls_sessions == sessions and front.refused >= 1


@pytest.mark.postgres
async def test_a_client_certificate_is_shown_when_the_url_names_it(tls: Tls, schema: str) -> None:
    client_ca = trustme.CA()
    front = await tls.front(_target(schema), client_ca=client_ca)
    client = client_ca.issue_cert("jobwheel")
    ca = tls.pem("ca.pem", tls.ca.cert_pem)
    cert = tls.pem("client.pem", client.cert_chain_pems[0])
    key = tls.pem("client.key", client.private_key_pem)
    try:
        line = await _start_fails(_through(schema, front, sslmode="verify-full", sslrootcert=ca))
        assert line.startswith("cannot ")
        url = _through(
            schema, front, sslmode="verify-full", sslrootcert=ca, sslcert=cert, sslkey=key
        )
        async with running_server(url) as s:
            await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))
    finally:
        await front.close()
    assert front.client_certs >= 2 and front.client_certs == front.tls_sessions


@pytest.mark.postgres
async def test_application_name_names_every_connection_of_the_server(schema: str) -> None:
    name = f"jw-{uuid.uuid4().hex[:12]}"
    url = make_url(schema).update_query_dict({"application_name": name})
    async with running_server(url.render_as_string(False)) as s:
        await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))
        admin = await asyncpg.connect(os.environ[PG_ENV])
        try:
            names = await admin.fetch(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'jw-%'"
            )
        finally:
            await admin.close()
    assert len(names) >= 2 and {row[0] for row in names} == {name}
