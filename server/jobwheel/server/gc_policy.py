"""The garbage collector's settings for a server that allocates in bursts.

A 1,000-job BatchEnqueueJobs allocates tens of thousands of objects that live for the call.
With the default thresholds (a collection every 700 allocations) most of them live through
two young collections, are promoted to the oldest generation, and every few such calls a
full collection traces the whole heap (60+ ms with a few hundred thousand start-up objects):
~10% of the call's CPU. Here start-up objects are frozen out of collections, and the young
generation holds a call's worth before it is collected, so a call's objects die young.
"""

from __future__ import annotations

import gc

# objects allocated (net) before a young collection; Python's default is 700
YOUNG_THRESHOLD = 50_000


def after_start() -> None:
    """Applies the settings above; call once, when the server has started (what start-up
    built lives as long as the process)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
