"""Unary replies that a servicer hands over already encoded.

A reply built as bytes (api/convert.py CreatedJobs) would otherwise be parsed into a message
only for grpc to serialize it again (~0.6 ms for a 1,000-job BatchEnqueueJobs reply). A
method marked with `encoded_replies` may return an `EncodedReply`, which its response
serializer (built by api/rpc_stack.py) passes through; it may still return messages, which
serialize as usual. Every other method keeps the serializer the generated code gave it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

_MARK = "_jobwheel_encoded_replies"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class EncodedReply:
    """A reply of type `message`, encoded (`data`, the bytes sent as they are). `ids` are the
    job ids its `results` name, in order: what the audit line reads instead of the reply."""

    message: type[Message]
    data: bytes
    ids: Sequence[str]


def encoded_replies(method: F) -> F:
    """Marks a unary servicer method as one that may return an EncodedReply."""
    setattr(method, _MARK, True)
    return method


def returns_encoded(handler: grpc.RpcMethodHandler) -> bool:
    """Whether `handler` is a unary-unary method marked with `encoded_replies`."""
    behavior = handler.unary_unary
    return behavior is not None and bool(getattr(behavior, _MARK, False))


def passing_serializer(serializer: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """`serializer`, except that an EncodedReply gives its bytes as they are."""

    def serialize(reply: Any) -> bytes:
        return reply.data if type(reply) is EncodedReply else serializer(reply)

    return serialize
