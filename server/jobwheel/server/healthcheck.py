"""`python -m jobwheel.server.healthcheck`: exit 0 when the local server reports SERVING.

For container health checks: it asks the address in JOBWHEEL_LISTEN (as the server does), with
a wildcard host (0.0.0.0, [::]) asked on loopback. When the server serves TLS
(JOBWHEEL_TLS_CERT), so does the check: it trusts JOBWHEEL_TLS_CA if set, else the server's own
certificate chain, and expects the certificate's first name whatever address it asks; under
mutual TLS (JOBWHEEL_TLS_CLIENT_CA) it presents the server's own certificate and key, which a
CA the server accepts for clients must then have issued. It reads only those variables: a
server given its address or TLS files by flags needs a health command of its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobwheel.server.config import DEFAULT_LISTEN

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def target(listen: str) -> str:
    """The address to ask for a server listening on `listen` (HOST:PORT)."""
    host, _, port = listen.rpartition(":")
    return f"{_WILDCARDS.get(host, host)}:{port}"


def certificate_name(chain: bytes) -> str:
    """The first name the leaf certificate of PEM `chain` is for: a DNS name, else an IP
    address, else its common name ('' without any)."""
    leaf = x509.load_pem_x509_certificate(chain)
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    if names is not None:
        for kind in (x509.DNSName, x509.IPAddress):
            found = names.get_values_for_type(kind)
            if found:
                value = found[0]
                return value if isinstance(value, str) else str(value)
    common = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(common[0].value) if common else ""


def channel(address: str, env: Mapping[str, str]) -> grpc.Channel:
    """A channel to `address`, with TLS as the server's settings in `env` call for."""
    cert = env.get("JOBWHEEL_TLS_CERT")
    if not cert:
        return grpc.insecure_channel(address)
    chain = Path(cert).read_bytes()
    ca = env.get("JOBWHEEL_TLS_CA")
    roots = Path(ca).read_bytes() if ca else chain
    key = chain_for_client = None
    if env.get("JOBWHEEL_TLS_CLIENT_CA"):
        key_file = env.get("JOBWHEEL_TLS_KEY")
        if not key_file:  # the server's key came by a flag: nothing to present
            raise ValueError("JOBWHEEL_TLS_KEY is not set: under mutual TLS the check presents it")
        key, chain_for_client = Path(key_file).read_bytes(), chain
    credentials = grpc.ssl_channel_credentials(roots, key, chain_for_client)
    options = []
    if name := certificate_name(chain):
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.secure_channel(address, credentials, options)


def main(timeout: float = 2.0, env: Mapping[str, str] = os.environ) -> int:
    address = target(env.get("JOBWHEEL_LISTEN", DEFAULT_LISTEN))
    try:
        opened = channel(address, env)
    except (OSError, ValueError) as err:  # unreadable or malformed certificate files
        print(f"{address}: {err}", file=sys.stderr)
        return 1
    with opened:
        try:
            reply = health_pb2_grpc.HealthStub(opened).Check(
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
