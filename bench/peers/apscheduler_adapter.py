"""APScheduler 3 (BackgroundScheduler, its defaults: memory job store, 10 threads, 1 s
misfire grace): lateness only, it is a scheduler, not a queue. Runs in the peers' venv."""

from __future__ import annotations

import datetime as dt

from bench.peers.load import Firings, due_times
from bench.peers.spec import Adapter, Env, Result, Sizes


def w4(sizes: Sizes, env: Env) -> Result:
    from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]

    fires = Firings(sizes.fires)
    scheduler = BackgroundScheduler()
    scheduler.start()
    try:
        for at in due_times(sizes.fires, sizes.lead, sizes.span):
            when = dt.datetime.fromtimestamp(at, dt.UTC)
            scheduler.add_job(fires.fired, "date", run_date=when, args=(at,))
        return fires.wait(sizes.lead + sizes.span + 10)
    finally:
        scheduler.shutdown(wait=False)


ADAPTERS = [Adapter("APScheduler", "embedded", "peers", {"w4": w4})]
