"""The peers benchmark's bookkeeping: adapters declare their workloads, the table and ratios
come out right. No network, no peer library: hooks are never called here."""

from __future__ import annotations

import math

from bench.peers import adapters, by_name, table
from bench.peers.spec import CLASSES, WORKLOADS, Sizes


def test_every_adapter_declares_known_workloads_with_callable_hooks() -> None:
    found = adapters()
    names = [a.name for a in found]
    assert len(names) == len(set(names))
    for adapter in found:
        assert adapter.backend in CLASSES, adapter.name
        assert adapter.venv in ("project", "peers"), adapter.name
        assert adapter.needs in ("", "postgres", "redis"), adapter.name
        # PostgreSQL-backed systems get a database of their own per run
        assert adapter.backend != "postgres" or adapter.needs == "postgres", adapter.name
        assert adapter.hooks, adapter.name
        assert set(adapter.hooks) <= set(WORKLOADS), adapter.name
        assert all(callable(h) for h in adapter.hooks.values()), adapter.name
    expected = {
        "jobwheel/SQLite": WORKLOADS,
        "jobwheel/PostgreSQL": WORKLOADS,
        "jobwheel remote worker/SQLite": ("w3",),
        "grpc.aio echo": ("w1",),
        "pgqueuer": WORKLOADS,
        "procrastinate": WORKLOADS,
        "huey/SQLite": ("w1", "w3", "w4"),
        "huey/Redis": ("w1", "w3", "w4"),
        "arq": ("w1", "w3", "w4"),
        "dramatiq": ("w1", "w3", "w4"),
        "celery": ("w1", "w3"),
        "rq": ("w1", "w2"),
        "APScheduler": ("w4",),
    }
    for name, workloads in expected.items():
        assert by_name(name).workloads == workloads, name
    # every reference peer the ratios name exists
    assert {p for refs in table.REFERENCES.values() for p in refs} <= set(names)


def test_median_skips_failed_rounds() -> None:
    got = table.median([{"rate": 10.0}, {"rate": math.nan}, {"rate": 30.0}, {"rate": 20.0}])
    assert got == {"rate": 20.0}
    assert math.isnan(table.median([{"rate": math.nan}])["rate"])


def test_ratios_against_the_best_reference_of_each_class() -> None:
    medians = {
        ("jobwheel/SQLite", "w1"): {"rate": 3000.0},
        ("jobwheel/SQLite", "w4"): {"p50": 5.0, "p99": 20.0, "early": 0.0, "fired": 10.0},
        ("huey/SQLite", "w1"): {"rate": 2000.0},
        ("huey/SQLite", "w4"): {"p50": 500.0, "p99": 1000.0, "early": 0.0, "fired": 10.0},
        ("arq", "w1"): {"rate": 1000.0},
        ("dramatiq", "w1"): {"rate": 6000.0},
        ("grpc.aio echo", "w1"): {"rate": 4000.0},
    }
    systems = [
        ("jobwheel/SQLite", "embedded"),
        ("huey/SQLite", "embedded"),
        ("arq", "server"),
        ("dramatiq", "server"),
        ("grpc.aio echo", "baseline"),
    ]
    text = table.render(systems, medians)
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()[2:]
    }
    assert rows["jobwheel/SQLite"] == ["3,000", "-", "-", "5.0/20 (0 early)"]
    assert rows["jobwheel/SQLite vs huey/SQLite"] == ["1.50x", "-", "-", "50.00x"]
    assert rows["jobwheel/SQLite vs arq / dramatiq"] == ["0.50x", "-", "-", "-"]  # best: dramatiq
    assert rows["jobwheel/SQLite vs grpc.aio echo"] == ["0.75x", "-", "-", "-"]
    assert rows["arq"] == ["1,000", "-", "-", "-"]
    assert len(text.splitlines()) == 2 + len(systems) + 3


def test_failed_and_missed_cells() -> None:
    assert table.cell("w1", {"rate": math.nan}) == "failed"
    assert table.cell("w4", {"p50": 1.0, "p99": 900.0, "early": 2.0, "missed": 3.0}) == (
        "1.0/900 (2 early, 3 missed)"
    )
    assert table.cell("w4", {"p50": 0.34, "p99": 0.96, "early": 0.0}) == "0.3/1.0 (0 early)"
    assert table.ratio("w2", {"rate": 5.0}, []) == "-"


def test_quick_sizes_are_small() -> None:
    from bench.peers.main import QUICK

    full = Sizes()
    assert QUICK.enqueues < full.enqueues and QUICK.drained < full.drained
    assert (full.enqueues, full.batched, full.batch, full.drained, full.fires) == (
        20_000,
        100_000,
        1_000,
        20_000,
        2_000,
    )


def test_command_line_defaults() -> None:
    from bench.peers.main import parse

    quick, full = parse(["--quick"]), parse(["--rounds", "5", "--only", "huey"])
    assert (quick.rounds, quick.timeout) == (1, 180)
    assert (full.rounds, full.timeout, full.only) == (5, 900, ["huey"])
    assert parse([]).rounds == 3
