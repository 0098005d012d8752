"""Reply size bounds: every message the server sends fits what gRPC clients accept by default.

gRPC implementations in every language default to a 4 MiB receive limit; a larger reply fails
on the client after the server paid for building it. So lists end a page early when the next
item would not fit (and say so with next_page_token), stream batches close early, and a single
job is bounded so that it always fits (see MAX_JOB_BYTES).
"""

from __future__ import annotations

from google.protobuf.message import Message
from jobwheel.server.api.fields import Violations
from jobwheel.server.model import MAX_DOCUMENT_BYTES
from jobwheel.v1.job_service_pb2 import EnqueueJobRequest

MAX_MESSAGE_BYTES = 4 << 20
# Room for a reply's other fields (page token, totals) and a list's per-item framing slack.
ENVELOPE_BYTES = 4 << 10
# Payload, result and progress are each at most 1 MiB encoded (MAX_DOCUMENT_BYTES); the other
# fields a client sets are at most MAX_JOB_FIELDS_BYTES together; errors, cancel reason and
# server-set fields stay below 160 KiB. So a job encodes to less than 3.25 MiB.
MAX_JOB_FIELDS_BYTES = 64 << 10
MAX_JOB_BYTES = 3 * MAX_DOCUMENT_BYTES + MAX_JOB_FIELDS_BYTES + (160 << 10)
# Job.waiting_reason names a task and a queue (at most 128 characters each) in a fixed text.
WAITING_REASON_BYTES = 512
assert MAX_JOB_BYTES + ENVELOPE_BYTES < MAX_MESSAGE_BYTES


def _varint_size(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def framed_size(message: Message) -> int:
    """Bytes `message` takes as an element of a repeated field: tag, length and body."""
    body = message.ByteSize()
    return 1 + _varint_size(body) + body


class Budget:
    """Counts the bytes of a reply's repeated field as items are added."""

    def __init__(self, limit: int = MAX_MESSAGE_BYTES - ENVELOPE_BYTES) -> None:
        self.limit = limit
        self.used = 0

    def take(self, message: Message, room: int = 0) -> bool:
        """Adds `message`, and `room` bytes it may grow by, if they fit; False (and nothing
        added) if they do not."""
        size = framed_size(message) + room
        if self.used + size > self.limit:
            return False
        self.used += size
        return True


def check_job_fields(req: EnqueueJobRequest, size: int, prefix: str, errors: Violations) -> None:
    """Everything but the payload together within MAX_JOB_FIELDS_BYTES, so that a job always
    fits one reply; the largest part is named."""
    if size <= MAX_JOB_FIELDS_BYTES:
        return
    parts = {
        "labels": sum(len(k.encode()) + len(v.encode()) for k, v in req.labels.items()),
        "http": req.http.ByteSize(),
        "schedule": req.schedule.ByteSize(),
    }
    largest = max(parts, key=lambda name: parts[name])
    errors.add(
        f"{prefix}{largest}",
        f"the job's fields other than payload encode to {size} bytes, "
        f"more than {MAX_JOB_FIELDS_BYTES}",
    )
