"""Handlers for the tasks the README's examples enqueue.

Run the examples against `PYTHONPATH=. make serve ARGS="--handlers tests.acceptance.readme_tasks"`
and their jobs complete; without a handler, they wait QUEUED for a remote worker.
"""

from __future__ import annotations

from typing import Any

from jobwheel.server import task


@task("send_email")
async def send_email(payload: dict[str, Any]) -> dict[str, Any]:
    return {"sent_to": payload.get("to")}


@task("send_report")
async def send_report(payload: dict[str, Any]) -> str:
    return "report sent"


@task("daily_digest")
async def daily_digest(payload: dict[str, Any]) -> str:
    return "digest sent"
