"""Authentication and queue scopes at their edges: an idempotency key held in another queue,
a tokens file rewritten within one tick of the clock, a JWT subject holding "/"."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from jobwheel.server.security.roles import Role
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.server.security.tokens import digest
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running, running_server
from tests.integration.security.conftest import Tokens
from tests.integration.security.test_jwt import AUDIENCE, ISSUER, Issuer
from tests.integration.workers.helpers import error_info


async def _code(call: object) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code(), err


# README "Queue scopes": "A token may be limited to queues: it sees and touches only their
# jobs ... another queue's job is NOT_FOUND (its existence is not revealed)".
async def test_idempotency_key_does_not_reveal_another_queues_job(
    secured: Running, tokens: Tokens
) -> None:
    tokens.add("mail-ci", Role.PRODUCER, ("emails",))
    secret = jpb.EnqueueJobRequest(
        task="remote.work", queue="sms", idempotency_key="k-1", labels={"secret": "s3cr3t"}
    )
    sms = (await secured.jobs.EnqueueJob(secret, metadata=tokens.bearer("admin"))).job
    probe = jpb.EnqueueJobRequest(task="remote.work", queue="emails", idempotency_key="k-1")
    code, err = await _code(secured.jobs.EnqueueJob(probe, metadata=tokens.bearer("mail-ci")))
    # the key is taken (keys are unique across queues): said, and nothing of the job
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert isinstance(err, grpc.aio.AioRpcError)
    assert error_info(err).reason == "IDEMPOTENCY_KEY_TAKEN"
    assert sms.id not in str(err.details()) and "s3cr3t" not in str(err.debug_error_string())


# Same promise, BatchEnqueueJobs ("The job of a repeated idempotency key" is returned).
async def test_batch_idempotency_key_does_not_reveal_another_queues_job(
    secured: Running, tokens: Tokens
) -> None:
    tokens.add("mail-ci", Role.PRODUCER, ("emails",))
    secret = jpb.EnqueueJobRequest(task="remote.work", queue="sms", idempotency_key="k-2")
    sms = (await secured.jobs.EnqueueJob(secret, metadata=tokens.bearer("admin"))).job
    batch = jpb.BatchEnqueueJobsRequest(
        jobs=[jpb.EnqueueJobRequest(task="remote.work", queue="emails", idempotency_key="k-2")]
    )
    reply = await secured.jobs.BatchEnqueueJobs(batch, metadata=tokens.bearer("mail-ci"))
    [result] = reply.results
    assert result.already_exists and not result.HasField("job")
    assert sms.id.encode() not in reply.SerializeToString()


# README "Tokens file": "deleting an entry revokes the token at once. The server re-reads the
# file when it changes". An in-place edit of the same size within one timestamp tick (the
# kernel's mtime is coarse) is a change too; reproduced by keeping the mtime.
async def test_revocation_of_same_size_in_the_same_mtime_tick(
    secured: Running, tokens: Tokens
) -> None:
    reader = tokens.bearer("reader")
    await secured.jobs.ListJobs(jpb.ListJobsRequest(), metadata=reader)  # file read, stamped
    before = os.stat(tokens.path)
    text = tokens.path.read_text()
    # revoke "reader": its entry now holds another hash of the same length
    revoked = text.replace(digest(tokens.plain["reader"]), "0" * 64)
    assert revoked != text and len(revoked) == len(text)
    with tokens.path.open("r+") as out:  # in place: same inode
        out.write(revoked)
    os.utime(tokens.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    code, _ = await _code(secured.jobs.ListJobs(jpb.ListJobsRequest(), metadata=reader))
    assert code is grpc.StatusCode.UNAUTHENTICATED


# README "Workers": "A lease belongs to the principal that took it together with the worker
# id ... a heartbeat, completion or failure from any other principal is refused with
# FAILED_PRECONDITION (LEASE_NOT_HELD)". A JWT `sub` holding "/" must not pass as another
# principal's "<principal>/<worker id>".
async def test_jwt_subject_with_a_slash_cannot_complete_another_principals_lease(
    tmp_path: Path,
) -> None:
    issuer = Issuer(tmp_path / "jwks.json")
    settings = SecuritySettings(
        auth_jwks=str(issuer.path), auth_jwt_issuer=ISSUER, auth_jwt_audience=AUDIENCE
    )
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
        victim = (("authorization", f"Bearer {issuer.token(sub='team', role='worker')}"),)
        thief = (("authorization", f"Bearer {issuer.token(sub='team/a', role='worker')}"),)
        admin = (("authorization", f"Bearer {issuer.token(sub='root', role='admin')}"),)
        await server.jobs.EnqueueJob(
            jpb.EnqueueJobRequest(task="remote.work", queue="q"), metadata=admin
        )
        leased = await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id="a/b", queues=["q"]), metadata=victim
        )
        assert len(leased.leases) == 1
        job = leased.leases[0].job
        code, _ = await _code(
            server.workers.CompleteJob(
                wpb.CompleteJobRequest(job_id=job.id, epoch=leased.leases[0].epoch, worker_id="b"),
                metadata=thief,
            )
        )
        assert code is grpc.StatusCode.FAILED_PRECONDITION
