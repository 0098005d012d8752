"""Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature)."""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from datetime import UTC, datetime

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook


class Signer:
    """Signs with every configured secret, so receivers can rotate without a gap."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._webhooks: list[Webhook] = []
        for index, secret in enumerate(secrets):
            try:
                self._webhooks.append(Webhook(secret))
            except (EmptyWebhookSecretError, binascii.Error, ValueError) as exc:
                # The secret itself stays out of the message: it ends up in logs.
                raise ValueError(
                    f"webhook secret #{index + 1} is empty or not valid base64"
                ) from exc

    @property
    def enabled(self) -> bool:
        return bool(self._webhooks)

    def headers(self, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
        """The spec's headers for `body`; no webhook-signature when no secret is configured."""
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
        if self._webhooks:
            when = datetime.fromtimestamp(timestamp, tz=UTC)
            headers["webhook-signature"] = " ".join(
                webhook.sign(msg_id, when, body) for webhook in self._webhooks
            )
        return headers
