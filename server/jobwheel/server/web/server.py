"""Runs the dashboard with uvicorn inside the gRPC server's event loop; under TLS with the
gRPC listener's certificate (and its client CAs for mutual TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

import uvicorn
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.server.startup import StartupError
from jobwheel.server.web.app import create_app
from jobwheel.server.web.site import Site

log = logging.getLogger("jobwheel.server.web")


def _bind(listen: str) -> socket.socket:
    """A listening socket for HOST:PORT ([v6]:port too; checked by config.py);
    StartupError if it cannot be had."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {listen} for the dashboard (--http-listen): {exc.strerror}"
        ) from exc
    return sock


class WebServer:
    """`tls`: the server's security settings when it serves TLS (None: plain HTTP)."""

    def __init__(self, site: Site, tls: SecuritySettings | None = None) -> None:
        self.site = site
        self.tls = tls
        site.tls = tls is not None  # the session cookie is then Secure
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    async def start(self, listen: str, grace: float) -> int:
        """Binds `listen` and serves; returns the port (useful with port 0)."""
        self._sock = _bind(listen)
        self.port = self._sock.getsockname()[1]
        tls = self.tls
        config = uvicorn.Config(
            create_app(self.site),
            lifespan="off",
            log_config=None,
            # the server logs the dashboard's address itself; uvicorn's "Started server
            # process" lines would only repeat (and mislead about) the process
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=max(1, round(grace)),
            proxy_headers=False,
            ssl_certfile=tls.tls_cert if tls else None,
            ssl_keyfile=tls.tls_key if tls else None,
            # mutual TLS: a browser without a certificate from these CAs is refused, as
            # gRPC clients are
            ssl_ca_certs=tls.tls_client_ca if tls else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.tls_client_ca else ssl.CERT_NONE,
        )
        server = uvicorn.Server(config)
        # Server.serve() would install its own signal handlers; the app owns those, so the
        # serving coroutine behind it runs as a task (start-up, serving, graceful shutdown)
        self._task = asyncio.create_task(server._serve(sockets=[self._sock]))
        self._server = server
        while not server.started:
            if self._task.done():
                self._task.result()  # start-up failed: raise why
                raise OSError(f"the dashboard did not start on {listen}")
            await asyncio.sleep(0.01)
        return self.port

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def reload(self) -> None:
        """SIGHUP: new connections get the certificate files as they are now (open ones keep
        theirs); on an error the current certificate stays in use."""
        server, tls = self._server, self.tls
        if server is None or tls is None or tls.tls_cert is None or server.config.ssl is None:
            return
        try:
            server.config.ssl.load_cert_chain(tls.tls_cert, tls.tls_key)
        except (OSError, ssl.SSLError) as exc:
            log.error("dashboard TLS certificate not reloaded, the current one stays: %s", exc)

    async def stop(self) -> None:
        self.site.close()
        server = self._server
        if server is None:
            return
        server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self._sock.close()
