"""How to reach a server: the one place that turns connection options into a gRPC channel.

Both clients, the worker SDK and the CLI open their channels here, so an option of the
connection itself is added in one place. The options: the address, a bearer token sent on
every call, and TLS (a CA to trust, a client certificate and key for mutual TLS). Each falls
back to its environment variable when `Connection.of` is not given it: JOBWHEEL_SERVER,
JOBWHEEL_TOKEN, JOBWHEEL_TLS_CA, JOBWHEEL_TLS_CERT, JOBWHEEL_TLS_KEY.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

DEFAULT_PORT = 50051
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
ENV_SERVER = "JOBWHEEL_SERVER"
ENV_TOKEN = "JOBWHEEL_TOKEN"
ENV_TLS_CA = "JOBWHEEL_TLS_CA"
ENV_TLS_CERT = "JOBWHEEL_TLS_CERT"
ENV_TLS_KEY = "JOBWHEEL_TLS_KEY"

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
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{raw!r}: the port must be from 1 to 65535")
    return raw


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to talk to it. Build it with `Connection.of`.

    `token` is sent as `authorization: Bearer <token>` on every call. TLS is used when
    `tls_ca` (PEM file of the CA that signed the server's certificate) or `tls_cert` is
    given, or `tls` is True (trust the system's CAs). `tls_cert` and `tls_key` (PEM files)
    are the client certificate for mutual TLS and go together.
    """

    address: str
    token: str | None = field(default=None, repr=False)  # kept out of logs and tracebacks
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls: bool = False

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a client certificate needs its key: give both tls_cert and tls_key")
        if self.token is not None and not (self.token.isascii() and self.token.isprintable()):
            # a header value is printable ASCII: gRPC refused the call as INTERNAL instead
            raise ValueError("the token holds characters a header cannot carry")

    @classmethod
    def of(
        cls,
        target: str | Connection | None = None,
        *,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Connection:
        """A Connection given as is, else one from these options, each missing one taken
        from its JOBWHEEL_* variable (`env`, default os.environ). Raises ValueError for an
        address that is not HOST:PORT, a certificate without its key (or the reverse), or a
        token holding other than printable ASCII (the whitespace around one, as a file read
        into a variable leaves it, is dropped)."""
        if isinstance(target, Connection):
            return target
        env = os.environ if env is None else env
        return cls(
            server_address(target or env.get(ENV_SERVER) or DEFAULT_SERVER),
            token=(token or env.get(ENV_TOKEN) or "").strip() or None,
            tls_ca=tls_ca or env.get(ENV_TLS_CA) or None,
            tls_cert=tls_cert or env.get(ENV_TLS_CERT) or None,
            tls_key=tls_key or env.get(ENV_TLS_KEY) or None,
            tls=tls,
        )

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_ca is not None or self.tls_cert is not None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials from the PEM files (read now; OSError when one cannot be read)."""

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.tls_ca),
            private_key=read(self.tls_key),
            certificate_chain=read(self.tls_cert),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self) -> grpc.Channel:
        """A blocking channel (grpc); reads the TLS files now."""
        if self.uses_tls:
            channel = grpc.secure_channel(self.address, self.channel_credentials())
        else:
            channel = grpc.insecure_channel(self.address)
        if self.token:
            channel = grpc.intercept_channel(channel, _SyncBearer(self.metadata()))
        return channel

    def aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel (grpc.aio); reads the TLS files now."""
        # an interceptor rather than call credentials: gRPC sends those over TLS only, and a
        # token is also useful to a server on a loopback address without TLS
        interceptors = [_AioBearer(self.metadata())] if self.token else None
        if self.uses_tls:
            return grpc.aio.secure_channel(
                self.address, self.channel_credentials(), interceptors=interceptors
            )
        return grpc.aio.insecure_channel(self.address, interceptors=interceptors)


def _with_token(metadata: Any, extra: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [*(tuple(item) for item in (metadata or ())), *extra]


class _AioBearer(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, extra: tuple[tuple[str, str], ...]) -> None:
        self.extra = extra

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*_with_token(details.metadata, self.extra))
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(details), request)


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


class _SyncBearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, extra: tuple[tuple[str, str], ...]) -> None:
        self.extra = extra

    def _details(self, d: Any) -> _Details:
        return _Details(
            d.method,
            d.timeout,
            _with_token(d.metadata, self.extra),
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)
