"""JobService RPCs about event subscriptions (a part of JobService, kept apart for size)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from jobwheel.server import model
from jobwheel.server.api import validate
from jobwheel.server.api.convert import EVENT_TYPE_TO_PROTO, timestamp
from jobwheel.server.api.errors import NotFound, ResourceExhausted
from jobwheel.server.core import Core
from jobwheel.server.execution.signing import Signer
from jobwheel.server.ids import new_id
from jobwheel.server.security import principal as access
from jobwheel.v1 import job_service_pb2 as pb

_EVENT_TYPE_FROM_PROTO = {v: k for k, v in EVENT_TYPE_TO_PROTO.items()}
MAX_SECRET = 1024
MAX_EVENT_TYPES = 100
# Every event is delivered once per subscription: the fan-out, and ListEventSubscriptions'
# reply, stay bounded.
MAX_SUBSCRIPTIONS = 100


def _to_proto(sub: model.EventSubscription) -> pb.EventSubscription:
    return pb.EventSubscription(
        id=sub.id,
        url=sub.url,
        event_types=sorted(EVENT_TYPE_TO_PROTO[t] for t in sub.event_types),
        create_time=timestamp(sub.create_time),
    )


class SubscriptionRpcs:
    core: Core

    async def CreateEventSubscription(
        self, request: pb.CreateEventSubscriptionRequest, context: Any
    ) -> Any:
        access.check_unscoped("event subscriptions (they see every queue)")
        errors = validate.Violations()
        validate.check_http_url(request.url, "url", errors)
        types = set()
        if len(request.event_types) > MAX_EVENT_TYPES:
            errors.add("event_types", f"at most {MAX_EVENT_TYPES} values")
            errors.raise_if_any()
        for i, t in enumerate(request.event_types):
            if t not in _EVENT_TYPE_FROM_PROTO:
                errors.add(f"event_types[{i}]", f"not an event type that is delivered: {t}")
            else:
                types.add(_EVENT_TYPE_FROM_PROTO[t])
        if not request.event_types:
            errors.add("event_types", "at least one is required")
        if len(request.secret) > MAX_SECRET or not _good_secret(request.secret):
            errors.add("secret", 'must be "whsec_" followed by at least 16 bytes in base64')
        errors.raise_if_any()
        sub = model.EventSubscription(
            id=new_id(),
            url=request.url,
            event_types=frozenset(types),
            secret=request.secret,
            create_time=self.core.clock.now(),
        )
        if not await self.core.store.add_subscription(sub, MAX_SUBSCRIPTIONS):
            raise ResourceExhausted(
                f"there are {MAX_SUBSCRIPTIONS} event subscriptions already, the most a server "
                "keeps: delete one first",
                "TOO_MANY_SUBSCRIPTIONS",
                limit=str(MAX_SUBSCRIPTIONS),
            )
        await self.core.subscriptions_changed()
        return pb.CreateEventSubscriptionResponse(subscription=_to_proto(sub))

    async def ListEventSubscriptions(
        self, request: pb.ListEventSubscriptionsRequest, context: Any
    ) -> Any:
        access.check_unscoped("event subscriptions (they see every queue)")
        subs = await self.core.store.subscriptions()
        return pb.ListEventSubscriptionsResponse(subscriptions=[_to_proto(s) for s in subs])

    async def DeleteEventSubscription(
        self, request: pb.DeleteEventSubscriptionRequest, context: Any
    ) -> Any:
        access.check_unscoped("event subscriptions (they see every queue)")
        errors = validate.Violations()
        validate.check_id(request.id, "id", errors)
        errors.raise_if_any()
        if not await self.core.store.delete_subscription(request.id):
            raise NotFound("event subscription", request.id)
        await self.core.subscriptions_changed()
        return pb.DeleteEventSubscriptionResponse()


def _good_secret(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        Signer([secret])
        return len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 16
    except (ValueError, binascii.Error):
        return False
