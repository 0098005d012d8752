"""How to reach a server: the one place that turns connection options into a gRPC channel.

Both clients, the worker SDK and the CLI open their channels here, so an option of the
connection itself (the address today; credentials would join it) is added in one place.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import grpc

DEFAULT_PORT = 50051
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
ENV_SERVER = "JOBWHEEL_SERVER"

_URL = re.compile(r"^(https?)://", re.I)
# gRPC target forms that carry their own scheme (dns:///host:port, unix:/path, ipv4:...)
_TARGET_SCHEME = re.compile(r"^(dns|unix|unix-abstract|ipv4|ipv6|vsock|xds):", re.I)


def server_address(address: str | None = None) -> str:
    """The explicit address, else $JOBWHEEL_SERVER, else 127.0.0.1:50051, as HOST:PORT.

    A host without a port gets the default port (50051), not gRPC's own default (443).
    Raises ValueError for an `http://` or `https://` URL: gRPC addresses have no scheme.
    """
    raw = (address or os.environ.get(ENV_SERVER) or DEFAULT_SERVER).strip()
    if _URL.match(raw):
        bare = _URL.sub("", raw).rstrip("/")
        raise ValueError(
            f"{raw!r} is a URL; the server address is HOST:PORT without a scheme (try {bare!r})"
        )
    if _TARGET_SCHEME.match(raw):
        return raw
    if raw.startswith("["):  # [IPv6] or [IPv6]:port
        return raw if "]:" in raw else f"{raw}:{DEFAULT_PORT}"
    if raw.count(":") > 1:  # a bare IPv6 address has no room for a port
        return f"[{raw}]:{DEFAULT_PORT}"
    host, sep, port = raw.rpartition(":")
    if not sep:
        return f"{raw}:{DEFAULT_PORT}"
    if not port.isdigit() or not host:
        raise ValueError(f"{raw!r} is not HOST:PORT (the port must be a number)")
    return raw


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to talk to it. Build it with `Connection.of`."""

    address: str

    @classmethod
    def of(cls, target: str | Connection | None = None) -> Connection:
        if isinstance(target, Connection):
            return target
        return cls(server_address(target))

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def aio_channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)
