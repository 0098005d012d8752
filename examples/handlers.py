"""In-process handlers for the README's first try-out.

    make serve ARGS="--handlers examples.handlers"

Each `@task` function runs in the server when a job of its task is due; what it returns
becomes the job's result, an exception fails the attempt (and the retry policy decides).
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
def daily_digest(payload: dict[str, Any]) -> str:  # plain functions run in a thread pool
    return "digest sent"
