"""Server TLS credentials whose certificate files are re-read on request (SIGHUP).

grpc asks the fetcher for a new configuration at each new connection's handshake; it returns
None (keep the current one) unless a reload was requested. Open connections keep the
certificate they were established with, so a reload drops nothing.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

import grpc
from jobwheel.server.security.settings import SecurityConfigError, SecuritySettings

log = logging.getLogger(__name__)


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise SecurityConfigError(f"{what} {path} is not PEM")
    return data


class ServerTls:
    """The TLS side of one listener: credentials for add_secure_port, and reload()."""

    def __init__(self, settings: SecuritySettings) -> None:
        assert settings.tls_cert is not None and settings.tls_key is not None
        self.settings = settings
        self._reload = threading.Event()
        self.mutual = settings.tls_client_ca is not None
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(),
            self._fetch,
            require_client_authentication=self.mutual,
        )

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        s = self.settings
        assert s.tls_cert is not None and s.tls_key is not None
        pair = (_read(s.tls_key, "--tls-key"), _read(s.tls_cert, "--tls-cert"))
        ca = _read(s.tls_client_ca, "--tls-client-ca") if s.tls_client_ca else None
        try:  # a key that does not match its certificate fails here, not in every handshake
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                s.tls_cert, s.tls_key
            )
        except ssl.SSLError as exc:
            raise SecurityConfigError(f"--tls-cert/--tls-key: {exc.reason}") from None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def reload(self) -> None:
        """The next handshake reads the certificate files again (safe from any thread)."""
        self._reload.set()

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # called by grpc on its own threads, once per handshake
        if not self._reload.is_set():
            return None
        self._reload.clear()
        try:
            configuration = self._configuration()
        except SecurityConfigError as exc:
            log.error("TLS certificates not reloaded, the current ones stay in use: %s", exc)
            return None
        log.info("TLS certificates reloaded from %s", self.settings.tls_cert)
        return configuration
