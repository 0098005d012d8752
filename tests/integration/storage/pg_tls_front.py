"""A TLS front for PostgreSQL on loopback: it answers the client's SSLRequest, ends TLS with a
certificate the test made, and carries the plaintext protocol on to the real database, so
that TLS settings of the server's database URL are tried against a real PostgreSQL whose own
configuration (TLS off) is left alone. Connections that do not ask for TLS are refused."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class TlsFront:
    def __init__(self, target: tuple[str, int], context: ssl.SSLContext) -> None:
        self.target = target
        self.context = context
        self.port = 0
        self.tls_sessions = 0  # handshakes completed
        self.refused = 0  # connections that did not ask for TLS, or failed its handshake
        self.client_certs = 0  # handshakes in which the client showed a certificate
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TlsFront:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            code = await self._negotiate(reader, writer)
            if code != SSL_REQUEST:
                self.refused += 1
                writer.transport.abort()
                return
            writer.write(b"S")
            await writer.drain()
            try:
                await writer.start_tls(self.context)
            except (ssl.SSLError, OSError):
                self.refused += 1
                writer.transport.abort()
                return
            self.tls_sessions += 1
            if writer.get_extra_info("peercert"):
                self.client_certs += 1
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
        except (asyncio.IncompleteReadError, OSError):
            writer.transport.abort()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        while True:
            length, code = struct.unpack("!ii", await reader.readexactly(8))
            if length == 8 and code == GSSENC_REQUEST:
                writer.write(b"N")
                continue
            return code

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
