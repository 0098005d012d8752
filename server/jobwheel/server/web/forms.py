"""The jobs filter as a query string and back: what the filter form, paging links, live
updates and bulk actions share. Every input is checked here, at the edge."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from jobwheel.server import model
from jobwheel.server.api import validate
from jobwheel.server.json_rules import json_problem
from starlette.datastructures import ImmutableMultiDict

MAX_TEXT = 1000  # characters of one filter input
MAX_ITEMS = 32  # names, labels or payload fields in one input
ID_LENGTH = 36


class FormError(ValueError):
    """A filter input that cannot be used; the message names the input."""


@dataclass(frozen=True)
class JobQuery:
    """The raw inputs, kept to fill the form and build links, and the filter they make."""

    inputs: dict[str, list[str]]
    filter: model.JobFilter
    errors: list[str] = field(default_factory=list)

    def query(self, **extra: str | int) -> str:
        """The filter's query string, with `extra` parameters added."""
        # only `state` repeats; of the other fields the filter used the first value alone
        pairs = [
            (k, v)
            for k, values in self.inputs.items()
            for v in (values if k == "state" else values[:1])
            if v
        ]
        pairs += [(k, str(v)) for k, v in extra.items()]
        return urlencode(pairs)

    def value(self, name: str) -> str:
        values = self.inputs.get(name, [])
        return values[0] if values else ""

    def has_state(self, state: str) -> bool:
        return state in self.inputs.get("state", [])


FIELDS = (
    "state",
    "queue",
    "task",
    "label",
    "payload",
    "created_from",
    "created_to",
    "next_from",
    "next_to",
    "id",
    "recurring",
)


def parse_job_query(params: ImmutableMultiDict[str, Any]) -> JobQuery:
    """A JobQuery from request parameters; bad inputs are listed in `errors` and left out of
    the filter (the page shows them next to the form)."""
    inputs = {name: [str(v)[:MAX_TEXT] for v in params.getlist(name)] for name in FIELDS}
    errors: list[str] = []
    flt = model.JobFilter()

    def one(name: str) -> str:
        values = inputs[name]
        return values[0].strip() if values else ""

    states = []
    for value in inputs["state"]:
        try:
            states.append(model.JobState(value))
        except ValueError:
            errors.append(f"state: unknown state {value!r}")
    flt = replace(flt, states=tuple(states))
    queues, tasks = _split(one("queue")), _split(one("task"))
    for name, names in (("queue", queues), ("task", tasks)):
        bad = _bad_names(names)
        if bad:
            errors.append(f"{name}: {bad}")
    if not errors:
        flt = replace(flt, queues=tuple(queues), tasks=tuple(tasks))
    try:
        flt = replace(flt, labels=_pairs(one("label"), json_values=False))
    except FormError as exc:
        errors.append(f"label: {exc}")
    try:
        flt = replace(flt, payload=_pairs(one("payload"), json_values=True))
    except FormError as exc:
        errors.append(f"payload: {exc}")
    try:
        flt = replace(flt, create_time=_range(one("created_from"), one("created_to")))
    except FormError as exc:
        errors.append(f"created: {exc}")
    try:
        flt = replace(flt, next_run_time=_range(one("next_from"), one("next_to")))
    except FormError as exc:
        errors.append(f"next run: {exc}")
    job_id = one("id")
    if job_id:
        if len(job_id) > ID_LENGTH or any(c not in "0123456789abcdef-" for c in job_id.lower()):
            errors.append("id: an id or its beginning holds only 0-9, a-f and '-'")
        elif len(job_id) == ID_LENGTH:
            flt = replace(flt, ids=(job_id.lower(),))
        else:
            flt = replace(flt, id_prefix=job_id.lower())
    recurring = one("recurring")
    if recurring in ("yes", "no"):
        flt = replace(flt, recurring=recurring == "yes")
    return JobQuery(inputs, flt, errors)


def scoped(flt: model.JobFilter, queues: frozenset[str] | None) -> model.JobFilter | None:
    """`flt` limited to a principal's `queues` (None: every queue); None when nothing can
    match."""
    if queues is None:
        return flt
    wanted = flt.queues or tuple(sorted(queues))
    allowed = tuple(q for q in wanted if q in queues)
    return replace(flt, queues=allowed) if allowed else None


def parse_time(text: str) -> int | None:
    """A datetime-local input ('2026-11-29T10:17', read as UTC) or ISO 8601 with an offset,
    as µs since the epoch; None for ''."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FormError(f"not a date and time: {text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not 1970 <= moment.year <= 9999:
        raise FormError("out of range")
    return int(moment.timestamp() * model.SECOND)


def _range(start: str, end: str) -> model.TimeRange | None:
    lo, hi = parse_time(start), parse_time(end)
    if lo is None and hi is None:
        return None
    if lo is not None and hi is not None and lo > hi:
        raise FormError("the start is after the end")
    return model.TimeRange(lo, hi)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _bad_names(names: list[str]) -> str:
    if len(names) > MAX_ITEMS:
        return f"at most {MAX_ITEMS} names"
    errors = validate.Violations()
    for name in names:
        validate.check_name(name, "name", errors)
    return errors.items[0].description if errors.items else ""


def _pairs(text: str, *, json_values: bool) -> tuple[tuple[str, Any], ...]:
    """'k=v, k2=v2' -> sorted pairs; with `json_values` a value that reads as JSON is that
    value (42, true, "42"), anything else is the text itself (NaN, 1e999 and integers past
    2**53, which no payload number equals, too). The API's rules hold: labels as
    validate.check_labels says, no U+0000 anywhere."""
    pairs: dict[str, Any] = {}
    for part in _split(text):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise FormError(f"{part[:40]!r} is not key=value")
        pairs[key] = _json_or_text(value) if json_values else value
    if len(pairs) > MAX_ITEMS:
        raise FormError(f"at most {MAX_ITEMS} pairs")
    if found := json_problem(pairs):
        raise FormError(found[0])
    if not json_values:
        errors = validate.Violations()
        validate.check_labels(pairs, "label", errors)
        if errors.items:
            raise FormError(f"{errors.items[0].field}: {errors.items[0].description}")
    return tuple(sorted(pairs.items()))


def _json_or_text(value: str) -> Any:
    try:
        parsed = json.loads(value, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return value
    if isinstance(parsed, dict | list):
        return value
    if isinstance(parsed, float) and not math.isfinite(parsed):
        return value
    if isinstance(parsed, int) and not isinstance(parsed, bool) and abs(parsed) > 2**53:
        return value
    return parsed


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
