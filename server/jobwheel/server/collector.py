"""The cyclic garbage collector's settings for a serving process.

At Python's defaults a young collection runs every 700 net allocations, and every hundred or
so of those a full one walks every tracked object: the modules, SQLAlchemy's and gRPC's
structures, the jobs in memory. A busy dispatcher allocates dozens of objects per attempt, so
collections cost about 20 µs of CPU per no-op job there (about a tenth of it; measured with
gc.callbacks in bench's drain). Reference counting frees nearly all the engine makes; the
collector is only for cycles, which can wait longer. A 1,000-job BatchEnqueueJobs allocates
tens of thousands of objects that live for the call: the young generation holds a call's
worth, so they die young instead of being promoted into full collections (60+ ms each).
"""

from __future__ import annotations

import gc

# net allocations between young collections (Python's default: 700)
YOUNG_THRESHOLD = 50_000


def tune_for_serving() -> None:
    """Call once the server has started: what is alive then (imports, configuration, the
    engine's long-lived objects) lives as long as the process and leaves the collector's
    walks (gc.freeze); young collections run YOUNG_THRESHOLD allocations apart."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
