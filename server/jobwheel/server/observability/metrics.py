"""The Prometheus metrics of one server process, in a registry of its own.

Label sets are bounded: no metric is labelled by a job id, and queue and task names past the
first `MAX_LABEL_VALUES` distinct ones of each kind fold into `other`, so a caller inventing
names cannot grow the scrape (or the server's memory) without limit. Every metric is listed in
the README's "Operations" table; tests/observability checks the two agree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_wsgi_server

NAMESPACE = "jobwheel"
# distinct queue (and, separately, task) names that get a label value of their own
MAX_LABEL_VALUES = 100
OTHER = "other"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DURATION_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0)


class LabelCap:
    """Maps names to label values: the first `cap` distinct names are kept, later ones are
    `other`. Thread-safe enough for its use (the event loop adds, scrapes only read)."""

    def __init__(self, cap: int = MAX_LABEL_VALUES) -> None:
        self.cap = cap
        self._kept: set[str] = set()

    def __call__(self, name: str) -> str:
        if name in self._kept:
            return name
        if len(self._kept) < self.cap:
            self._kept.add(name)
            return name
        return OTHER


class Metrics:
    """Every metric the server exports. `registry` is what /metrics serves."""

    def __init__(self, max_label_values: int = MAX_LABEL_VALUES) -> None:
        self.registry = CollectorRegistry()
        self.queue_label = LabelCap(max_label_values)
        self.task_label = LabelCap(max_label_values)
        r = self.registry
        # gRPC, under the names of go-grpc-prometheus / py-grpc-prometheus
        self.rpc_started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            ["grpc_type", "grpc_service", "grpc_method"],
            registry=r,
        )
        self.rpc_handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status code.",
            ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time the server took to handle an RPC (streams: their whole life), seconds.",
            ["grpc_type", "grpc_service", "grpc_method"],
            buckets=_RPC_BUCKETS,
            registry=r,
        )
        # jobs: counted by the replica that made the change, so sums over replicas are totals
        job_labels = ["queue", "task"]
        self.enqueued = Counter(
            f"{NAMESPACE}_jobs_enqueued", "Jobs created.", job_labels, registry=r
        )
        self.started = Counter(
            f"{NAMESPACE}_jobs_started", "Attempts started.", job_labels, registry=r
        )
        self.completed = Counter(
            f"{NAMESPACE}_jobs_completed", "Executions that succeeded.", job_labels, registry=r
        )
        self.failed = Counter(
            f"{NAMESPACE}_jobs_failed",
            "Executions that failed for good (no attempts left, or not retryable).",
            job_labels,
            registry=r,
        )
        self.retried = Counter(
            f"{NAMESPACE}_jobs_retried",
            "Retries scheduled (after a failed attempt, or by RetryJob).",
            job_labels,
            registry=r,
        )
        self.cancelled = Counter(
            f"{NAMESPACE}_jobs_cancelled", "Jobs cancelled.", job_labels, registry=r
        )
        self.lost = Counter(
            f"{NAMESPACE}_jobs_lost",
            "Attempts lost: their executor vanished (process ended or lease expired).",
            job_labels,
            registry=r,
        )
        self.jobs = Gauge(
            f"{NAMESPACE}_jobs",
            "Jobs in each non-terminal state, by queue (the whole database: every replica "
            "reports the same value).",
            ["state", "queue"],
            registry=r,
        )
        self.without_worker = Gauge(
            f"{NAMESPACE}_jobs_without_worker",
            "QUEUED jobs whose task no replica runs in-process and no remote worker asked for "
            "in the last minute (see Job.waiting_reason); refreshed every few seconds.",
            ["queue", "task"],
            registry=r,
        )
        self.lateness = Histogram(
            f"{NAMESPACE}_fire_lateness_seconds",
            "Attempt start minus the time the job was due, seconds.",
            ["queue"],
            buckets=(*_LATENCY_BUCKETS, 5.0, 10.0, 60.0),
            registry=r,
        )
        self.attempt_seconds = Histogram(
            f"{NAMESPACE}_attempt_duration_seconds",
            "Duration of ended attempts, seconds, by outcome.",
            ["queue", "task", "outcome"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.attempts_running = Gauge(
            f"{NAMESPACE}_attempts_running",
            "Attempts this process runs or has leased out now, by executor.",
            ["executor"],
            registry=r,
        )
        self.watchers = Gauge(
            f"{NAMESPACE}_watchers",
            "Open WatchJobs subscriptions on this process.",
            registry=r,
        )
        self.events_sent = Counter(
            f"{NAMESPACE}_watch_events_sent",
            "Job events sent to WatchJobs streams.",
            registry=r,
        )
        self.db_seconds = Histogram(
            f"{NAMESPACE}_db_transaction_seconds",
            "Database transaction latency (from begin to commit), seconds.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{NAMESPACE}_group_commit_batch_size",
            "Calls' items written together in one group-commit transaction.",
            ["operation"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.webhook_deliveries = Counter(
            f"{NAMESPACE}_webhook_deliveries",
            "HTTP job requests sent, by response status class (2xx..5xx) or 'error' "
            "(no response: refused, timed out, blocked).",
            ["status_class"],
            registry=r,
        )
        self.lease_expiries = Counter(
            f"{NAMESPACE}_lease_expiries",
            "Attempts whose lease expired without a report, found by this replica.",
            registry=r,
        )
        self.build_info = Gauge(
            f"{NAMESPACE}_build_info",
            "Always 1; the labels say which version runs.",
            ["version"],
            registry=r,
        )

    def job_labels(self, queue: str, task: str) -> tuple[str, str]:
        return self.queue_label(queue), self.task_label(task)

    def track(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """`gauge` reads `read()` at each scrape."""
        gauge.set_function(read)


class MetricsServer:
    """/metrics over HTTP on a thread of its own (prometheus_client's WSGI server)."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_wsgi_server(
            int(port), addr=host.strip("[]") or "0.0.0.0", registry=metrics.registry
        )
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
