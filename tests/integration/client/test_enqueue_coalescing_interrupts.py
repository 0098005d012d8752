"""The blocking Client's enqueue coalescing when a caller's thread is interrupted: Ctrl-C's
KeyboardInterrupt, or an exception a signal handler raises (an alarm's TimeoutError), which
Python delivers in the main thread. Each is that caller's alone: the other callers get what
they would have had, and the client keeps its places for later calls.

The scripted server (HeldReplies) runs on a thread pool, so that the test's main thread can
block in `enqueue_job` and take a real signal while it does."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from jobwheel.client import Cancelled, Client
from jobwheel.client.coalescing import MAX_IN_FLIGHT
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import job_service_pb2_grpc

from tests.integration.client.scripted import HeldReplies, thread_coalescer

WAIT = 5.0  # the longest any step may take before the test calls it a hang
INTERRUPTS = [KeyboardInterrupt, TimeoutError]


@pytest.fixture
def held() -> Iterator[tuple[HeldReplies, str]]:
    service = HeldReplies()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    job_service_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        service.open()
        server.stop(None)


def _until(check: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not reached")
        time.sleep(0.005)


class Outcome:
    """One enqueue_job call (payload n) in a thread of its own; `get()` gives its result or
    exception, or fails the test when the call does not end (a hang)."""

    def __init__(self, client: Client, n: int) -> None:
        self.done = threading.Event()
        self.value: Any = None

        def call() -> None:
            try:
                self.value = client.enqueue_job("test.noop", payload={"n": n})
            except BaseException as exc:
                self.value = exc
            self.done.set()

        threading.Thread(target=call, daemon=True).start()

    def get(self, wait: float = WAIT) -> Any:
        if not self.done.wait(wait):
            raise AssertionError("the call did not end")
        return self.value


def _take_the_places(client: Client, service: HeldReplies) -> list[Outcome]:
    """MAX_IN_FLIGHT calls (n = 0, 1, ...) held by the server: calls made after them wait."""
    seen = len(service.calls)
    started: list[Outcome] = []
    for n in range(MAX_IN_FLIGHT):
        started.append(Outcome(client, n))
        _until(lambda: len(service.calls) == seen + len(started), "the server holds the call")
    return started


class Behind:
    """One more call (n = 3), made once the main thread's call waits, so that it waits
    behind it: `poll()` starts it then, and gives how many calls wait."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.coalescer = thread_coalescer(client)
        self.outcome: Outcome | None = None

    def poll(self) -> int:
        if self.outcome is None and len(self.coalescer._waiting) == 1:
            self.outcome = Outcome(self.client, 3)
        return len(self.coalescer._waiting)

    def get(self) -> Any:
        assert self.outcome is not None
        return self.outcome.get()


class Interrupt:
    """Raises `exc` in the main thread, from a real signal's handler, once `when()` holds;
    the handler calls `first()` before it raises."""

    def __init__(
        self,
        when: Callable[[], bool],
        exc: type[BaseException],
        first: Callable[[], None] = lambda: None,
    ) -> None:
        self.when = when
        self.exc = exc
        self.first = first

    def __enter__(self) -> Interrupt:
        assert threading.current_thread() is threading.main_thread()

        def handler(signum: int, frame: Any) -> None:
            self.first()
            raise self.exc("interrupted by a signal")

        self.previous = signal.signal(signal.SIGUSR1, handler)
        main = threading.main_thread().ident
        assert main is not None

        def fire() -> None:
            _until(self.when, "the moment to interrupt")
            signal.pthread_kill(main, signal.SIGUSR1)

        self.thread = threading.Thread(target=fire, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(WAIT)
        signal.signal(signal.SIGUSR1, self.previous)


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_a_caller_interrupted_while_waiting_leaves_unsent_and_the_calls_behind_it_go(
    held: tuple[HeldReplies, str], interrupt: type[BaseException]
) -> None:
    service, address = held
    with Client(address, timeout=5.0) as client:
        first = _take_the_places(client, service)
        coalescer = thread_coalescer(client)
        with Interrupt(lambda: len(coalescer._waiting) == 1, interrupt), pytest.raises(interrupt):
            client.enqueue_job("test.noop", payload={"n": 2})
        behind = Outcome(client, 3)
        _until(lambda: len(coalescer._waiting) == 1, "the next call waits")
        service.gate.set()
        assert [o.get().job.id for o in first] == ["job-0", "job-1"]
        assert behind.get().job.id == "job-3"
        # the interrupted call was never sent
        assert [n for _, numbers in service.calls for n in numbers] == [0, 1, 3]
        assert coalescer._sending == 0 and not coalescer._waiting


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_a_caller_interrupted_once_told_to_lead_hands_its_batch_on(
    held: tuple[HeldReplies, str], interrupt: type[BaseException]
) -> None:
    service, address = held
    with Client(address, timeout=5.0) as client:
        first = _take_the_places(client, service)
        coalescer = thread_coalescer(client)
        behind = Behind(client)

        def told_to_lead() -> None:
            # in the main thread, its call waiting: a place frees and the call is told to
            # lead [2, 3]; the interrupt comes before it sends
            mine = coalescer._waiting[0]
            service.gate.set()
            _until(lambda: bool(mine.batch), "the call told to lead")

        both_wait = Interrupt(lambda: behind.poll() == 2, interrupt, first=told_to_lead)
        with both_wait, pytest.raises(interrupt):
            client.enqueue_job("test.noop", payload={"n": 2})
        for o in first:
            assert isinstance(o.get(), pb.EnqueueJobResponse)
        assert behind.get().job.id == "job-3"
        assert [n for _, numbers in service.calls for n in numbers] == [0, 1, 3]
        assert coalescer._sending == 0 and not coalescer._waiting


def test_interrupted_callers_give_their_places_back(held: tuple[HeldReplies, str]) -> None:
    service, address = held
    with Client(address, timeout=3.0) as client:
        coalescer = thread_coalescer(client)
        for round_ in range(MAX_IN_FLIGHT + 1):  # more interrupts than the client has places
            service.gate.clear()
            first = _take_the_places(client, service)
            waits = Interrupt(lambda: len(coalescer._waiting) == 1, KeyboardInterrupt)
            with waits, pytest.raises(KeyboardInterrupt):
                client.enqueue_job("test.noop", payload={"n": 100 + round_})
            service.gate.set()
            for o in first:
                assert isinstance(o.get(), pb.EnqueueJobResponse)
            _until(lambda: coalescer._sending == 0, "every place free again")
        # alone on an idle server, a call gets its job at once
        assert client.enqueue_job("test.noop", payload={"n": 7}).job.id == "job-7"
        assert coalescer._sending == 0 and not coalescer._waiting


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_an_interrupt_in_the_thread_sending_a_batch_is_that_threads_alone(
    held: tuple[HeldReplies, str], interrupt: type[BaseException]
) -> None:
    service, address = held
    with Client(address, timeout=5.0) as client:
        first = _take_the_places(client, service)
        coalescer = thread_coalescer(client)
        behind = Behind(client)

        def batch_on_its_way() -> bool:
            if behind.poll() == 2 and not service.gate.is_set():
                service.gate.set()  # the first two return: the main thread leads [2, 3]
            return ("BatchEnqueueJobs", [2, 3]) in service.calls

        with Interrupt(batch_on_its_way, interrupt), pytest.raises(interrupt):
            client.enqueue_job("test.noop", payload={"n": 2})  # leads [2, 3], held
        service.batch_gate.set()
        for o in first:
            assert isinstance(o.get(), pb.EnqueueJobResponse)
        got = behind.get()
        # not the leader's interrupt: a call cut off on its way, its job perhaps created
        assert isinstance(got, Cancelled), got
        assert "may have been created" in str(got) and isinstance(got.__cause__, interrupt)
        assert coalescer._sending == 0 and not coalescer._waiting
        # the client goes on
        assert client.enqueue_job("test.noop", payload={"n": 4}).job.id == "job-4"


def test_closing_the_client_ends_every_call_on_its_way_or_waiting(
    held: tuple[HeldReplies, str],
) -> None:
    service, address = held
    client = Client(address, timeout=5.0)
    first = _take_the_places(client, service)
    coalescer = thread_coalescer(client)
    waiting = [Outcome(client, n) for n in (2, 3)]
    _until(lambda: len(coalescer._waiting) == 2, "two calls wait")
    client.close()
    outcomes = [o.get() for o in (*first, *waiting)]
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    assert coalescer._sending == 0 and not coalescer._waiting
