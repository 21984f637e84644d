"""The isolation hook's durable queue (SQLite, standard library only): pending calls and the dead-letter table,
the migration of a queue of the first schema, and what a queue file holds (``python -m sdn.hook --status``)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

COLUMNS = "id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, host TEXT NOT NULL, call TEXT NOT NULL, " \
          "created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0, code INTEGER, " \
          "reason TEXT"  # fmt: skip
SCHEMA = f"CREATE TABLE IF NOT EXISTS pending ({COLUMNS}); CREATE TABLE IF NOT EXISTS dead_letter ({COLUMNS}, " \
         "moved REAL NOT NULL);"  # fmt: skip
FIELDS = ("id", "key", "host", "call", "created", "attempts", "next_at", "code", "reason")


class QueueError(ValueError):
    """The queue file cannot be opened or is not a queue."""


def open_queue(path: str | Path) -> sqlite3.Connection:
    """The queue database at ``path`` (created if absent; a queue of the first schema is migrated)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise QueueError(f"isolation queue folder {path.parent} does not exist (queue file {path}); create it first")
    try:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")  # with synchronous NORMAL: durable across a crash of the gateway
        db.execute("PRAGMA synchronous=NORMAL")  # (not of the machine's power) without an fsync per verdict
        columns = [row[1] for row in db.execute("PRAGMA table_info(pending)")]
        if columns == ["id", "call"]:  # the first schema: one column of calls, no keys
            old = db.execute("SELECT call FROM pending ORDER BY id").fetchall()
            db.execute("ALTER TABLE pending RENAME TO pending_v1")
            db.executescript(SCHEMA)
            for (text,) in old:
                call = json.loads(text)
                host = call["body"]["ip"] if call["body"] else call["path"].rsplit("/", 1)[-1]
                db.execute("INSERT INTO pending (key, host, call, created) VALUES (?, ?, ?, ?)",
                           (uuid.uuid4().hex, host, text, time.time()))  # fmt: skip
            db.execute("DROP TABLE pending_v1")
        db.executescript(SCHEMA)
    except sqlite3.DatabaseError as err:
        raise QueueError(f"isolation queue {path}: {err}") from None
    return db


def status(queue_path: str | Path) -> dict:
    """What a queue file holds: pending calls and the dead-letter table."""
    db = open_queue(queue_path)
    try:
        pending = [dict(zip(FIELDS, row)) for row in
                   db.execute(f"SELECT {', '.join(FIELDS)} FROM pending ORDER BY id").fetchall()]  # fmt: skip
        dead = [dict(zip((*FIELDS, "moved"), row)) for row in
                db.execute(f"SELECT {', '.join(FIELDS)}, moved FROM dead_letter ORDER BY moved, id").fetchall()]  # fmt: skip
    finally:
        db.close()
    for entry in pending + dead:
        entry["call"] = json.loads(entry["call"])
    return {"queue": str(queue_path), "pending": len(pending), "dead_letter": len(dead), "pending_calls": pending,
            "dead_letter_calls": dead}  # fmt: skip
