"""A serving process's collector settings: what was alive at start-up leaves the collector's
walks, and young collections run further apart."""

from __future__ import annotations

import gc

from jobwheel.server import collector


def test_tuning_for_serving_freezes_the_start_up_heap_and_spaces_young_collections() -> None:
    before = gc.get_threshold()
    try:
        collector.tune_for_serving()
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
