"""Connects a server's parts to metrics, the RPC log and traces (the App calls this)."""

from __future__ import annotations

import logging
from typing import Any

from jobwheel.server import model
from jobwheel.server.api.watch import Watcher
from jobwheel.server.config import version
from jobwheel.server.core import Core
from jobwheel.server.engine import Engine
from jobwheel.server.events import EventBus
from jobwheel.server.execution.remote import RemoteWorkers
from jobwheel.server.execution.roster import Roster
from jobwheel.server.observability import tracing
from jobwheel.server.observability.job_metrics import JobMetrics
from jobwheel.server.observability.metrics import Metrics, MetricsServer
from jobwheel.server.observability.rpc import RPC_LOGGER, RpcObserver
from jobwheel.server.storage import Store


class Observability:
    """Metrics when `metrics_listen` is set; RPC lines at debug level; traces per OTEL_*."""

    def __init__(self, metrics_listen: str) -> None:
        self.listen = metrics_listen
        self.metrics = Metrics() if metrics_listen else None
        self.jobs: JobMetrics | None = None
        self.server: MetricsServer | None = None
        self.tracing = tracing.configure()

    @property
    def port(self) -> int:
        """The port /metrics is served on (0: not served)."""
        return self.server.port if self.server is not None else 0

    async def watch_store(self, store: Store, bus: EventBus) -> None:
        """Counts this process's events and keeps the jobs gauge from the bus's; call before
        anything writes."""
        m = self.metrics
        if m is None:
            return
        self.jobs = jobs = JobMetrics(m, store.active_counts)
        publish = bus.publish

        def sink(events: list[model.Event]) -> None:
            jobs.count_local(events)
            publish(events)

        store.event_sink = sink
        bus.batch_taps.append(jobs.on_events)
        db_seconds = {kind: m.db_seconds.labels(kind) for kind in ("read", "write")}
        store.on_transaction = lambda kind, took: db_seconds[kind].observe(took)
        m.track(m.watchers, lambda: bus.subscriptions)
        m.build_info.labels(version()).set(1)
        await jobs.start()

    def watch_parts(
        self, core: Core, engine: Engine, remote: RemoteWorkers, roster: Roster, watcher: Watcher
    ) -> None:
        m, jobs = self.metrics, self.jobs
        if m is None or jobs is None:
            return
        for name, commit in (
            ("enqueue", core.group_commit),
            ("settle", engine.dispatcher.settle),
            ("renew", remote.renewals),
        ):
            commit.observe = m.batch_size.labels(name).observe
        m.track(m.attempts_running.labels("inprocess"), lambda: engine.dispatcher.running)
        m.track(m.attempts_running.labels("remote"), lambda: remote.held)
        engine.webhooks.on_delivery = lambda status: m.webhook_deliveries.labels(status).inc()
        engine.on_lease_expired = m.lease_expiries.inc
        watcher.on_sent = m.events_sent.inc
        roster.after_flush = lambda: jobs.publish_unserved(roster.unserved)

    def interceptors(self) -> list[Any]:
        out: list[Any] = []
        if self.tracing:
            out.append(tracing.server_interceptor())
        if self.metrics is not None or logging.getLogger(RPC_LOGGER).isEnabledFor(logging.DEBUG):
            out.append(RpcObserver(self.metrics))
        return out

    def serve(self) -> None:
        """Starts serving /metrics (when asked for)."""
        if self.metrics is not None:
            self.server = MetricsServer(self.metrics, self.listen)

    async def close(self) -> None:
        if self.jobs is not None:
            await self.jobs.close()
        if self.server is not None:
            self.server.close()
        tracing.shutdown()
