"""Protobuf wire format, the little of it that building a reply as bytes needs: messages made
of a shared serialized part and a few fields of their own cost a fraction of setting those
fields on message objects; the bytes go out as they are (api/encoded_reply.py), or one parse
(in C) turns them back into a message."""

from __future__ import annotations


def _encoded(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# the lengths in a reply, mostly below 4,096 (one or two bytes), encoded once (~170 KB)
_SMALL = [_encoded(n) for n in range(4096)]


def varint(n: int) -> bytes:
    """`n` (>= 0) as a base-128 varint."""
    return _SMALL[n] if n < 4096 else _encoded(n)


def tag(number: int) -> bytes:
    """The key of length-delimited field `number` (strings, bytes, messages)."""
    return varint(number << 3 | 2)


def field(key: bytes, body: bytes) -> bytes:
    """A length-delimited field: `key` (see tag), the length of `body`, `body`."""
    return key + varint(len(body)) + body


def string_map_entry(key: str, value: str) -> bytes:
    """The body of a map<string, string> entry as the protobuf runtime writes it (both
    fields, even when empty)."""
    return field(_MAP_KEY, key.encode()) + field(_MAP_VALUE, value.encode())


_MAP_KEY = tag(1)
_MAP_VALUE = tag(2)
