"""Event subscriptions: job events POSTed to subscribers' URLs, signed, with retries.

The event log is durable, so deliveries are made from it: a loop reads the events after the
delivery cursor, creates one delivery job per (subscription, event) with the idempotency key
"evt:<subscription>:<revision>", then advances the cursor (compare-and-set). A crash between
the two only repeats creations that the key turns into no-ops, and replicas racing each other
do the same. Each delivery job (queue "jobwheel.events") is run by the handler below and
retried like any job until the subscriber accepts it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from jobwheel.server import failures, model
from jobwheel.server.clock import Clock
from jobwheel.server.engine_storage import EngineStore
from jobwheel.server.execution.signing import Signer
from jobwheel.server.execution.webhook import WebhookExecutor
from jobwheel.server.ids import new_id
from jobwheel.server.model import AttemptOutcome

log = logging.getLogger(__name__)
DELIVERY_QUEUE = "jobwheel.events"
DELIVERY_TASK = "jobwheel.deliver_event"
BATCH = 500
# Deliveries back off up to half an hour and give up after about a day.
DELIVERY_RETRY = model.RetryPolicy(
    max_attempts=50,
    initial_backoff=1 * model.SECOND,
    max_backoff=1800 * model.SECOND,
    multiplier=2.0,
    jitter=0.2,
)


# An event as the JSON document POSTed to subscribers (api/convert.py's event_document).
EventRenderer = Callable[[model.Event], dict[str, Any]]


class DeliveryFailed(failures.Reported):
    """The subscriber did not accept the event; the error says why. The delivery job retries,
    no sooner than the subscriber's Retry-After (429, 503), and not at all after a 410
    (the endpoint is gone for good)."""


class EventDeliveries:
    def __init__(
        self, store: EngineStore, clock: Clock, webhooks: WebhookExecutor, render: EventRenderer
    ) -> None:
        self.render = render
        self.store = store
        self.clock = clock
        self.webhooks = webhooks
        self.subscriptions: dict[str, model.EventSubscription] = {}
        self._wake = asyncio.Event()

    def wake(self, event: model.Event) -> None:
        if self.subscriptions and event.job.queue != DELIVERY_QUEUE:
            self._wake.set()

    async def refresh(self) -> None:
        self.subscriptions = {s.id: s for s in await self.store.subscriptions()}
        self._wake.set()

    async def run(self) -> None:
        while True:
            with_more = False
            try:
                with_more = await self._hand_over()
            except Exception:
                log.exception("creating event deliveries failed; retrying")
            if not with_more:
                self._wake.clear()
                try:
                    async with asyncio.timeout(1.0):  # also picks up other replicas' events
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _hand_over(self) -> bool:
        """One batch of events after the cursor becomes deliveries; True if more remain."""
        cursor, head = await self.store.delivery_cursor()
        if cursor >= head:
            return False
        if not self.subscriptions:
            await self.store.advance_delivery_cursor(cursor, head)
            return False
        events = await self.store.read_events(cursor, BATCH)
        now = self.clock.now()
        deliveries = [
            self._delivery(sub, event, now)
            for event in events
            if event.job.queue != DELIVERY_QUEUE
            for sub in self.subscriptions.values()
            if event.type in sub.event_types and event.revision > sub.from_revision
        ]
        if deliveries:
            await self.store.insert_jobs(deliveries)
        last = events[-1].revision if events else head
        await self.store.advance_delivery_cursor(cursor, last)
        return last < head

    def _delivery(
        self, sub: model.EventSubscription, event: model.Event, now: model.Micros
    ) -> model.NewJob:
        return model.NewJob(
            id=new_id(),
            queue=DELIVERY_QUEUE,
            task=DELIVERY_TASK,
            payload={
                "subscription": sub.id,
                "message_id": f"{sub.id}:{event.revision}",
                "event": self.render(event),
            },
            labels={"jobwheel.subscription": sub.id},
            priority=0,
            state=model.JobState.QUEUED,
            schedule=None,
            retry_policy=DELIVERY_RETRY,
            timeout=30 * model.SECOND,
            idempotency_key=f"evt:{sub.id}:{event.revision}",
            http=None,
            create_time=now,
            next_run_time=now,
        )

    async def deliver(self, payload: dict[str, Any]) -> dict[str, str]:
        """The handler of delivery jobs: one signed POST to the subscriber."""
        sub = self.subscriptions.get(payload["subscription"])
        if sub is None:
            await self.refresh()
            sub = self.subscriptions.get(payload["subscription"])
        if sub is None:
            return {"status": "dropped: the subscription was deleted"}
        body = json.dumps(payload["event"], separators=(",", ":"))
        result = await self.webhooks.send(
            model.HttpTarget(url=sub.url),
            payload["message_id"],
            body,
            None,
            Signer([sub.secret]),
            keep_result=False,  # a subscriber's reply is not kept
        )
        if result.outcome is not AttemptOutcome.SUCCEEDED:
            raise DeliveryFailed(
                result.error, retryable=result.retryable, retry_after=result.retry_after
            )
        return {"status": "delivered"}
