"""Metrics, the RPC log and traces: the hooks the App passes to the server's parts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from jobwheel.server import model
from jobwheel.server.config import version
from jobwheel.server.events import EventBus
from jobwheel.server.execution.dispatcher import Dispatcher
from jobwheel.server.execution.remote import RemoteWorkers
from jobwheel.server.observability import tracing
from jobwheel.server.observability.job_metrics import Counts, JobMetrics
from jobwheel.server.observability.metrics import Metrics, MetricsServer
from jobwheel.server.observability.rpc import RpcObserver


class Observability:
    """Metrics when `metrics_listen` is set; RPC lines at debug level; traces per OTEL_*.

    Built first: the parts take its hooks at construction (each None when metrics are off),
    and `start` then reads the jobs gauge's first count and the gauges that read the parts.
    """

    def __init__(self, metrics_listen: str) -> None:
        self.listen = metrics_listen
        self.metrics = m = Metrics() if metrics_listen else None
        self.jobs: JobMetrics | None = None
        self.server: MetricsServer | None = None
        self.tracing = tracing.configure()
        self.on_transaction: Callable[[str, float], None] | None = None
        self.on_webhook_delivery: Callable[[str], None] | None = None
        self.on_lease_expired: Callable[[int], None] | None = None
        self.on_events_sent: Callable[[int], None] | None = None
        if m is not None:
            db_seconds = {kind: m.db_seconds.labels(kind) for kind in ("read", "write")}
            self.on_transaction = lambda kind, took: db_seconds[kind].observe(took)
            self.on_webhook_delivery = lambda status: m.webhook_deliveries.labels(status).inc()
            self.on_lease_expired = m.lease_expiries.inc
            self.on_events_sent = m.events_sent.inc

    @property
    def port(self) -> int:
        """The port /metrics is served on (0: not served)."""
        return self.server.port if self.server is not None else 0

    def batch_sizes(self, name: str) -> Callable[[int], None] | None:
        """Observes the sizes of one group commit's merged batches ("enqueue", "settle"...)."""
        return None if self.metrics is None else self.metrics.batch_size.labels(name).observe

    def count_jobs(self, recount: Callable[[], Awaitable[tuple[int, Counts]]]) -> None:
        """The jobs gauges, counted by `recount` (the store's active_counts) and followed
        from the events (`event_counters`, `bus_batch_taps`, `after_roster_flush`)."""
        if self.metrics is not None:
            self.jobs = JobMetrics(self.metrics, recount)

    @property
    def event_counters(self) -> list[Callable[[list[model.Event]], None]]:
        """Receivers of this process's committed events (ahead of the bus)."""
        return [] if self.jobs is None else [self.jobs.count_local]

    @property
    def bus_batch_taps(self) -> list[Callable[[list[model.Event]], None]]:
        """Batch taps of the bus: every replica's events."""
        return [] if self.jobs is None else [self.jobs.on_events]

    @property
    def after_roster_flush(self) -> Callable[[Callable[[str, str], bool]], None] | None:
        """Given the roster's `unserved(queue, task)` after each flush: jobs without a worker."""
        return None if self.jobs is None else self.jobs.publish_unserved

    async def start(self, bus: EventBus, dispatcher: Dispatcher, remote: RemoteWorkers) -> None:
        """Counts the jobs (after the bus's first revision is known, before anything writes)
        and sets the gauges read at each scrape."""
        m, jobs = self.metrics, self.jobs
        if m is None or jobs is None:
            return
        m.track(m.watchers, lambda: bus.subscriptions)
        m.track(m.attempts_running.labels("inprocess"), lambda: dispatcher.running)
        m.track(m.attempts_running.labels("remote"), lambda: remote.held)
        m.build_info.labels(version()).set(1)
        await jobs.start()

    def interceptors(self) -> list[Any]:
        """The server's interceptors: OpenTelemetry's span per RPC when tracing is on."""
        return [tracing.server_interceptor()] if self.tracing else []

    def rpc_observer(self) -> RpcObserver | None:
        """The per-RPC metrics and debug line (None: neither is on)."""
        observer = RpcObserver(self.metrics)
        return observer if observer.active else None

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
