"""The benchmarks' steal figure: the share of the machine's CPU time the host gave to other
guests, read from /proc/stat."""

from __future__ import annotations

import sys
import time

import pytest

from bench.cpu import StealMeter, _share, machine_steal_seconds


def test_share_is_steal_over_all_cpu_time_between_two_readings() -> None:
    assert _share((1.0, 100.0), (1.5, 102.0)) == pytest.approx(0.25)
    assert _share((1.0, 100.0), (1.0, 100.0)) == 0.0  # no time passed: no share


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_meter_reads_the_machine_counters() -> None:
    steal, total = machine_steal_seconds()
    assert 0.0 <= steal <= total
    assert total > 0.0
    with StealMeter(every=0.05) as meter:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:  # CPU time passes on this machine's counters
            pass
    assert 0.0 <= meter.average <= 1.0
    assert 0.0 <= meter.peak <= 1.0
    assert str(meter).startswith("CPU time taken by the host")
    later_steal, later_total = machine_steal_seconds()
    assert later_steal >= steal and later_total > total
