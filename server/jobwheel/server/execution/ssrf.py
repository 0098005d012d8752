"""SSRF guard: a webhook may only reach addresses the policy permits.

The check sits where the connection is made. The network backend resolves the host once, drops
refused addresses and connects to a checked one, so no second DNS answer (rebinding) can move
the request elsewhere. The URL keeps its hostname: the Host header, the connection pool key,
SNI and the certificate check all still use it, since httpcore starts TLS with the origin's
host rather than the address it connected to.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import httpcore
import httpx
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
# (host, port) -> the addresses to try, in order, as strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Well-known NAT64 prefix (RFC 6052): the last 32 bits are the IPv4 host really reached.
_NAT64 = IPv6Network("64:ff9b::/96")
# No cap on connections in all: queue concurrency bounds the requests in flight, and a cap
# shared by every target let a slow receiver hold up the others' jobs (which then timed out
# waiting for a connection). Idle connections kept for reuse stay few.
_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20)


class SsrfBlocked(Exception):
    """Every address the host resolves to is refused by the policy."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to a disallowed address {address}")
        self.host = host
        self.address = address


def _public(address: IPAddress) -> bool:
    # is_global alone lets through multicast, site-local and parts of ::/8 (e.g. ::7f00:1).
    if not address.is_global:
        return False
    if isinstance(address, IPv6Address) and address.is_site_local:
        return False
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Only globally routable unicast addresses, plus the networks in `allow`."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> AddressPolicy:
        """Raises ValueError on a malformed network, or one with host bits set."""
        return cls(tuple(ip_network(cidr) for cidr in cidrs))

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # the socket reaches the IPv4 host itself
        if any(address in network for network in self.allow):
            return True
        if isinstance(address, IPv6Address):
            if address in _NAT64:
                return self.permits(IPv4Address(int(address) & 0xFFFFFFFF))
            if address.teredo is not None:
                return False
            if address.sixtofour is not None and not self.permits(address.sixtofour):
                return False
        return _public(address)


async def system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_permitted(
    host: str, port: int, policy: AddressPolicy, resolver: Resolver = system_resolve
) -> list[str]:
    """The host's permitted addresses in resolver order; SsrfBlocked if there are none."""
    addresses = await resolver(host, port)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    permitted = [a for a in addresses if policy.permits(ip_address(a))]
    if not permitted:
        raise SsrfBlocked(host, addresses[0])
    return permitted


class GuardedBackend(AsyncNetworkBackend):
    """Connects only to addresses the policy permits, trying each permitted one in turn."""

    def __init__(
        self,
        policy: AddressPolicy,
        resolver: Resolver = system_resolve,
        inner: AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        try:
            addresses = await resolve_permitted(host, port, self.policy, self._resolver)
        except OSError as exc:  # includes socket.gaierror; httpx reports it as ConnectError
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable through the SSRF guard")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose every connection goes through `GuardedBackend`.

    Proxies from the environment are ignored: through a proxy the guard would check the
    proxy's address instead of the target's.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver = system_resolve,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = _LIMITS,
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        # httpx has no public hook for the network backend, so the pool it built (never
        # opened) is replaced by one with the same settings and the guarded backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )


def guarded_client(
    policy: AddressPolicy,
    *,
    resolver: Resolver = system_resolve,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """A client that never follows redirects and connects only where the policy permits."""
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, resolver=resolver, verify=verify),
        follow_redirects=False,
        trust_env=False,
    )
