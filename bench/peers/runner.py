"""One workload of one system, once: `python -m bench.peers.runner JSON` in the system's venv.

JSON: {"adapter": name, "workload": "w1".."w4", "sizes": {...}, "env": {...}}. The last line
printed is `RESULT {...}` (bench.peers.spec.Result).
"""

from __future__ import annotations

import json
import sys

from bench.peers import by_name
from bench.peers.spec import Env, Sizes


def main(arg: str) -> None:
    spec = json.loads(arg)
    adapter = by_name(spec["adapter"])
    result = adapter.hooks[spec["workload"]](Sizes(**spec["sizes"]), Env(**spec["env"]))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
