"""HttpTarget and URL validation (HTTP jobs and event subscriptions)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from jobwheel.server import model
from jobwheel.server.api.errors import quote
from jobwheel.server.api.fields import Violations, check_text
from jobwheel.v1 import job_pb2

MAX_URL = 2048
MAX_HEADERS = 64
MAX_HEADER_VALUE = 8192
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


def check_http_url(url: str, field: str, errors: Violations) -> None:
    """An absolute http(s) URL of at most MAX_URL characters, no spaces or control characters."""
    if not check_text(url, field, errors, max_chars=MAX_URL, identifier=True, required=True):
        return
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url
        port = parts.port  # ValueError past 65535, or not a number
    except ValueError:
        ok, port = False, None
    if not ok:
        errors.add(field, "must be an absolute http or https URL")
    elif port == 0:
        errors.add(field, "port must be from 1 to 65535")


def http_from_proto(h: job_pb2.HttpTarget, prefix: str, errors: Violations) -> model.HttpTarget:
    """The target, method upper-cased ("POST" if empty); every bad part is a violation."""
    check_http_url(h.url, f"{prefix}.url", errors)
    method = (h.method or "POST").upper()
    if method not in HTTP_METHODS:
        errors.add(f"{prefix}.method", f"must be one of {', '.join(sorted(HTTP_METHODS))}")
    if len(h.headers) > MAX_HEADERS:
        errors.add(f"{prefix}.headers", f"at most {MAX_HEADERS} headers")
    for name, value in h.headers.items():
        field = f"{prefix}.headers[{_header(name)}]"
        if not HEADER_NAME_RE.match(name):
            errors.add(field, "name must be 1-256 characters of an HTTP token")
        elif name.lower() in FORBIDDEN_HEADERS:
            errors.add(field, "this header may not be set")
        check_text(value, field, errors, max_chars=MAX_HEADER_VALUE, identifier=True)
    return model.HttpTarget(url=h.url, method=method, headers=dict(h.headers))


def _header(name: str) -> str:
    """A header name as it appears in a field path: itself, or quoted and cut if unwieldy."""
    return name if len(name) <= 40 and name.isprintable() else quote(name, 20)
