"""Client settings shared by both clients: deadlines, retries, watch resumption."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

DEFAULT_TIMEOUT = 10.0
# UNAVAILABLE: the call most likely never reached the server; ABORTED: the database rolled
# its transaction back for a concurrent one. Anything else may have had an effect or will
# fail the same way again. Either may have had an effect (a bulk call keeps the batches it
# committed), so only idempotent calls are sent again.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})


@dataclass(frozen=True)
class Retry:
    """Retries of idempotent calls after UNAVAILABLE or ABORTED: capped exponential backoff."""

    attempts: int = 4  # total tries, the first included; 1 disables retries
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- fraction of each wait, so clients do not retry in lockstep

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry `retry_number` (1 = the first retry)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry_number - 1))
        if not self.jitter:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))

    def delays(self) -> Iterator[float]:
        """The waits between the tries of one call."""
        for n in range(1, self.attempts):
            yield self.delay(n)


NO_RETRY = Retry(attempts=1)


class WatchCursor:
    """Where a WatchJobs stream got to, so a new stream continues it without a gap.

    Resuming uses `since_revision` = the last revision seen (events, heartbeats and the
    snapshot end all carry one). A stream dropped during its snapshot starts over, since
    snapshot entries are not positions in the event log.
    """

    def __init__(self, request: pb.WatchJobsRequest) -> None:
        self.first = request
        self.revision = request.since_revision
        self.in_snapshot = request.include_snapshot

    def observe(self, resp: pb.WatchJobsResponse) -> None:
        kind = resp.WhichOneof("kind")
        if kind == "snapshot_end":
            self.in_snapshot = False
            self.revision = max(self.revision, resp.snapshot_end.revision)
        elif self.in_snapshot:
            return
        elif kind == "event" and resp.event.type != job_pb2.JOB_EVENT_TYPE_SNAPSHOT:
            self.revision = max(self.revision, resp.event.revision)
        elif kind == "batch" and resp.batch.events:
            self.revision = max(self.revision, resp.batch.events[-1].revision)
        elif kind == "heartbeat":
            self.revision = max(self.revision, resp.heartbeat.revision)

    def resume_request(self) -> pb.WatchJobsRequest:
        req = pb.WatchJobsRequest()
        req.CopyFrom(self.first)
        if not self.in_snapshot:
            req.include_snapshot = False
            req.since_revision = self.revision
        return req


def events_of(resp: pb.WatchJobsResponse) -> list[job_pb2.JobEvent]:
    """The events a watch message carries: one, a batch, or none (heartbeats, snapshot end)."""
    kind = resp.WhichOneof("kind")
    if kind == "event":
        return [resp.event]
    if kind == "batch":
        return list(resp.batch.events)
    return []
