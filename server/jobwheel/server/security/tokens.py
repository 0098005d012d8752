"""The tokens file: named bearer tokens with a role and optional queues, stored as hashes.

    [[token]]
    name = "ci"
    role = "producer"
    queues = ["emails"]          # optional; absent means every queue
    sha256 = "9f86d08..."        # hex SHA-256 of the token; the token itself is never stored

    [[certificate]]              # with --tls-client-ca: a client certificate's principal
    subject = "CN=billing-worker"  # the subject as the server logs it (RFC 4514 form)
    role = "worker"
    queues = ["billing"]         # optional

The file is re-read when it changes (checked on each call: one stat), so tokens are added and
revoked without a restart. A file that does not exist (yet, or any more) holds no tokens; one
that no longer parses keeps the previous tokens in force and logs an error. Tokens are
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from jobwheel.server.security.principal import Principal
from jobwheel.server.security.roles import Role, parse_role

log = logging.getLogger(__name__)
PREFIX = "jw_"
NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
QUEUE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_SUBJECT = 1024
MISSING = (-1, -1, -1, -1)


class TokensFileError(ValueError):
    """The tokens file cannot be read or does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class Entry:
    digest: bytes
    principal: Principal


@dataclass(frozen=True, slots=True)
class Principals:
    """What a tokens file holds: its tokens, and client certificates by subject."""

    tokens: list[Entry]
    certificates: dict[str, Principal]


def digest(token: str) -> str:
    """The hex SHA-256 of a token, as the tokens file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token: "jw_" + 43 URL-safe characters (256 bits)."""
    return PREFIX + secrets.token_urlsafe(32)


def _queues(value: object, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(q, str) for q in value):
        raise TokensFileError(f"{where}: queues must be a non-empty list of queue names")
    for q in value:
        if not QUEUE.fullmatch(q):
            raise TokensFileError(f"{where}: invalid queue name {q!r}")
    return frozenset(value)


def _tables(doc: dict[str, object], key: str, source: str) -> list[dict[str, object]]:
    items = doc.get(key, [])
    if not isinstance(items, list):
        raise TokensFileError(f"{source}: {key!r} must be an array of tables ([[{key}]])")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TokensFileError(f"{source}: {key}[{i}]: must be a table")
    return items


def _role(item: dict[str, object], where: str) -> Role:
    role = item.get("role")
    try:
        return parse_role(role if isinstance(role, str) else "")
    except ValueError as exc:
        raise TokensFileError(f"{where}: {exc}") from None


def _unknown(item: dict[str, object], allowed: set[str], where: str) -> None:
    unknown = set(item) - allowed
    if unknown:
        raise TokensFileError(f"{where}: unknown keys {sorted(unknown)}")


def parse(text: str, source: str = "tokens file") -> Principals:
    """The tokens and certificates of a tokens file; TokensFileError naming the bad entry
    otherwise."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TokensFileError(f"{source}: {exc}") from None
    unknown = set(doc) - {"token", "certificate"}
    if unknown:
        raise TokensFileError(f"{source}: unknown tables {sorted(unknown)}")
    entries, names = [], set()
    for i, item in enumerate(_tables(doc, "token", source)):
        where = f"{source}: token[{i}]"
        _unknown(item, {"name", "role", "queues", "sha256"}, where)
        name, hexdigest = item.get("name"), item.get("sha256")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise TokensFileError(f"{where}: name must be 1-128 of letters, digits, _.:@-")
        if name in names:
            raise TokensFileError(f"{where}: name {name!r} is used twice")
        names.add(name)
        role = _role(item, where)
        if not isinstance(hexdigest, str) or not HEX64.fullmatch(hexdigest):
            raise TokensFileError(f"{where}: sha256 must be 64 lower-case hex digits")
        principal = Principal(name, role, _queues(item.get("queues"), where))
        entries.append(Entry(bytes.fromhex(hexdigest), principal))
    certificates: dict[str, Principal] = {}
    for i, item in enumerate(_tables(doc, "certificate", source)):
        where = f"{source}: certificate[{i}]"
        _unknown(item, {"subject", "role", "queues"}, where)
        subject = item.get("subject")
        if (
            not isinstance(subject, str)
            or not 0 < len(subject) <= MAX_SUBJECT
            or not subject.isprintable()
        ):
            raise TokensFileError(f"{where}: subject must be 1-{MAX_SUBJECT} printable characters")
        if subject in certificates:
            raise TokensFileError(f"{where}: subject {subject!r} is listed twice")
        role = _role(item, where)
        certificates[subject] = Principal(subject, role, _queues(item.get("queues"), where))
    return Principals(entries, certificates)


def entry_text(name: str, role: Role, queues: Iterable[str], token: str) -> str:
    """The TOML of one entry, as `token create` appends it."""
    # JSON's string escapes are TOML's: whatever the name holds, it stays one string
    lines = ["", "[[token]]", f"name = {json.dumps(name)}", f'role = "{role.value}"']
    queue_list = list(queues)
    if queue_list:
        lines.append("queues = [" + ", ".join(json.dumps(q) for q in queue_list) + "]")
    lines.append(f'sha256 = "{digest(token)}"')
    return "\n".join(lines) + "\n"


class TokensFile:
    """The tokens of one file, re-read when the file changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int, int] | None = None
        self._entries: list[Entry] = []
        self._certificates: dict[str, Principal] = {}
        if not self.path.exists():
            # fail closed: no token is valid until the file appears (`token create` makes it)
            log.warning("tokens file %s does not exist yet: no token is accepted", self.path)
            self._stamp = MISSING
            return
        self.refresh(strict=True)

    def _current_stamp(self) -> tuple[int, int, int, int]:
        # the change time too: a program can set the modification time back (or write twice
        # within one tick of the clock), not the change time
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)

    def refresh(self, strict: bool = False) -> None:
        """Re-reads the file if it changed. `strict`: raise instead of keeping the old tokens."""
        stamp = MISSING
        try:
            try:
                stamp = self._current_stamp()
            except FileNotFoundError:
                if self._stamp != MISSING and not strict:
                    log.warning("tokens file %s was removed: no token is accepted", self.path)
                    self._stamp, self._entries, self._certificates = MISSING, [], {}
                    return
                raise
            if stamp == self._stamp:
                return
            parsed = parse(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, TokensFileError) as exc:
            if strict:
                raise TokensFileError(str(exc)) from None
            if stamp != self._stamp:  # log once per bad version of the file
                log.error("tokens file not reloaded, the previous tokens stay in force: %s", exc)
            self._stamp = stamp
            return
        self._stamp = stamp
        self._entries, self._certificates = parsed.tokens, parsed.certificates
        log.info(
            "tokens file %s: %d tokens, %d certificates",
            self.path,
            len(parsed.tokens),
            len(parsed.certificates),
        )

    def lookup(self, token: str) -> Principal | None:
        """The principal of `token`, or None. Every entry is compared, in constant time."""
        self.refresh()
        presented = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, presented):
                found = entry.principal
        return found

    def certificate(self, subject: str) -> Principal | None:
        """The principal the file gives a client certificate's subject, or None."""
        self.refresh()
        return self._certificates.get(subject)
