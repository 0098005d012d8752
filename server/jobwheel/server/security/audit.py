"""One structured log line per changing RPC: who, what, on which jobs, how many.

The line goes to the "jobwheel.audit" logger with the fields as `extra` (principal, method,
targets, filter, count), so a JSON log formatter emits them as fields; the message repeats
them for plain-text logs. It is written on every changing call, so each method's `Recorder`
works out once which fields of its messages name the targets and the count. A reply handed
over encoded (api/encoded_reply.py) is not parsed: it carries the job ids of its results.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from jobwheel.server.api.encoded_reply import EncodedReply
from jobwheel.server.observability.logs import emit
from jobwheel.server.security.principal import Principal

log = logging.getLogger("jobwheel.audit")
MAX_TARGETS = 100  # a batch names its first jobs; `count` has the total
_REQUEST_TARGETS = ("id", "job_id", "name")
_REPLY_TARGETS = ("job", "results", "leases", "subscription")


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where one method's messages hold what the line says (field names, or '')."""

    request_targets: tuple[str, ...]  # the first set one names the target
    reply_target: str  # else this field of the reply
    has_filter: bool
    has_all: bool
    count: str  # "count" (a number), "results"/"leases" (a list), "" (the targets)


def _plan(request: Message, response: Message | type[Message]) -> _Plan:
    asked = request.DESCRIPTOR.fields_by_name
    fields = response.DESCRIPTOR.fields_by_name
    return _Plan(
        request_targets=tuple(name for name in _REQUEST_TARGETS if name in asked),
        reply_target=next((name for name in _REPLY_TARGETS if name in fields), ""),
        has_filter="filter" in asked,
        has_all="all" in asked,
        count=next((name for name in ("count", "results", "leases") if name in fields), ""),
    )


def _targets(plan: _Plan, request: Message, response: Message | EncodedReply) -> list[str]:
    for name in plan.request_targets:
        value = getattr(request, name)
        if value:
            return [value]
    if isinstance(response, EncodedReply):
        return list(response.ids[:MAX_TARGETS])
    kind = plan.reply_target
    if kind == "job":
        return [response.job.id] if response.HasField("job") else []  # type: ignore[attr-defined]
    if kind == "results":  # BatchEnqueueJobs, CompleteJobs, ...
        results = response.results[:MAX_TARGETS]  # type: ignore[attr-defined]
        return [r.job_id if hasattr(r, "job_id") else r.job.id for r in results]
    if kind == "leases":  # LeaseJobs
        return [lease.job.id for lease in response.leases[:MAX_TARGETS]]  # type: ignore[attr-defined]
    if kind == "subscription":
        return [response.subscription.id]  # type: ignore[attr-defined]
    return []


class Recorder:
    """The audit line of one method: `recorder(principal, request, response)` logs a call
    that succeeded (`response` its reply)."""

    __slots__ = ("_plan", "_skip_empty", "method")

    def __init__(self, method: str) -> None:
        self.method = method
        self._plan: _Plan | None = None
        self._skip_empty = method.endswith("/LeaseJobs")  # an empty long-poll changed nothing

    def __call__(
        self, principal: Principal, request: Message, response: Message | EncodedReply
    ) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        plan = self._plan
        if plan is None:
            shape = response.message if isinstance(response, EncodedReply) else response
            plan = self._plan = _plan(request, shape)
        targets = _targets(plan, request, response)
        flt = ""
        if plan.has_filter and request.HasField("filter"):
            flt = json.dumps(MessageToDict(request.filter), sort_keys=True)  # type: ignore[attr-defined]
        if plan.has_all and request.all:  # type: ignore[attr-defined]
            flt = f"all {flt}" if flt else "all"
        if isinstance(response, EncodedReply):  # one result per id
            count = len(response.ids)
        elif plan.count == "count":
            count = int(response.count)  # type: ignore[attr-defined]
        elif plan.count:
            count = len(getattr(response, plan.count))
        else:
            count = max(1, len(targets))
        if self._skip_empty and count == 0:
            return
        emit(
            log,
            logging.INFO,
            f"audit {self.method} principal={principal.name} "
            f"targets={','.join(targets) or '-'} filter={flt or '-'} count={count}",
            {
                "principal": principal.name,
                "method": self.method,
                "targets": targets,
                "filter": flt,
                "count": count,
            },
        )
