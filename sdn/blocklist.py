"""Durable host blocks (SQLite, standard library only): what the controller must enforce, kept across restarts.

A block is one IPv4/IPv6 address with a reason, its creation time and an optional expiry. The store is the source
of truth: on a switch (re)connect or a controller restart every active block is installed again, and expired
ones are removed from the store when the controller's timer lifts them. The store also keeps the outcome of every
call that carried an idempotency key, so that a call sent again (a client that crashed before it saw the answer)
is answered from the record instead of being applied twice.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    ip TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL              -- NULL: until unblocked
);
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,     -- the client's idempotency key
    answer TEXT NOT NULL,     -- the outcome (JSON) the first call got
    at REAL NOT NULL
);
"""
KEEP_REQUESTS = 7 * 86400.0  # seconds an idempotency key is remembered


@dataclass(frozen=True)
class Block:
    ip: str
    reason: str
    created: float
    expires: float | None = None

    def as_dict(self) -> dict:
        return {"ip": self.ip, "reason": self.reason, "created": self.created, "expires": self.expires}


def canonical_ip(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address ``value`` names, IPv4-mapped IPv6 (``::ffff:10.0.0.1``) folded to IPv4; ValueError naming the
    value if it is not a plain address (a string; no scope such as ``%eth0``, no prefix length)."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"not an IP address: {str(value)[:80]!r} (expected a string such as 10.0.0.5 or 2001:db8::5)")
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(f"not an IP address: {value!r} (expected a string such as 10.0.0.5 or 2001:db8::5)") from None
    if address.version == 6 and address.scope_id:
        raise ValueError(f"scoped IPv6 address {value!r} refused: a switch rule cannot match a scope; give the address "
                         "without %zone")  # fmt: skip
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise_ip(value: object) -> str:
    """The canonical text of an IP address (see :func:`canonical_ip`)."""
    return str(canonical_ip(value))


class BlockStore:
    """Blocks in an SQLite file (``:memory:`` for tests); safe to use from the controller's threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL" if self.path != ":memory:" else "PRAGMA journal_mode=MEMORY")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a controller crash, one fsync less
        self._db.executescript(SCHEMA)

    def get(self, ip: str) -> Block | None:
        with self._lock:
            row = self._db.execute("SELECT ip, reason, created, expires FROM blocks WHERE ip = ?",
                                   (normalise_ip(ip),)).fetchone()  # fmt: skip
        return Block(*row) if row else None

    def add(self, block: Block) -> bool:
        """Store ``block``; False (nothing changed) if its address is already blocked."""
        with self._lock:
            cursor = self._db.execute("INSERT OR IGNORE INTO blocks (ip, reason, created, expires) VALUES (?, ?, ?, ?)",
                                      (normalise_ip(block.ip), block.reason, block.created, block.expires))  # fmt: skip
        return cursor.rowcount == 1

    def remove(self, ip: str) -> bool:
        """Forget the block of ``ip``; False if there was none."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM blocks WHERE ip = ?", (normalise_ip(ip),))
        return cursor.rowcount == 1

    def active(self, now: float) -> list[Block]:
        with self._lock:
            rows = self._db.execute("SELECT ip, reason, created, expires FROM blocks WHERE expires IS NULL OR "
                                    "expires > ? ORDER BY created, ip", (now,)).fetchall()  # fmt: skip
        return [Block(*row) for row in rows]

    def expired(self, now: float) -> list[Block]:
        with self._lock:
            rows = self._db.execute("SELECT ip, reason, created, expires FROM blocks WHERE expires IS NOT NULL AND "
                                    "expires <= ? ORDER BY expires, ip", (now,)).fetchall()  # fmt: skip
        return [Block(*row) for row in rows]

    def created_since(self, since: float) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM blocks WHERE created >= ?", (since,)).fetchone()[0])

    def answer_for(self, key: str) -> str | None:
        """The recorded outcome (JSON text) of the call with idempotency key ``key``, if there was one."""
        with self._lock:
            row = self._db.execute("SELECT answer FROM requests WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def record_answer(self, key: str, answer: str, now: float) -> None:
        """Remember the outcome of the call with idempotency key ``key`` (and forget keys older than a week)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO requests (key, answer, at) VALUES (?, ?, ?)", (key, answer, now))
            self._db.execute("DELETE FROM requests WHERE at < ?", (now - KEEP_REQUESTS,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
