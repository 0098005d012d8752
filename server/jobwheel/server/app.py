"""Composition root: settings -> store, core, servicers -> a grpc.aio server; graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from jobwheel.server import handlers, model
from jobwheel.server.api import reply_size
from jobwheel.server.api.job_service import JobService
from jobwheel.server.api.validate import Limits
from jobwheel.server.api.watch import Watcher
from jobwheel.server.api.worker_service import WorkerService
from jobwheel.server.clock import Clock, SystemClock
from jobwheel.server.config import Settings, parse_settings
from jobwheel.server.core import Core
from jobwheel.server.engine import Engine
from jobwheel.server.events import EventBus, LogTailer
from jobwheel.server.execution.remote import RemoteWorkers
from jobwheel.server.execution.webhook import WebhookSettings
from jobwheel.server.storage import SchemaVersionError, StorageUrlError, Store, open_store
from jobwheel.server.storage.exclusive import DatabaseInUse, ExclusiveUse
from jobwheel.v1 import (
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

log = logging.getLogger("jobwheel.server")
# Requests and replies alike: what gRPC clients accept by default (see api/reply_size.py);
# the largest valid request (a job with a 1 MiB payload) fits with room to spare.
MAX_MESSAGE_BYTES = reply_size.MAX_MESSAGE_BYTES
SERVICE_NAMES = (
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
)


class App:
    """One server process: start() binds and serves, stop() drains and closes."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.exclusive = ExclusiveUse(settings.db)
        self.remote: RemoteWorkers | None = None
        self._tailer: asyncio.Task[None] | None = None
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.port = 0

    async def start(self) -> int:
        handlers.load_modules(self.settings.handlers)
        if not self.settings.webhook_secrets:
            log.info("no --webhook-secret set: HTTP jobs are sent unsigned")
        self.exclusive.acquire()
        self.store = await open_store(
            self.settings.db, sqlite_synchronous=self.settings.sqlite_synchronous
        )
        self.bus = EventBus(await self.store.head_revision() + 1)
        self.store.event_sink = self.bus.publish
        window = self.settings.idempotency_window
        self.store.idempotency_window = int(window * model.SECOND) if window > 0 else None
        core = Core(self.store, self.clock)
        self.engine = Engine(
            self.store,
            self.clock,
            handlers.registered(),
            concurrency=self.settings.queue_concurrency,
            threads=self.settings.threads,
            event_retention=int(self.settings.event_retention * model.SECOND),
            recover_every=int(self.settings.recover_interval * model.SECOND),
            retention=int(self.settings.retention * model.SECOND),
            misfire_grace=int(self.settings.misfire_grace * model.SECOND),
            webhooks=WebhookSettings(
                secrets=self.settings.webhook_secrets,
                allow_networks=self.settings.webhook_allow,
            ),
        )
        self.bus.taps.append(self.engine.on_event)
        self.remote = RemoteWorkers(
            self.store,
            self.clock,
            inprocess_tasks=self.engine.executor.handlers.keys(),
            settle=self.engine.dispatcher.settle,
        )
        self.bus.taps.append(self.remote.on_event)
        engine = self.engine
        core.on_queue_change = lambda q: engine.dispatcher.set_queues({q.name: q})
        core.on_subscriptions_change = engine.deliveries.refresh
        await self.engine.start()
        # on PostgreSQL other replicas write to the same log; on SQLite it only repairs gaps
        tailer = LogTailer(self.store, self.bus, always=not self.store.dialect.single_writer)
        self._tailer = asyncio.create_task(tailer.run())
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        job_service_pb2_grpc.add_JobServiceServicer_to_server(
            JobService(
                core,
                Limits(self.settings.max_payload_bytes),
                Watcher(
                    self.store,
                    self.bus,
                    self.clock,
                    heartbeat=self.settings.watch_heartbeat,
                    buffer=self.settings.watch_buffer,
                ),
                self.settings.queue_concurrency,
            ),
            server,
        )
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
            WorkerService(self.remote, Limits(self.settings.max_payload_bytes)), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.listen}")
        await server.start()
        self.server = server
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        host = self.settings.listen.rsplit(":", 1)[0]
        log.info("jobwheel listening on %s:%d (db %s)", host, self.port, self.settings.db)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.grace_period if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.remote is not None:
            self.remote.close()  # long-polls answer now instead of holding the grace period
        # in-flight calls and running attempts share one grace period
        await asyncio.gather(
            *([self.server.stop(grace)] if self.server is not None else []),
            *([self.engine.stop(grace)] if self.engine is not None else []),
        )
        if self._tailer is not None:
            self._tailer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tailer
        if self.store is not None:
            await self.store.close()
        self.exclusive.release()
        log.info("jobwheel stopped")


async def run(settings: Settings) -> None:
    app = App(settings)
    await app.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("signal received, draining (grace %.1fs)", settings.grace_period)
    await app.stop()


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(settings))
    except (DatabaseInUse, StorageUrlError, SchemaVersionError, OSError) as exc:
        # a start-up problem the operator must fix: one clear line, not a traceback
        sys.exit(f"jobwheel-server: {exc}")


if __name__ == "__main__":
    main()
