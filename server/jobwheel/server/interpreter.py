"""The interpreter's settings for a serving process: the cyclic garbage collector's and the
GIL's.

The collector: at Python's defaults a young collection runs every 700 net allocations, and
every hundred or so of those a full one walks every tracked object: the modules, SQLAlchemy's
and gRPC's structures, the jobs in memory. A busy dispatcher allocates dozens of objects per
attempt, so collections cost about 20 µs of CPU per no-op job there (about a tenth of it;
measured with gc.callbacks in bench's drain). Reference counting frees nearly all the engine
makes; the collector is only for cycles, which can wait longer. A 1,000-job BatchEnqueueJobs
allocates tens of thousands of objects that live for the call: the young generation holds a
call's worth, so they die young instead of being promoted into full collections (60+ ms
each).

The GIL: under load the event loop's thread holds it nearly all the time. The threads that
work for the loop (SQLite's driver threads, the write-ahead log's checkpointer, gRPC's) need
it for a moment at the end of each piece of work, to hand the result back; such a thread asks
the holder to let go and waits up to the switch interval for it, 5 ms at Python's default,
longer than most SQLite writes take. Meanwhile a group commit's callers wait, and the writer
idles. SWITCH_INTERVAL_S bounds that wait.
"""

from __future__ import annotations

import gc
import sys

# net allocations between young collections (Python's default: 700)
YOUNG_THRESHOLD = 50_000
# seconds a thread that wants the GIL waits for its holder to let go (Python's default: 0.005)
SWITCH_INTERVAL_S = 0.0002


def tune_for_serving() -> None:
    """Call once the server has started: what is alive then (imports, configuration, the
    engine's long-lived objects) lives as long as the process and leaves the collector's
    walks (gc.freeze); young collections run YOUNG_THRESHOLD allocations apart; the GIL
    switches at most SWITCH_INTERVAL_S apart."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
