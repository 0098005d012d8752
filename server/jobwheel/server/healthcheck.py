"""`python -m jobwheel.server.healthcheck`: exit 0 when the local server reports SERVING.

For container health checks: it asks the address in JOBWHEEL_LISTEN (as the server does), with
a wildcard host (0.0.0.0, [::]) asked on loopback.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobwheel.server.config import DEFAULT_LISTEN

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def target(listen: str) -> str:
    """The address to ask for a server listening on `listen` (HOST:PORT)."""
    host, _, port = listen.rpartition(":")
    return f"{_WILDCARDS.get(host, host)}:{port}"


def main(timeout: float = 2.0) -> int:
    address = target(os.environ.get("JOBWHEEL_LISTEN", DEFAULT_LISTEN))
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as err:
            print(f"{address}: {err.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
