"""Runs the dashboard with uvicorn inside the gRPC server's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from jobwheel.server.web.app import create_app
from jobwheel.server.web.site import Site

log = logging.getLogger("jobwheel.server.web")


def _bind(listen: str) -> socket.socket:
    """A listening socket for HOST:PORT ([v6]:port too); OSError if it cannot be had."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise OSError(f"--http-listen {listen!r}: expected HOST:PORT")
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
        raise OSError(f"cannot listen on {listen} for the dashboard: {exc.strerror}") from exc
    return sock


class WebServer:
    def __init__(self, site: Site) -> None:
        self.site = site
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    async def start(self, listen: str, grace: float) -> int:
        """Binds `listen` and serves; returns the port (useful with port 0)."""
        self._sock = _bind(listen)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.site),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(1, round(grace)),
            proxy_headers=False,
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
