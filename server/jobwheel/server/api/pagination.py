"""Opaque page tokens for keyset pagination.

A token holds the last row's order key and a digest of the request it belongs to, so a
token replayed with another filter or order is refused instead of silently skipping rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from google.protobuf.message import Message
from jobwheel.server.api.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Tokens this server makes are about 50 characters; a longer one is not ours.
MAX_TOKEN = 256
_MAX_KEY = 2**63 - 1  # keys are BIGINT on both backends
MAX_NAME = 128  # queue names (api/validate.py NAME_RE): their tokens fit in MAX_TOKEN


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or default, MAX_PAGE_SIZE)


def _digest(*scope: Message | int | str) -> str:
    h = hashlib.sha256()
    for part in scope:
        data = (
            part.SerializeToString(deterministic=True)
            if isinstance(part, Message)
            else str(part).encode()
        )
        h.update(len(data).to_bytes(4, "big") + data)
    return h.hexdigest()[:16]


def encode_token(last_key: int | str, *scope: Message | int | str) -> str:
    data = {"k": last_key, "s": _digest(*scope)}
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _malformed() -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", "malformed page token")])


def _decode(token: str, scope: tuple[Message | int | str, ...], max_token: int) -> object:
    if len(token) > max_token:
        raise _malformed()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        key, digest = data["k"], data["s"]
    except (binascii.Error, ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        raise _malformed() from exc
    if digest != _digest(*scope):
        raise InvalidArgument(
            [FieldViolation("page_token", "belongs to a request with another filter or order")]
        )
    return key


def decode_token(token: str, *scope: Message | int | str) -> int | None:
    """The key after which the next page starts; None for an empty token."""
    if not token:
        return None
    key = _decode(token, scope, MAX_TOKEN)
    if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key <= _MAX_KEY:
        raise _malformed()
    return key


def decode_text_token(
    token: str, *scope: Message | int | str, max_chars: int = MAX_NAME, max_token: int = MAX_TOKEN
) -> str | None:
    """The text key (at most `max_chars` characters, in a token of at most `max_token`)
    after which the next page of a list ordered by text starts; None for an empty token."""
    if not token:
        return None
    key = _decode(token, scope, max_token)
    if not isinstance(key, str) or not 0 < len(key) <= max_chars:
        raise _malformed()
    return key
