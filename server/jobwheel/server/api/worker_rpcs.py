"""JobService.ListWorkers and Job.waiting_reason (a part of JobService, kept apart for size)."""

from __future__ import annotations

from typing import Any

from jobwheel.server import model
from jobwheel.server.api import pagination, validate
from jobwheel.server.api.convert import timestamp
from jobwheel.server.api.reply_size import Budget
from jobwheel.server.api.worker_service import MAX_WORKER_ID
from jobwheel.server.execution.roster import FORGET_AFTER, SERVER, Roster
from jobwheel.server.security import principal as access
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

DEFAULT_SEEN_WITHIN = 300 * model.SECOND
DEFAULT_WORKERS_PAGE = 100
# A key is a worker id (up to MAX_WORKER_ID characters, any but control characters) after a
# kind digit; its token, UTF-8 in base64, stays below this.
MAX_WORKERS_TOKEN = 2048
_WORKERS_SCOPE = "ListWorkers"


class WorkerRpcs:
    roster: Roster | None

    def explain(self, job: model.Job, proto: job_pb2.Job) -> job_pb2.Job:
        """Sets `waiting_reason` of a QUEUED job nobody can run."""
        if self.roster is not None and job.state is model.JobState.QUEUED:
            proto.waiting_reason = self.roster.waiting_reason(job)
        return proto

    async def ListWorkers(self, request: pb.ListWorkersRequest, context: Any) -> Any:
        access.check_unscoped("ListWorkers (workers span every queue)")
        errors = validate.Violations()
        within: int | None = DEFAULT_SEEN_WITHIN
        if request.HasField("seen_within"):
            within = validate.micros_of_duration(
                request.seen_within, "seen_within", errors, high=FORGET_AFTER
            )
        errors.raise_if_any()
        within = within or DEFAULT_SEEN_WITHIN
        size = pagination.page_size(request.page_size, default=DEFAULT_WORKERS_PAGE)
        after = pagination.decode_text_token(
            request.page_token,
            _WORKERS_SCOPE,
            within,
            max_chars=MAX_WORKER_ID + 1,
            max_token=MAX_WORKERS_TOKEN,
        )
        if self.roster is None:
            return pb.ListWorkersResponse()
        out: list[pb.Worker] = []
        budget = Budget()
        last = ""
        for row, held in await self.roster.workers(within):
            server = row.kind == SERVER
            key = ("0" if server else "1") + row.id  # servers first, then by id
            if after is not None and key <= after:
                continue
            worker = pb.Worker(
                id=row.id,
                kind=pb.WORKER_KIND_SERVER if server else pb.WORKER_KIND_REMOTE,
                last_seen_time=timestamp(row.last_seen),
                queues=row.queues,
                tasks=row.tasks,
                jobs_held=held,
                version=row.info.get("version", "") if server else "",
                seen_by="" if server else row.server,
            )
            if len(out) == size or not budget.take(worker):
                token = pagination.encode_token(last, _WORKERS_SCOPE, within)
                return pb.ListWorkersResponse(workers=out, next_page_token=token)
            out.append(worker)
            last = key
        return pb.ListWorkersResponse(workers=out)
