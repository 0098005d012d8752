"""Composition root: settings -> store, core, servicers -> a grpc.aio server; graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from jobwheel.server import handlers, model
from jobwheel.server.api import reflection
from jobwheel.server.api.job_service import JobService
from jobwheel.server.api.validate import Limits
from jobwheel.server.api.watch import Watcher
from jobwheel.server.api.worker_service import WorkerService
from jobwheel.server.clock import Clock, SystemClock
from jobwheel.server.config import Settings, parse_settings, version
from jobwheel.server.core import Core
from jobwheel.server.engine import Engine
from jobwheel.server.events import EventBus, LogTailer
from jobwheel.server.execution.event_delivery import DELIVERY_TASK
from jobwheel.server.execution.remote import RemoteWorkers
from jobwheel.server.execution.roster import Roster
from jobwheel.server.execution.webhook import WebhookSettings
from jobwheel.server.observability import logs, tracing
from jobwheel.server.observability.job_metrics import JobMetrics
from jobwheel.server.observability.metrics import Metrics, MetricsServer
from jobwheel.server.observability.rpc import RPC_LOGGER, RpcObserver
from jobwheel.server.storage import SchemaVersionError, StorageUrlError, Store, open_store
from jobwheel.server.storage.exclusive import DatabaseInUse, ExclusiveUse
from jobwheel.v1 import (
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from sqlalchemy.engine import make_url

log = logging.getLogger("jobwheel.server")


def safe_url(url: str) -> str:
    """A database URL with its password hidden, for logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


MAX_MESSAGE_BYTES = 64 << 20
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
        self.metrics: Metrics | None = None
        self.metrics_server: MetricsServer | None = None
        self.metrics_port = 0
        self.job_metrics: JobMetrics | None = None
        self.roster: Roster | None = None
        self._roster_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        handlers.load_modules(self.settings.handlers)
        loaded = sorted(handlers.registered())
        log.info(
            "jobwheel %s starting: database %s, listen %s, auth none, handlers %s",
            version(),
            safe_url(self.settings.db),
            self.settings.listen,
            ", ".join(loaded) or "none",
            extra={
                "version": version(),
                "database": safe_url(self.settings.db),
                "listen": self.settings.listen,
                "auth": "none",
                "handlers": loaded,
            },
        )
        if not self.settings.webhook_secrets:
            log.info("no --webhook-secret set: HTTP jobs are sent unsigned")
        tracing_on = tracing.configure()
        self.exclusive.acquire()
        self.store = await open_store(
            self.settings.db, sqlite_synchronous=self.settings.sqlite_synchronous
        )
        self.bus = EventBus(await self.store.head_revision() + 1)
        self.store.event_sink = self.bus.publish
        if self.settings.metrics_listen:
            self.metrics = Metrics()
            store = self.store
            self.job_metrics = JobMetrics(self.metrics, store.active_counts)
            job_metrics, publish = self.job_metrics, self.bus.publish

            def sink(events: list[model.Event]) -> None:
                job_metrics.count_local(events)
                publish(events)

            self.store.event_sink = sink
            self.bus.batch_taps.append(job_metrics.on_events)
            await job_metrics.start()
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
        self.roster = Roster(
            self.store,
            self.clock,
            self.engine.worker_id,
            [t for t in self.engine.executor.handlers if t != DELIVERY_TASK],
            version=version(),
        )
        self.remote.roster = self.roster
        if self.job_metrics is not None:
            job_metrics, roster = self.job_metrics, self.roster
            roster.after_flush = lambda: job_metrics.publish_unserved(roster.unserved)
        if self.metrics is not None:
            self._observe(self.metrics, core)
        engine = self.engine
        core.on_queue_change = lambda q: engine.dispatcher.set_queues({q.name: q})
        core.on_subscriptions_change = engine.deliveries.refresh
        await self.engine.start()
        # on PostgreSQL other replicas write to the same log; on SQLite it only repairs gaps
        tailer = LogTailer(self.store, self.bus, always=not self.store.dialect.single_writer)
        self._tailer = asyncio.create_task(tailer.run())
        self._roster_task = asyncio.create_task(self.roster.run())
        interceptors: list[Any] = []
        if tracing_on:
            interceptors.append(tracing.server_interceptor())
        if self.metrics is not None or logging.getLogger(RPC_LOGGER).isEnabledFor(logging.DEBUG):
            interceptors.append(RpcObserver(self.metrics))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        watcher = Watcher(
            self.store,
            self.bus,
            self.clock,
            heartbeat=self.settings.watch_heartbeat,
            buffer=self.settings.watch_buffer,
        )
        if self.metrics is not None:
            watcher.on_sent = self.metrics.events_sent.inc
        job_service_pb2_grpc.add_JobServiceServicer_to_server(
            JobService(
                core,
                Limits(self.settings.max_payload_bytes),
                watcher,
                self.settings.queue_concurrency,
                self.roster,
            ),
            server,
        )
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
            WorkerService(self.remote, Limits(self.settings.max_payload_bytes)), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable((*SERVICE_NAMES, health.SERVICE_NAME), server)
        self.port = server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.listen}")
        await server.start()
        self.server = server
        if self.metrics is not None:
            self.metrics_server = MetricsServer(self.metrics, self.settings.metrics_listen)
            self.metrics_port = self.metrics_server.port
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        host = self.settings.listen.rsplit(":", 1)[0]
        log.info(
            "jobwheel listening on %s:%d%s",
            host,
            self.port,
            f", metrics on port {self.metrics_port}" if self.metrics_server else "",
        )
        return self.port

    def _observe(self, m: Metrics, core: Core) -> None:
        """Connects the parts that report to metrics."""
        assert self.store is not None and self.engine is not None and self.remote is not None
        m.build_info.labels(version()).set(1)
        db_seconds = {kind: m.db_seconds.labels(kind) for kind in ("read", "write")}
        self.store.on_transaction = lambda kind, took: db_seconds[kind].observe(took)
        for name, commit in (
            ("enqueue", core.group_commit),
            ("settle", self.engine.dispatcher.settle),
            ("renew", self.remote.renewals),
        ):
            commit.observe = m.batch_size.labels(name).observe
        engine, remote, bus = self.engine, self.remote, self.bus
        m.track(m.attempts_running.labels("inprocess"), lambda: engine.dispatcher.running)
        m.track(m.attempts_running.labels("remote"), lambda: remote.held)
        m.track(m.watchers, lambda: bus.subscriptions)
        engine.webhooks.on_delivery = lambda status: m.webhook_deliveries.labels(status).inc()
        engine.on_lease_expired = m.lease_expiries.inc

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
        for loop in (self._tailer, self._roster_task):
            if loop is not None:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
        if self.job_metrics is not None:
            await self.job_metrics.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        tracing.shutdown()
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
    logs.configure(settings.log_level, settings.log_format)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(settings))
    except (DatabaseInUse, StorageUrlError, SchemaVersionError, OSError) as exc:
        # a start-up problem the operator must fix: one clear line, not a traceback
        sys.exit(f"jobwheel-server: {exc}")


if __name__ == "__main__":
    main()
