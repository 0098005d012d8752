"""JobService RPCs about queues and statistics (a part of JobService, kept apart for size)."""

from __future__ import annotations

from typing import Any

from jobwheel.server import model
from jobwheel.server.api import pagination, validate
from jobwheel.server.api.convert import JOB_STATE_TO_PROTO, duration
from jobwheel.server.api.errors import FieldViolation, InvalidArgument
from jobwheel.server.core import Core
from jobwheel.server.security import principal as access
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

MAX_CONCURRENCY = 100_000
MAX_RATE = 1_000_000.0
# ListQueues tokens belong to no filter; this tells them from other lists' tokens.
_QUEUES_SCOPE = "ListQueues"


def _state_counts(counts: dict[model.JobState, int]) -> list[job_pb2.StateCount]:
    return [
        job_pb2.StateCount(state=JOB_STATE_TO_PROTO[s], count=n)
        for s, n in sorted(counts.items(), key=lambda item: JOB_STATE_TO_PROTO[item[0]])
        if n
    ]


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(1, round(p * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class QueueRpcs:
    core: Core
    default_concurrency: int

    def _queue(self, settings: model.QueueSettings, depths: dict[model.JobState, int]) -> Any:
        return job_pb2.Queue(
            name=settings.name,
            paused=settings.paused,
            max_concurrency=settings.max_concurrency or self.default_concurrency,
            max_dispatches_per_second=settings.max_dispatches_per_second,
            state_counts=_state_counts(depths),
        )

    async def _queue_reply(self, settings: model.QueueSettings) -> Any:
        depths = await self.core.store.queue_depths([settings.name])
        return self._queue(settings, depths.get(settings.name, {}))

    async def ListQueues(self, request: pb.ListQueuesRequest, context: Any) -> Any:
        size = pagination.page_size(request.page_size, default=pagination.MAX_PAGE_SIZE)
        after = pagination.decode_text_token(request.page_token, _QUEUES_SCOPE)
        store = self.core.store
        # One more than the page, to know whether another follows.
        names = await store.queue_names(after, size + 1, access.current().queues)
        page, more = names[:size], len(names) > size
        settings = await store.queue_settings(page)
        depths = await store.queue_depths(page)
        return pb.ListQueuesResponse(
            queues=[
                self._queue(settings.get(n, model.QueueSettings(n)), depths.get(n, {}))
                for n in page
            ],
            next_page_token=pagination.encode_token(page[-1], _QUEUES_SCOPE) if more else "",
        )

    async def PauseQueue(self, request: pb.PauseQueueRequest, context: Any) -> Any:
        _check_name(request.name)
        access.check_queue(request.name, "name")
        settings = await self.core.update_queue(request.name, paused=True)
        return pb.PauseQueueResponse(queue=await self._queue_reply(settings))

    async def ResumeQueue(self, request: pb.ResumeQueueRequest, context: Any) -> Any:
        _check_name(request.name)
        access.check_queue(request.name, "name")
        settings = await self.core.update_queue(request.name, paused=False)
        return pb.ResumeQueueResponse(queue=await self._queue_reply(settings))

    async def UpdateQueue(self, request: pb.UpdateQueueRequest, context: Any) -> Any:
        _check_name(request.name)
        access.check_queue(request.name, "name")
        errors = validate.Violations()
        concurrency = rate = None
        if request.HasField("max_concurrency"):
            concurrency = request.max_concurrency
            if not 1 <= concurrency <= MAX_CONCURRENCY:
                errors.add("max_concurrency", f"must be between 1 and {MAX_CONCURRENCY}")
        if request.HasField("max_dispatches_per_second"):
            rate = request.max_dispatches_per_second
            if not 0 <= rate <= MAX_RATE:  # NaN fails too
                errors.add("max_dispatches_per_second", f"must be between 0 and {MAX_RATE:g}")
        errors.raise_if_any()
        settings = await self.core.update_queue(
            request.name, max_concurrency=concurrency, max_dispatches_per_second=rate
        )
        return pb.UpdateQueueResponse(queue=await self._queue_reply(settings))

    async def GetJobStats(self, request: pb.GetJobStatsRequest, context: Any) -> Any:
        errors = validate.Violations()
        flt = validate.filter_from_proto(request.filter, "filter", errors)
        errors.raise_if_any()
        stats = await self.core.store.job_stats(access.narrow(flt), self.core.clock.now())
        completed = stats.by_state.get(model.JobState.COMPLETED, 0)
        failed = stats.by_state.get(model.JobState.FAILED, 0)
        durations = sorted(stats.recent_durations)
        return pb.GetJobStatsResponse(
            total=sum(stats.by_state.values()),
            state_counts=_state_counts(stats.by_state),
            queue_counts=[
                pb.QueueCount(queue=q, count=n) for q, n in sorted(stats.by_queue.items())
            ],
            queue_counts_truncated=stats.queues_truncated,
            success_rate=completed / (completed + failed) if completed + failed else 0.0,
            completed_per_second=stats.completed_last_minute / 60,
            run_duration_p50=duration(percentile(durations, 0.50)),
            run_duration_p90=duration(percentile(durations, 0.90)),
            run_duration_p99=duration(percentile(durations, 0.99)),
        )


def _check_name(name: str) -> None:
    errors = validate.Violations()
    validate.check_name(name, "name", errors)
    if errors.items:
        raise InvalidArgument([FieldViolation("name", errors.items[0].description)])
