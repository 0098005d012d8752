"""dramatiq on Redis: actor.send from 64 threads, its Worker with its defaults (8 threads) in
this process. Runs in the peers' venv."""

from __future__ import annotations

import time
from typing import Any

from bench.peers.load import Firings, Tally, due_times, thread_count
from bench.peers.spec import Adapter, Env, Result, Sizes


def _broker(env: Env) -> Any:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=env.redis_url)
    broker.client.flushdb()
    dramatiq.set_broker(broker)
    return broker


def _work(broker: Any, wait: Any) -> Any:
    from dramatiq import Worker

    worker = Worker(broker)  # default: 8 worker threads
    worker.start()
    try:
        return wait()
    finally:
        worker.stop()


def w1(sizes: Sizes, env: Env) -> Result:
    import dramatiq

    _broker(env)
    noop = dramatiq.actor(lambda n: None, actor_name="noop")
    return {"rate": thread_count(noop.send, sizes.enqueues, sizes.callers)}


def w3(sizes: Sizes, env: Env) -> Result:
    import dramatiq

    broker = _broker(env)
    tally = Tally(sizes.drained)

    def noop(n: int) -> None:
        tally.start()
        tally.finish()

    actor = dramatiq.actor(noop, actor_name="noop")
    for i in range(sizes.drained):
        actor.send(i)
    return {"rate": _work(broker, lambda: tally.wait(900))}


def w4(sizes: Sizes, env: Env) -> Result:
    import dramatiq

    broker = _broker(env)
    fires = Firings(sizes.fires)
    actor = dramatiq.actor(fires.fired, actor_name="due")
    for at in due_times(sizes.fires, sizes.lead, sizes.span):
        actor.send_with_options(args=(at,), delay=max(0, int((at - time.time()) * 1000)))
    return _work(broker, lambda: fires.wait(sizes.lead + sizes.span + 10))  # type: ignore[no-any-return]


ADAPTERS = [Adapter("dramatiq", "server", "peers", {"w1": w1, "w3": w3, "w4": w4}, "redis")]
