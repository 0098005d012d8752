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
from jobwheel.server import handlers, interpreter, log_throttle, model
from jobwheel.server.api import reflection, reply_size
from jobwheel.server.api.convert import event_document
from jobwheel.server.api.job_service import JobService
from jobwheel.server.api.rpc_stack import RpcStack
from jobwheel.server.api.validate import Limits
from jobwheel.server.api.watch import Watcher
from jobwheel.server.api.worker_service import WorkerService
from jobwheel.server.availability import DatabaseHealth
from jobwheel.server.clock import Clock, SystemClock
from jobwheel.server.config import Settings, parse_settings, version
from jobwheel.server.core import Core
from jobwheel.server.engine import Engine
from jobwheel.server.event_loop import loop_factory, running_loop_name
from jobwheel.server.events import EventBus, EventRelay, LogTailer
from jobwheel.server.execution.event_delivery import DELIVERY_TASK
from jobwheel.server.execution.remote import RemoteWorkers
from jobwheel.server.execution.roster import Roster
from jobwheel.server.observability import logs
from jobwheel.server.observability.wiring import Observability
from jobwheel.server.security import token_cli
from jobwheel.server.security.settings import SecurityConfigError, check_exposure
from jobwheel.server.security.setup import ServerSecurity
from jobwheel.server.startup import StartupError, check_listen_address, describe, safe_url
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.exclusive import ExclusiveUse
from jobwheel.server.web.auth import authentication
from jobwheel.server.web.server import WebServer
from jobwheel.server.web.site import Site
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
# how long stop waits for the background tasks' way out (each may wait for the database)
STOP_WAIT_S = 1.0
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
        self.watcher: Watcher | None = None
        self._tailer: asyncio.Task[None] | None = None
        self._db_health: asyncio.Task[None] | None = None
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.observability: Observability | None = None
        self.roster: Roster | None = None
        self._roster_task: asyncio.Task[None] | None = None
        self.web: WebServer | None = None
        self.http_port = 0

    async def start(self) -> int:
        check_listen_address(self.settings.listen)
        self.security = security = ServerSecurity(self.settings.listen, self.settings.security)
        if self.settings.http_listen:
            # the dashboard changes jobs as the API does: the same exposure rule
            check_listen_address(self.settings.http_listen)
            try:
                check_exposure(self.settings.http_listen, self.settings.security)
            except SecurityConfigError as exc:
                raise SecurityConfigError(f"--http-listen: {exc}") from None
        handlers.load_modules(self.settings.handlers)
        loaded = sorted(handlers.registered())
        loop_name = running_loop_name()
        log.info(
            "jobwheel %s starting: database %s, listen %s, auth %s, handlers %s, event loop %s",
            version(),
            safe_url(self.settings.db),
            self.settings.listen,
            security.auth,
            ", ".join(loaded) or "none",
            loop_name,
            extra={
                "version": version(),
                "database": safe_url(self.settings.db),
                "listen": self.settings.listen,
                "auth": security.auth,
                "tls": security.tls_mode,
                "handlers": loaded,
                "event_loop": loop_name,
            },
        )
        if not self.settings.webhook_secrets:
            log.info("no --webhook-secret set: HTTP jobs are sent unsigned")
        # metrics, logs and traces: their hooks go to each part below as it is built
        self.observability = obs = Observability(self.settings.metrics_listen)
        self.exclusive.acquire()
        db_health = DatabaseHealth(self._set_serving)
        # committed events leave the store through `committed`, which the bus joins below
        committed = EventRelay()
        window = self.settings.idempotency_window
        self.store = store = await open_store(
            self.settings.db,
            sqlite_synchronous=self.settings.sqlite_synchronous,
            idempotency_window=int(window * model.SECOND) if window > 0 else None,
            event_sink=committed,
            on_unreachable=db_health.suspect,
            on_transaction=obs.on_transaction,
        )
        self._db_health = asyncio.create_task(
            db_health.run(store.head_revision), name="jobwheel-db-health"
        )
        obs.count_jobs(store.active_counts)
        # The data path: enqueue (core) -> store -> wheel (engine.scheduler) -> executors
        # (engine.dispatcher in process, remote for workers) -> store -> events (bus).
        self.engine = engine = Engine(
            store,
            self.clock,
            handlers.registered(),
            event_document,
            self.settings,
            on_lease_expired=obs.on_lease_expired,
            on_webhook_delivery=obs.on_webhook_delivery,
            observe_settles=obs.batch_sizes("settle"),
        )
        self.roster = Roster(
            store,
            self.clock,
            engine.worker_id,
            [t for t in engine.executor.handlers if t != DELIVERY_TASK],
            version=version(),
            after_flush=obs.after_roster_flush,
        )
        self.remote = RemoteWorkers(
            store,
            self.clock,
            inprocess_tasks=engine.executor.handlers.keys(),
            settle=engine.dispatcher.settle,
            roster=self.roster,
            observe_renewals=obs.batch_sizes("renew"),
        )
        core = Core(
            store,
            self.clock,
            on_subscriptions_change=engine.deliveries.refresh,
            on_queue_change=lambda q: engine.dispatcher.set_queues({q.name: q}),
            observe_enqueues=obs.batch_sizes("enqueue"),
        )
        # the bus starts after the opened store's newest revision; the engine and remote
        # leases react to every committed event
        self.bus = EventBus(
            await store.head_revision() + 1,
            taps=[engine.on_event, self.remote.on_event],
            batch_taps=obs.bus_batch_taps,
        )
        remote = self.remote
        self.bus.taps_need = lambda etype, job_id, recurring: (
            engine.needs_event(etype, job_id, recurring) or remote.holds(job_id)
        )
        # from here on the store's committed events reach the bus (counted on the way)
        committed.connect(*obs.event_counters, self.bus.publish)
        await obs.start(self.bus, engine.dispatcher, self.remote)
        await self.engine.start()
        # on PostgreSQL other replicas write to the same log; on SQLite it only repairs gaps
        tailer = LogTailer(
            store,
            self.bus,
            always=not store.dialect.single_writer,
            clock=self.clock,
            on_settings=self.engine.settings_changed,
        )
        self._tailer = asyncio.create_task(tailer.run())
        self._roster_task = asyncio.create_task(self.roster.run())
        server = grpc.aio.server(
            # traces (when on) around everything; the rest of each call's handling is one
            # wrapper per method (api/rpc_stack.py)
            interceptors=obs.interceptors(),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # gRPC binds with SO_REUSEPORT by default: a second server on the same address
                # would start and silently take part of the traffic
                ("grpc.so_reuseport", 0),
            ],
        )
        self.watcher = watcher = Watcher(
            self.store,
            self.bus,
            self.clock,
            heartbeat=self.settings.watch_heartbeat,
            buffer=self.settings.watch_buffer,
            on_sent=obs.on_events_sent,
        )
        # the metrics and RPC line, then authentication and roles, then the guard (statuses of
        # undecodable bodies and the servicers' exceptions), then the audit line
        stack = RpcStack(obs.rpc_observer(), self.security.gate)
        job_service_pb2_grpc.add_JobServiceServicer_to_server(
            JobService(
                core,
                Limits(self.settings.max_payload_bytes),
                watcher,
                self.settings.queue_concurrency,
                self.roster,
            ),
            stack.target,
        )
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
            WorkerService(self.remote, Limits(self.settings.max_payload_bytes)), stack.target
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, stack.target)
        reflection.enable((*SERVICE_NAMES, health.SERVICE_NAME), stack.target)
        stack.serve(server)
        try:
            self.port = self.security.bind(server, self.settings.listen)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise StartupError(
                f"cannot listen on {self.settings.listen}: the address is in use or not "
                "available on this host"
            )
        await server.start()
        self.server = server
        obs.serve()
        await self._set_serving(db_health.available)
        host = self.settings.listen.rsplit(":", 1)[0]
        log.info(
            "jobwheel listening on %s:%d (%s; db %s)%s",
            host,
            self.port,
            self.security.describe(),
            safe_url(self.settings.db),
            f", metrics on port {obs.port}" if obs.port else "",
        )
        if self.settings.http_listen:
            await self._start_web(core)
        return self.port

    async def _set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status.SERVING if serving else status.NOT_SERVING)

    async def _start_web(self, core: Core) -> None:
        """The dashboard on --http-listen: the same TLS and the same tokens as gRPC."""
        security = self.security
        site = Site(
            core,
            self.bus,
            self.settings.queue_concurrency,
            authenticator=authentication(security.authenticator),
        )
        self.web = WebServer(site, self.settings.security if security.tls else None)
        self.http_port = await self.web.start(self.settings.http_listen, self.settings.grace_period)
        host = self.settings.http_listen.rsplit(":", 1)[0]
        log.info(
            "dashboard on %s://%s:%d/",
            self.web.scheme,
            host,
            self.http_port,
            extra={"dashboard": f"{self.web.scheme}://{host}:{self.http_port}/"},
        )

    def reload(self) -> None:
        """SIGHUP: certificates (gRPC and dashboard) and the tokens file are read again."""
        self.security.reload()
        if self.web is not None:
            self.web.reload()

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.grace_period if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.remote is not None:
            self.remote.close()  # long-polls answer now instead of holding the grace period
        if self.watcher is not None:
            self.watcher.close()  # watch streams end now with UNAVAILABLE, likewise
        # in-flight calls and running attempts share one grace period
        await asyncio.gather(
            *([self.web.stop()] if self.web is not None else []),
            *([self.server.stop(grace)] if self.server is not None else []),
            *([self.engine.stop(grace)] if self.engine is not None else []),
        )
        background = [t for t in (self._tailer, self._db_health, self._roster_task) if t]
        for task in background:
            task.cancel()
        if background:
            # their way out may wait for the database (the tailer's UNLISTEN), which a
            # network dropping packets never answers: not longer than STOP_WAIT_S
            ended, stuck = await asyncio.wait(background, timeout=STOP_WAIT_S)
            for task in ended:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("%s ended with %r", task.get_name(), task.exception())
            if stuck:
                log.warning("the database did not answer within %g s; stopping", STOP_WAIT_S)
        if self.observability is not None:
            await self.observability.close()
        if self.roster is not None:
            # briefly: with the database gone, the row ages out of ListWorkers by itself
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.roster.leave()
        if self.store is not None:
            await self.store.close()
        self.exclusive.release()
        log.info("jobwheel stopped")


async def run(settings: Settings) -> None:
    app = App(settings)
    held = logs.HeldLines()  # until the start is known to have worked
    loop = asyncio.get_running_loop()
    # before the listening line: a SIGHUP sent once it shows must reload, never kill
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    try:
        await app.start()
    except Exception as exc:
        held.drop()
        logging.disable()  # the one line below says it all
        with contextlib.suppress(Exception):  # whatever had started: best effort
            await app.stop(0)
        raise StartupError(describe(exc, settings.db)) from exc
    except BaseException:  # interrupted: what was held is all there is to tell
        held.release()
        raise
    held.release()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    interpreter.tune_for_serving()
    await stopping.wait()
    log.info("signal received, draining (grace %.1fs)", settings.grace_period)
    await app.stop()


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        sys.exit(token_cli.main(argv[1:]))
    settings = parse_settings(argv)
    logs.configure(settings.log_level, settings.log_format)
    log_throttle.install()
    try:
        factory = loop_factory(settings.event_loop)
        with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as loop:
            loop.run(run(settings))
    except StartupError as exc:
        # a start-up problem the operator must fix: one clear line, not a traceback
        sys.exit(f"jobwheel-server: {exc}")


if __name__ == "__main__":
    main()
