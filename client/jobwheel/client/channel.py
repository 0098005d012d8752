"""Channels to the server: plaintext or TLS (with a client certificate for mutual TLS),
carrying a bearer token on every call.

Each setting falls back to its environment variable: JOBWHEEL_TOKEN, JOBWHEEL_TLS_CA,
JOBWHEEL_TLS_CERT, JOBWHEEL_TLS_KEY. TLS is used when a CA or a client certificate is given
(or `tls=True`, which trusts the system's CAs).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True)
class Credentials:
    """How to reach a server that requires TLS or tokens. Paths are PEM files."""

    token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls: bool = False

    @classmethod
    def from_env(
        cls,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> Credentials:
        """Explicit values, else the JOBWHEEL_* environment variables."""
        env = os.environ.get
        return cls(
            token=token or env("JOBWHEEL_TOKEN") or None,
            tls_ca=tls_ca or env("JOBWHEEL_TLS_CA") or None,
            tls_cert=tls_cert or env("JOBWHEEL_TLS_CERT") or None,
            tls_key=tls_key or env("JOBWHEEL_TLS_KEY") or None,
        )

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_ca is not None or self.tls_cert is not None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a client certificate needs its key: give tls_cert and tls_key")

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.tls_ca),
            private_key=read(self.tls_key),
            certificate_chain=read(self.tls_cert),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


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


def aio_channel(address: str, credentials: Credentials | None = None) -> grpc.aio.Channel:
    """A grpc.aio channel to `address` (credentials None: from the environment)."""
    creds = credentials or Credentials.from_env()
    interceptors = [_AioBearer(creds.metadata())] if creds.token else None
    if creds.uses_tls:
        return grpc.aio.secure_channel(
            address, creds.channel_credentials(), interceptors=interceptors
        )
    return grpc.aio.insecure_channel(address, interceptors=interceptors)


def sync_channel(address: str, credentials: Credentials | None = None) -> grpc.Channel:
    """A blocking channel to `address` (credentials None: from the environment)."""
    creds = credentials or Credentials.from_env()
    if creds.uses_tls:
        channel = grpc.secure_channel(address, creds.channel_credentials())
    else:
        channel = grpc.insecure_channel(address)
    if creds.token:
        channel = grpc.intercept_channel(channel, _SyncBearer(creds.metadata()))
    return channel
