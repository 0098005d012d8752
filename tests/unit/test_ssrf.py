"""SSRF guard: which addresses a webhook may reach, and that the checked one is used."""

from __future__ import annotations

from ipaddress import ip_address

import httpcore
import pytest
from jobwheel.server.execution.ssrf import (
    AddressPolicy,
    GuardedBackend,
    SsrfBlocked,
    resolve_permitted,
    system_resolve,
)

DEFAULT = AddressPolicy()
LOCAL = AddressPolicy.from_cidrs(["127.0.0.0/8", "::1/128"])

# (address, permitted by the default policy)
TABLE = [
    # public unicast
    ("8.8.8.8", True),
    ("1.1.1.1", True),
    ("2606:4700:4700::1111", True),
    ("2001:4860:4860::8888", True),
    # loopback
    ("127.0.0.1", False),
    ("127.255.255.254", False),
    ("::1", False),
    # private (RFC 1918) and ULA
    ("10.0.0.1", False),
    ("10.255.255.255", False),
    ("172.16.0.1", False),
    ("172.31.255.255", False),
    ("192.168.1.1", False),
    ("fc00::1", False),
    ("fd12:3456:789a::1", False),
    # just outside the private ranges
    ("172.15.255.255", True),
    ("172.32.0.1", True),
    # link-local, cloud metadata
    ("169.254.0.1", False),
    ("169.254.169.254", False),
    ("fe80::1", False),
    ("fe80::1%1", False),
    ("fec0::1", False),  # deprecated site-local
    # carrier-grade NAT
    ("100.64.0.1", False),
    ("100.127.255.255", False),
    # unspecified, "this network", broadcast, reserved
    ("0.0.0.0", False),
    ("0.1.2.3", False),
    ("::", False),
    ("255.255.255.255", False),
    ("240.0.0.1", False),
    # multicast (is_global alone would let these through)
    ("224.0.0.1", False),
    ("239.255.255.250", False),
    ("ff02::1", False),
    ("ff0e::1", False),
    # documentation and benchmarking
    ("192.0.2.1", False),
    ("198.51.100.1", False),
    ("203.0.113.1", False),
    ("198.18.0.1", False),
    ("2001:db8::1", False),
    # IPv4-mapped IPv6: judged by the embedded address
    ("::ffff:127.0.0.1", False),
    ("::ffff:10.0.0.1", False),
    ("::ffff:169.254.169.254", False),
    ("::ffff:8.8.8.8", True),
    # IPv4-compatible (deprecated, inside reserved ::/8)
    ("::127.0.0.1", False),
    ("::8.8.8.8", False),
    # NAT64 well-known prefix: judged by the embedded address
    ("64:ff9b::127.0.0.1", False),
    ("64:ff9b::10.0.0.1", False),
    ("64:ff9b::8.8.8.8", True),
    ("64:ff9b:1::1", False),  # local-use NAT64
    # 6to4: the embedded IPv4 must be permitted too
    ("2002:7f00:1::1", False),
    ("2002:a00:1::1", False),
    ("2002:808:808::1", True),
    # Teredo
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
    ("2001::1", False),
]


@pytest.mark.parametrize(("address", "permitted"), TABLE)
def test_default_policy(address: str, permitted: bool) -> None:
    assert DEFAULT.permits(ip_address(address)) is permitted


# (address, permitted with 127.0.0.0/8 and ::1 allowed)
ALLOWED = [
    ("127.0.0.1", True),
    ("127.1.2.3", True),
    ("::1", True),
    ("::ffff:127.0.0.1", True),
    ("64:ff9b::127.0.0.1", True),
    ("2002:7f00:1::1", True),
    ("8.8.8.8", True),
    ("10.0.0.1", False),
    ("169.254.169.254", False),
    ("::2", False),
    ("::ffff:10.0.0.1", False),
]


@pytest.mark.parametrize(("address", "permitted"), ALLOWED)
def test_allowlist(address: str, permitted: bool) -> None:
    assert LOCAL.permits(ip_address(address)) is permitted


def test_allowlist_rejects_malformed_networks() -> None:
    with pytest.raises(ValueError):
        AddressPolicy.from_cidrs(["10.0.0.1/8"])  # host bits set: most likely a typo
    with pytest.raises(ValueError):
        AddressPolicy.from_cidrs(["not-a-network"])


async def test_localhost_resolves_to_loopback_and_is_blocked() -> None:
    with pytest.raises(SsrfBlocked, match=r"^localhost resolves to a disallowed address "):
        await resolve_permitted("localhost", 80, DEFAULT)
    assert await resolve_permitted("localhost", 80, LOCAL)


async def test_literal_addresses_are_checked_too() -> None:
    for literal in ("127.0.0.1", "::1", "2130706433", "0x7f.1"):  # the last two are 127.0.0.1
        with pytest.raises(SsrfBlocked):
            await resolve_permitted(literal, 80, DEFAULT)


async def test_only_permitted_addresses_are_kept_in_order() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["10.0.0.1", "8.8.4.4", "169.254.169.254", "8.8.8.8"]

    assert await resolve_permitted("mixed.test", 443, DEFAULT, resolver) == ["8.8.4.4", "8.8.8.8"]


async def test_blocked_error_names_host_and_address() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["169.254.169.254", "10.1.2.3"]

    with pytest.raises(SsrfBlocked) as info:
        await resolve_permitted("metadata.test", 80, DEFAULT, resolver)
    assert str(info.value) == "metadata.test resolves to a disallowed address 169.254.169.254"
    assert (info.value.host, info.value.address) == ("metadata.test", "169.254.169.254")


class RecordingBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []

    async def connect_tcp(
        self, host: str, port: int, *args: object, **kwargs: object
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        if host == "8.8.4.4":
            raise httpcore.ConnectError("refused")
        return httpcore.AsyncMockStream([])


async def test_backend_resolves_once_and_connects_to_the_checked_address() -> None:
    answers = [["8.8.4.4", "10.0.0.1", "8.8.8.8"], ["127.0.0.1"]]  # a rebinding resolver

    async def resolver(host: str, port: int) -> list[str]:
        return answers.pop(0)

    inner = RecordingBackend()
    backend = GuardedBackend(DEFAULT, resolver, inner)
    await backend.connect_tcp("rebind.test", 443)
    # the first permitted address refused, the refused one skipped, the next one used
    assert inner.connected == [("8.8.4.4", 443), ("8.8.8.8", 443)]
    assert answers == [["127.0.0.1"]]  # one lookup per connection


async def test_backend_reports_blocked_and_unresolvable_hosts() -> None:
    inner = RecordingBackend()
    backend = GuardedBackend(DEFAULT, system_resolve, inner)
    with pytest.raises(SsrfBlocked):
        await backend.connect_tcp("localhost", 80)
    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        await backend.connect_tcp("does-not-exist.invalid", 80)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_unix_socket("/var/run/docker.sock")
    assert inner.connected == []
