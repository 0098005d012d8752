"""One structured log line per changing RPC: who, what, on which jobs, how many.

The line goes to the "jobwheel.audit" logger with the fields as `extra` (principal, method,
targets, filter, count), so a JSON log formatter emits them as fields; the message repeats
them for plain-text logs.
"""

from __future__ import annotations

import json
import logging

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from jobwheel.server.security.principal import Principal

log = logging.getLogger("jobwheel.audit")
MAX_TARGETS = 100  # a batch names its first jobs; `count` has the total


def _targets(request: Message, response: Message | None) -> list[str]:
    for name in ("id", "job_id", "name"):
        if name in request.DESCRIPTOR.fields_by_name:
            value = getattr(request, name)
            if value:
                return [value]
    if response is None:
        return []
    if "job" in response.DESCRIPTOR.fields_by_name and response.HasField("job"):
        return [response.job.id]  # type: ignore[attr-defined]
    if "results" in response.DESCRIPTOR.fields_by_name:  # BatchEnqueueJobs, CompleteJobs, ...
        results = response.results[:MAX_TARGETS]  # type: ignore[attr-defined]
        return [r.job_id if hasattr(r, "job_id") else r.job.id for r in results]
    if "leases" in response.DESCRIPTOR.fields_by_name:  # LeaseJobs
        return [lease.job.id for lease in response.leases[:MAX_TARGETS]]  # type: ignore[attr-defined]
    if "subscription" in response.DESCRIPTOR.fields_by_name:
        return [response.subscription.id]  # type: ignore[attr-defined]
    return []


def _count(response: Message | None, targets: list[str]) -> int:
    if response is None:
        return 0
    fields = response.DESCRIPTOR.fields_by_name
    if "count" in fields:
        return int(response.count)  # type: ignore[attr-defined]
    for name in ("results", "leases"):
        if name in fields:
            return len(getattr(response, name))
    return max(1, len(targets))


def record(principal: Principal, method: str, request: Message, response: Message | None) -> None:
    """Logs one changing call that succeeded (`response` None: a denied or failed call)."""
    targets = _targets(request, response)
    flt = ""
    if "filter" in request.DESCRIPTOR.fields_by_name and request.HasField("filter"):
        flt = json.dumps(MessageToDict(request.filter), sort_keys=True)  # type: ignore[attr-defined]
    if getattr(request, "all", False):
        flt = f"all {flt}" if flt else "all"
    count = _count(response, targets)
    if method.endswith("/LeaseJobs") and count == 0:
        return  # an empty long-poll changed nothing
    log.info(
        "audit %s principal=%s targets=%s filter=%s count=%d",
        method,
        principal.name,
        ",".join(targets) or "-",
        flt or "-",
        count,
        extra={
            "principal": principal.name,
            "method": method,
            "targets": targets,
            "filter": flt,
            "count": count,
        },
    )
