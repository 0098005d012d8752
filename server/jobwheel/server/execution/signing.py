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


SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)  # what the Standard Webhooks specification asks of a secret


def secret_problem(secret: str) -> str:
    """What is wrong with a signing secret ("" if nothing): whsec_ and 24..64 bytes, base64."""
    if not secret.startswith(SECRET_PREFIX):
        return f'must start with "{SECRET_PREFIX}"'
    try:
        key = binascii.a2b_base64(secret.removeprefix(SECRET_PREFIX), strict_mode=True)
    except binascii.Error:
        return f'must be "{SECRET_PREFIX}" followed by base64'
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        return f"must hold {low} to {high} bytes (in base64), holds {len(key)}"
    return ""
