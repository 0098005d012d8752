"""The server's security flags (each also a JOBWHEEL_* variable) and the start-up rules."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass


class SecurityConfigError(OSError):
    """Start-up refused: the security set-up is unsafe or unreadable (one line says why)."""


@dataclass(frozen=True)
class SecuritySettings:
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_tokens: str | None = None
    auth_jwks: str | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwt_role_claim: str = "role"
    auth_jwt_queues_claim: str = "queues"
    auth_reflection: bool = False
    insecure: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def tokens(self) -> bool:
        return self.auth_tokens is not None or self.auth_jwks is not None

    @property
    def authenticates(self) -> bool:
        """Callers are identified: by a token, or by a client certificate (mutual TLS)."""
        return self.tokens or self.tls_client_ca is not None


TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


def _flag(env: Mapping[str, str], name: str, parser: argparse.ArgumentParser) -> bool:
    """A boolean variable; any other value stops the start (a typo must not turn it off)."""
    value = env.get(name, "").strip().lower()
    if value not in TRUE + FALSE:
        parser.error(f"{name} must be true or false (or 1/0, yes/no, on/off), got {value!r}")
    return value in TRUE


# (flag, metavar, help): each a path or name; its variable is JOBWHEEL_ and the flag in capitals
_VALUES = (
    ("--tls-cert", "PEM", "serve TLS with this certificate chain; re-read on SIGHUP"),
    ("--tls-key", "PEM", "the private key of --tls-cert"),
    (
        "--tls-client-ca",
        "PEM",
        "require client certificates issued by these CAs (mutual TLS); the certificate "
        "subject names the caller",
    ),
    (
        "--auth-tokens",
        "FILE",
        "require bearer tokens listed (as SHA-256 hashes) in this TOML file, re-read when it "
        "changes; add one with `jobwheel-server token create`",
    ),
    ("--auth-jwks", "FILE|URL", "also accept JWTs signed by a key of this JWKS"),
    ("--auth-jwt-issuer", "ISS", "the issuer (iss) JWTs must carry"),
    ("--auth-jwt-audience", "AUD", "the audience (aud) JWTs must carry"),
    ("--auth-jwt-role-claim", "NAME", "the JWT claim that holds the role (default: role)"),
    (
        "--auth-jwt-queues-claim",
        "NAME",
        "the JWT claim that holds the queue scope (default: queues)",
    ),
)
MAX_CLAIM_NAME = 256
# (flag, help): switches, also true when their variable is
_SWITCHES = (
    ("--auth-reflection", "server reflection needs a valid token too"),
    (
        "--insecure",
        "allow a non-loopback --listen (or --http-listen) without TLS and authentication",
    ),
)


def _variable(flag: str) -> str:
    return "JOBWHEEL_" + flag.removeprefix("--").replace("-", "_").upper()


def add_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    g = parser.add_argument_group("security (see the README's Security section)")
    for flag, metavar, text in _VALUES:
        var = _variable(flag)
        g.add_argument(flag, default=env.get(var), metavar=metavar, help=f"{text} ({var})")
    for flag, text in _SWITCHES:
        var = _variable(flag)
        g.add_argument(
            flag, action="store_true", default=_flag(env, var, parser), help=f"{text} ({var})"
        )


def from_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SecuritySettings:
    s = SecuritySettings(
        tls_cert=args.tls_cert or None,
        tls_key=args.tls_key or None,
        tls_client_ca=args.tls_client_ca or None,
        auth_tokens=args.auth_tokens or None,
        auth_jwks=args.auth_jwks or None,
        auth_jwt_issuer=args.auth_jwt_issuer or None,
        auth_jwt_audience=args.auth_jwt_audience or None,
        auth_jwt_role_claim=args.auth_jwt_role_claim or "role",
        auth_jwt_queues_claim=args.auth_jwt_queues_claim or "queues",
        auth_reflection=args.auth_reflection,
        insecure=args.insecure,
    )
    if (s.tls_cert is None) != (s.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if s.tls_client_ca is not None and s.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if s.auth_jwks is not None and not (s.auth_jwt_issuer and s.auth_jwt_audience):
        parser.error("--auth-jwks needs --auth-jwt-issuer and --auth-jwt-audience")
    for flag, claim in (
        ("--auth-jwt-role-claim", s.auth_jwt_role_claim),
        ("--auth-jwt-queues-claim", s.auth_jwt_queues_claim),
    ):
        if len(claim) > MAX_CLAIM_NAME or not claim.isprintable():
            parser.error(f"{flag} must be 1-{MAX_CLAIM_NAME} printable characters")
    if s.auth_jwt_role_claim == s.auth_jwt_queues_claim:
        parser.error("--auth-jwt-role-claim and --auth-jwt-queues-claim must differ")
    return s


def is_loopback(listen: str) -> bool:
    """True when HOST of HOST:PORT only accepts connections from this machine."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, or an empty/wildcard host: every interface


def check_exposure(listen: str, s: SecuritySettings) -> None:
    """Refuses a listener reachable from other machines without TLS and authentication."""
    if is_loopback(listen) or s.insecure or (s.tls and s.authenticates):
        return
    missing = " and ".join(
        what for what, ok in (("TLS", s.tls), ("authentication", s.authenticates)) if not ok
    )
    raise SecurityConfigError(
        f"refusing to listen on {listen} without {missing}: anyone who reaches the port could "
        "change every job. Add --tls-cert/--tls-key and --auth-tokens (or --tls-client-ca), "
        "or pass --insecure"
    )
