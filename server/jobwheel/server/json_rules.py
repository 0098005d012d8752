"""The rules every stored JSON document keeps (payloads, results, progress), whoever wrote it:
the API checks requests against them, executors the results they bring back.

A document nests objects and arrays at most MAX_JSON_DEPTH deep, and no string or key holds
U+0000 (PostgreSQL cannot store it, SQLite's JSON functions stop at it).
"""

from __future__ import annotations

from typing import Any

# Objects and arrays inside one another, the document itself included. Python's protobuf
# refuses messages nested deeper than 100, and each JSON level costs up to three messages
# (Struct, map entry, Value) below the four above a payload in a WatchJobs batch
# (WatchJobsResponse > EventBatch > JobEvent > Job): 20 levels keep every client decoding.
MAX_JSON_DEPTH = 20
NUL = "\x00"
_CONTAINERS = (str, dict, list)

# (what is wrong, the path to it: keys, and "[i]" for list items)
Problem = tuple[str, tuple[str, ...]]


def json_problem(data: Any, depth: int = 0, path: tuple[str, ...] = ()) -> Problem | None:
    """The first break of the rules in the Python data of a JSON document, or None. Recursion
    stops at MAX_JSON_DEPTH, whatever the data's depth."""
    if isinstance(data, str):
        return ("holds the character U+0000", path) if NUL in data else None
    if not isinstance(data, dict | list):
        return None
    if depth >= MAX_JSON_DEPTH:
        return f"nests deeper than {MAX_JSON_DEPTH} levels", path
    items = enumerate(data) if isinstance(data, list) else data.items()
    for key, item in items:
        if isinstance(key, str) and NUL in key:
            return "has a key holding U+0000", path
        step = key if isinstance(key, str) else f"[{key}]"
        if isinstance(item, _CONTAINERS) and (
            found := json_problem(item, depth + 1, (*path, step))
        ):
            return found
    return None
