"""A serving process's interpreter settings: what was alive at start-up leaves the collector's
walks, young collections run further apart, and the GIL changes hands sooner."""

from __future__ import annotations

import gc
import sys

import pytest
from jobwheel.server import interpreter


def test_tuning_for_serving_freezes_the_start_up_heap_and_spaces_young_collections() -> None:
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        interpreter.tune_for_serving()
        assert gc.get_threshold() == (interpreter.YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
        assert sys.getswitchinterval() == pytest.approx(interpreter.SWITCH_INTERVAL_S)
        assert interval > interpreter.SWITCH_INTERVAL_S
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        sys.setswitchinterval(interval)
