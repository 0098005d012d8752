"""JobFilter from keyword arguments, and friendly names for job states."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict, cast

from jobwheel.client.convert import TimeLike, to_timestamp, update_struct
from jobwheel.v1 import job_pb2

TERMINAL_STATES = frozenset(
    {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
)


class FilterArgs(TypedDict, total=False):
    """Keyword form of JobFilter: every given field must match; within a list, any value."""

    ids: Iterable[str]
    states: Iterable[int | str]
    queues: Iterable[str]
    tasks: Iterable[str]
    labels: Mapping[str, str]
    payload: Mapping[str, Any]
    created_after: TimeLike
    created_before: TimeLike
    next_run_after: TimeLike
    next_run_before: TimeLike
    ended_after: TimeLike
    ended_before: TimeLike
    recurring: bool


def parse_state(state: int | str) -> int:
    """A JobState from its number, its full name, or a short one: 'failed', 'Running'."""
    if isinstance(state, int):
        return state
    name = state.strip().upper().replace("-", "_")
    if not name.startswith("JOB_STATE_"):
        name = "JOB_STATE_" + name
    try:
        value = job_pb2.JobState.Value(name)
    except ValueError:
        choices = ", ".join(state_names())
        raise ValueError(f"unknown job state {state!r} (one of: {choices})") from None
    if value == job_pb2.JOB_STATE_UNSPECIFIED:
        raise ValueError("JOB_STATE_UNSPECIFIED is not a job state")
    return value


def state_name(state: int) -> str:
    """'COMPLETED' for JOB_STATE_COMPLETED (the number itself when unknown)."""
    try:
        return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")
    except ValueError:
        return str(state)


def state_names() -> list[str]:
    return [
        v.name.removeprefix("JOB_STATE_").lower()
        for v in job_pb2.JobState.DESCRIPTOR.values
        if v.number != job_pb2.JOB_STATE_UNSPECIFIED
    ]


def _range(after: TimeLike | None, before: TimeLike | None, target: job_pb2.TimeRange) -> None:
    if after is not None:
        target.start_time.CopyFrom(to_timestamp(after))
    if before is not None:
        target.end_time.CopyFrom(to_timestamp(before))


def job_filter(base: job_pb2.JobFilter | None = None, **args: Any) -> job_pb2.JobFilter:
    """A JobFilter: `base` (copied) with the FilterArgs keywords merged in."""
    unknown = set(args) - set(FilterArgs.__annotations__)
    if unknown:
        raise TypeError(f"unknown filter argument(s): {', '.join(sorted(unknown))}")
    f = job_pb2.JobFilter()
    if base is not None:
        f.CopyFrom(base)
    f.ids.extend(args.get("ids") or ())
    f.states.extend(cast(job_pb2.JobState, parse_state(s)) for s in args.get("states") or ())
    f.queues.extend(args.get("queues") or ())
    f.tasks.extend(args.get("tasks") or ())
    f.labels.update(args.get("labels") or {})
    if args.get("payload"):
        update_struct(f.payload, args["payload"])
    _range(args.get("created_after"), args.get("created_before"), f.create_time)
    _range(args.get("next_run_after"), args.get("next_run_before"), f.next_run_time)
    _range(args.get("ended_after"), args.get("ended_before"), f.end_time)
    if args.get("recurring") is not None:
        f.recurring = bool(args["recurring"])
    return f


def is_empty(f: job_pb2.JobFilter) -> bool:
    return f.ByteSize() == 0 and not f.HasField("recurring")
