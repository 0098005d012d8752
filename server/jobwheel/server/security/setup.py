"""What the composition root needs: the gate of every call, the listening port, and reload()."""

from __future__ import annotations

import logging

import grpc
from jobwheel.server.security.interceptor import Authenticator, Gate
from jobwheel.server.security.jwt_auth import JwtError
from jobwheel.server.security.settings import SecurityConfigError, SecuritySettings, check_exposure
from jobwheel.server.security.tls import ServerTls
from jobwheel.server.security.tokens import TokensFileError

log = logging.getLogger("jobwheel.server")


class ServerSecurity:
    """Built before the server: refuses an unsafe or unreadable set-up (SecurityConfigError)."""

    def __init__(self, listen: str, settings: SecuritySettings) -> None:
        check_exposure(listen, settings)
        self.settings = settings
        try:
            self.authenticator = Authenticator(settings)
        except (TokensFileError, JwtError, OSError) as exc:
            raise SecurityConfigError(str(exc)) from None
        self.tls = ServerTls(settings) if settings.tls else None
        self.gate = Gate(
            self.authenticator,
            protect_reflection=settings.auth_reflection,
            client_certificates=self.tls is not None,
        )

    def bind(self, server: grpc.aio.Server, listen: str) -> int:
        """Adds the listening port (TLS or plaintext); returns its number (0: failed)."""
        if self.tls is None:
            return int(server.add_insecure_port(listen))
        return int(server.add_secure_port(listen, self.tls.credentials))

    @property
    def auth(self) -> str:
        """How callers are identified: none, tokens, or client-certificates."""
        if self.authenticator.uses_tokens:
            return "tokens"
        return "client-certificates" if self.tls and self.tls.mutual else "none"

    @property
    def tls_mode(self) -> str:
        """off, on, or mutual."""
        if self.tls is None:
            return "off"
        return "mutual" if self.tls.mutual else "on"

    def describe(self) -> str:
        parts = [
            "mutual TLS" if self.tls and self.tls.mutual else "TLS" if self.tls else "plaintext"
        ]
        if self.authenticator.uses_tokens:
            parts.append("bearer tokens")
        elif not (self.tls and self.tls.mutual):
            parts.append("no authentication")
        return ", ".join(parts)

    def reload(self) -> None:
        """SIGHUP: certificates are re-read at the next handshake, the tokens file now."""
        if self.tls is not None:
            self.tls.reload()
        if self.authenticator.tokens is not None:
            self.authenticator.tokens.refresh()
        log.info("reload requested (SIGHUP)")
