"""What every CLI command shares: the registry that declares each command once (its name,
help, arguments and function), the parsed-argument helpers, and `Command`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobwheel.client import convert
from jobwheel.client.cli import render
from jobwheel.client.filters import job_filter
from jobwheel.client.sync import Client
from jobwheel.v1 import job_pb2

Arguments = Callable[[argparse.ArgumentParser], None]


class UsageError(Exception):
    """Bad command-line input found after parsing: exit code 2."""


class NoSuchJob(Exception):
    """A job id prefix that matches no job: exit code 3, like NOT_FOUND."""


@dataclass(frozen=True)
class Spec:
    """One command: `jobwheel NAME` runs `run`; `arguments` adds its flags."""

    name: str
    help: str
    run: Callable[[Command], int]
    arguments: Arguments | None = None
    filters: bool = False  # takes the job filter flags


REGISTRY: dict[str, Spec] = {}


def command(
    name: str, help: str, arguments: Arguments | None = None, *, filters: bool = False
) -> Callable[[Callable[[Command], int]], Callable[[Command], int]]:
    """Declares the decorated function as the command `name` (the only place it is named)."""

    def register(fn: Callable[[Command], int]) -> Callable[[Command], int]:
        add(Spec(name, help, fn, arguments, filters))
        return fn

    return register


def add(spec: Spec) -> None:
    if spec.name in REGISTRY:
        raise ValueError(f"command {spec.name!r} is declared twice")
    REGISTRY[spec.name] = spec


# ---- argument types: a bad value is a usage error (exit 2) at parse time --------------------


def _int(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, not {value}")
        return value

    parse.__name__ = "integer"
    return parse


positive_int = _int(1, "at least 1")
count_int = _int(0, "0 or more")


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, not {text}")
    return value


# ---- helpers ------------------------------------------------------------------------------


def pairs(items: list[str] | None, what: str, json_values: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must look like KEY=VALUE, not {item!r}")
        if json_values:
            try:
                out[key] = json.loads(value)
            except (ValueError, RecursionError):
                out[key] = value
        else:
            out[key] = value
    return out


def duration(text: str | None) -> Any:
    return None if text is None else convert.parse_duration(text)


def time(text: str | None) -> Any:
    return None if text is None else convert.parse_time(text)


def _split(values: list[str] | None) -> list[str]:
    return [v for item in values or () for v in item.split(",") if v]


def filter_from(args: argparse.Namespace, ids: list[str] | None = None) -> job_pb2.JobFilter:
    return job_filter(
        ids=[*(args.filter_ids or ()), *(ids or ())],
        states=_split(args.states),
        queues=_split(args.queues),
        tasks=_split(args.tasks),
        labels=pairs(args.labels, "--label"),
        payload=pairs(args.where, "--where", json_values=True),
        created_after=time(args.created_after),
        created_before=time(args.created_before),
        next_run_after=time(args.next_run_after),
        next_run_before=time(args.next_run_before),
        ended_after=time(args.ended_after),
        ended_before=time(args.ended_before),
        recurring=args.recurring,
    )


def schedule_from(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "at": time(args.at),
        "delay": duration(args.delay),
        "cron": args.cron,
        "time_zone": args.tz,
        "every": duration(args.every),
        "limit": args.limit,
        "end_at": time(args.end_at),
        "jitter": duration(args.jitter),
    }
    return {k: v for k, v in given.items() if v is not None}


def read_payload(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.payload_file is not None:
        source = args.payload_file
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    elif args.payload is not None:
        text = sys.stdin.read() if args.payload == "-" else args.payload
    else:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise UsageError(f"the payload is not valid JSON: {err}") from None
    except RecursionError:
        raise UsageError("the payload nests too deep") from None
    if not isinstance(value, dict):
        raise UsageError("the payload must be a JSON object")
    return value


class Command:
    """The state every command shares: parsed arguments, a client and the output format."""

    def __init__(self, args: argparse.Namespace, client: Client) -> None:
        self.args = args
        self.client = client
        self.json = args.output == "json"

    def show(self, message: Any, text: Callable[[], str]) -> None:
        print(render.to_json(message) if self.json else text())

    def show_job(self, job: job_pb2.Job, response: Any = None) -> None:
        self.show(response if response is not None else job, lambda: render.job_detail(job))
