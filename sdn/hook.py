"""The isolation hook: a gateway host sink that turns host verdicts into block / unblock calls on the controller's
isolation API (standard library only, so a gateway needs nothing more).

Every verdict becomes a call with its own idempotency key, appended to a durable queue (SQLite) before anything
is sent; a delivery thread sends queued calls on its own timer (also while the gateway is idle) and as soon as a
verdict arrives. The API records the answer to each key, so a call sent again after a crash (delivered, not yet
dequeued) is answered from that record and applied exactly once. Delivery rules:

* the controller unreachable: every call waits (exponential backoff up to ``max_backoff``); nothing is lost;
* an answer that may change (5xx, 408, 429): that call is retried with backoff, up to ``max_attempts`` answers;
* a circuit-breaker refusal (403 with ``retry_after``): retried once the breaker's window has passed (no block
  call is sent before then), for at most ``max_age`` seconds after the verdict;
* any other refusal (400 bad input, 403 allowlisted or never-blocked address, 404) is final.

A call that fails for good (a final refusal, ``max_attempts`` answers that may change, or older than ``max_age``)
is moved to the dead-letter table with its last answer: it never holds up later calls. Calls for one host keep
their order (a later call for a host waits behind an earlier one still being retried); other hosts go ahead.
``dry_run`` only logs what it would call.

    python -m gateway serve --bundle B --source S --host-sink 'sdn:http://127.0.0.1:8470?ttl=300&queue=q.sqlite'
    python -m sdn.hook --queue q.sqlite --status      # pending calls and the dead-letter table, as JSON

Options in the query: ``queue`` the queue file (its folder must exist; default ``isolation-queue.sqlite``),
``ttl`` seconds for blocks (a finite number > 0), ``dry_run=1``, ``max_attempts`` (default 5), ``max_age`` seconds
(default 3600), ``interval`` seconds between delivery rounds (default 1), ``timeout`` seconds per call (default 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from sdn.isolation import check_ttl

log = logging.getLogger("sdn.hook")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the controller is local: no proxy
RETRY_CODES = {408, 429}  # besides 5xx: answers that may change
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


class IsolationHook:
    """Host sink (``emit``/``close``) delivering verdicts to ``url``; see the module docstring."""

    def __init__(self, url: str, queue_path: str | Path = "isolation-queue.sqlite", *, ttl: float | None = None,
                 dry_run: bool = False, timeout: float = 2.0, backoff: float = 0.5, max_backoff: float = 30.0,
                 max_attempts: int = 5, max_age: float = 3600.0, interval: float | None = 1.0,
                 clock=time.time) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.ttl, self.dry_run, self.timeout = ttl, dry_run, timeout
        self.backoff, self.max_backoff, self.clock = backoff, max_backoff, clock
        self.max_attempts, self.max_age = max_attempts, max_age
        self._delay = 0.0
        self._unreachable_until = 0.0
        self._breaker_until = 0.0
        self.counts: Counter = Counter()  # this process's calls: queued, delivered, retried, dead_letter
        self._lock = threading.RLock()  # the database connection
        self._flushing = threading.Lock()  # one delivery round at a time
        self._closed_summary: dict | None = None
        self._db = open_queue(queue_path)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = None
        if interval is not None and not dry_run:
            self._thread = threading.Thread(target=self._deliver_loop, args=(interval,), name="isolation-hook",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    # ---- the sink interface of gateway.serve -------------------------------------------------------------
    def emit(self, verdict) -> None:
        """Queue the call for a host verdict (``isolate`` -> block, ``release`` -> unblock); delivery is woken."""
        if verdict.action == "isolate":
            share = verdict.malicious / max(verdict.flows, 1)
            call = {"method": "POST", "path": "/blocks", "body": {
                "ip": verdict.host, "ttl": self.ttl,
                "reason": f"gateway: {verdict.malicious} of {verdict.flows} flows malicious ({share:.0%})"}}  # fmt: skip
        else:
            call = {"method": "DELETE", "path": f"/blocks/{quote(verdict.host, safe='')}", "body": None}
        if self.dry_run:
            log.info("dry run: would call %s %s %s", call["method"], call["path"], call["body"] or "")
            return
        with self._lock:
            self._db.execute("INSERT INTO pending (key, host, call, created) VALUES (?, ?, ?, ?)",
                             (uuid.uuid4().hex, verdict.host, json.dumps(call), self.clock()))  # fmt: skip
            self.counts["queued"] += 1
        if self._thread is None:
            self.flush()
        else:
            self._wake.set()

    def close(self) -> None:
        """Stop the delivery thread, try the queued calls once more (for at most twice the call timeout), report
        what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout * 3 + 5)
        if not self.dry_run:
            self.flush(force=True, deadline=time.monotonic() + 2 * self.timeout)
            left, dead = self.pending(), self.dead_letters()
            if left:
                log.warning("%d isolation call(s) still queued; they are delivered by the next run", left)
            if dead:
                log.warning("%d isolation call(s) in the dead-letter table (python -m sdn.hook --status)", len(dead))
        with self._lock:
            self._closed_summary = self.summary()
            self._db.close()

    def summary(self) -> dict:
        """This run's figures for the gateway's summary: calls queued, delivered, retried, dead-lettered, left
        (after :meth:`close`: as they were when it closed)."""
        if self._closed_summary is not None:
            return self._closed_summary
        with self._lock:
            pending = self.pending() if not self.dry_run else 0
            dead = int(self._db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0])
        return {"queued": self.counts["queued"], "delivered": self.counts["delivered"],
                "retried": self.counts["retried"], "dead_letter_new": self.counts["dead_letter"],
                "dead_letter_total": dead, "pending": pending}  # fmt: skip

    # ---- state -------------------------------------------------------------------------------------------
    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def dead_letters(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(FIELDS)}, moved FROM dead_letter ORDER BY moved, id").fetchall()
        return [dict(zip((*FIELDS, "moved"), row)) | {"call": json.loads(row[3])} for row in rows]

    def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            if self._thread is None:
                self.flush()
            self._wake.set()
            time.sleep(0.02)
        return True

    # ---- delivery ------------------------------------------------------------------------------------------
    def _deliver_loop(self, interval: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self.flush() and not self._stop.is_set():
                    pass
            except sqlite3.Error as err:  # the queue file went away under us: say so, keep the thread
                log.error("isolation queue: %s", err)

    def flush(self, force: bool = False, deadline: float | None = None) -> int:
        """One delivery round over the queue (see the module docstring); returns how many calls were delivered.
        ``force`` ignores the waits (transport backoff, breaker window, per-call retry times); the round ends early
        at ``deadline`` (``time.monotonic()``) or, unless forced, when the hook is closing."""
        with self._flushing:
            now = self.clock()
            if not force and now < self._unreachable_until:
                return 0
            with self._lock:
                rows = self._db.execute(f"SELECT {', '.join(FIELDS)} FROM pending ORDER BY id").fetchall()
            waiting: set[str] = set()  # hosts with an earlier call still queued: their later calls wait
            sent = 0
            for row in rows:
                if (self._stop.is_set() and not force) or (deadline is not None and time.monotonic() > deadline):
                    break
                entry = dict(zip(FIELDS, row))
                host, call = entry["host"], json.loads(entry["call"])
                if host in waiting:
                    continue
                if not force and (entry["next_at"] > now or (call["method"] == "POST" and now < self._breaker_until)):
                    waiting.add(host)
                    continue
                try:
                    code, answer = self._request(call, entry["key"])
                except (urllib.error.URLError, OSError, TimeoutError, ValueError) as err:
                    self._delay = min(max(self._delay * 2, self.backoff), self.max_backoff)
                    self._unreachable_until = self.clock() + self._delay
                    log.warning("controller unreachable (%s); %d call(s) queued, next try in %.1f s", err,
                                len(rows) - sent, self._delay)  # fmt: skip
                    return sent
                self._delay = 0.0
                if code < 400:
                    with self._lock:
                        self._db.execute("DELETE FROM pending WHERE id = ?", (entry["id"],))
                    self.counts["delivered"] += 1
                    sent += 1
                    continue
                reason = str(answer.get("reason", ""))[:500]
                retry_after = answer.get("retry_after")
                retryable = code >= 500 or code in RETRY_CODES
                breaker = code == 403 and isinstance(retry_after, (int, float)) and math.isfinite(retry_after)
                too_old = self.clock() - entry["created"] > self.max_age
                attempts = entry["attempts"] + (1 if retryable else 0)
                if (retryable and attempts < self.max_attempts and not too_old) or (breaker and not too_old):
                    wait = max(float(retry_after), 0.05) if breaker else \
                        min(self.backoff * 2 ** (attempts - 1), self.max_backoff)  # fmt: skip
                    if breaker:
                        self._breaker_until = self.clock() + wait
                    with self._lock:
                        self._db.execute("UPDATE pending SET attempts = ?, next_at = ?, code = ?, reason = ? "
                                         "WHERE id = ?", (attempts, self.clock() + wait, code, reason, entry["id"]))
                    self.counts["retried"] += 1
                    waiting.add(host)
                    log.warning("controller answered %d to %s %s (%s); retry in %.1f s", code, call["method"],
                                call["path"], reason, wait)  # fmt: skip
                    continue
                self._dead_letter(entry, attempts, code, reason)
            return sent

    def _dead_letter(self, entry: dict, attempts: int, code: int, reason: str) -> None:
        with self._lock:
            self._move(entry, attempts, code, reason)
        self.counts["dead_letter"] += 1
        log.warning("isolation call %s for %s moved to the dead-letter table: %d %s", entry["id"], entry["host"],
                    code, reason)  # fmt: skip

    def _move(self, entry: dict, attempts: int, code: int, reason: str) -> None:
        self._db.execute("BEGIN")
        self._db.execute(f"INSERT INTO dead_letter ({', '.join(FIELDS)}, moved) VALUES ({', '.join('?' * 10)})",
                         (entry["id"], entry["key"], entry["host"], entry["call"], entry["created"], attempts,
                          entry["next_at"], code, reason, self.clock()))  # fmt: skip
        self._db.execute("DELETE FROM pending WHERE id = ?", (entry["id"],))
        self._db.execute("COMMIT")

    def _request(self, call: dict, key: str) -> tuple[int, dict]:
        data = None if call["body"] is None else json.dumps(call["body"]).encode()
        request = urllib.request.Request(self.url + call["path"], data=data, method=call["method"],
                                         headers={"Content-Type": "application/json", "Idempotency-Key": key})
        try:
            with NO_PROXY.open(request, timeout=self.timeout) as response:
                return response.status, _json_object(response.read())
        except urllib.error.HTTPError as err:  # an answer, not a transport failure
            try:
                return err.code, _json_object(err.read())
            except ValueError:
                return err.code, {"reason": str(err)}


def _json_object(data: bytes) -> dict:
    value = json.loads(data or b"{}")
    if not isinstance(value, dict):
        raise ValueError(f"the controller answered {type(value).__name__}, not a JSON object")
    return value


SPEC_OPTIONS = ("queue", "ttl", "dry_run", "max_attempts", "max_age", "interval", "timeout")


def _number(name: str, text: str, *, integer: bool = False) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise ValueError(f"host sink sdn: {name}={text!r} is not {'an integer' if integer else 'a number'}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"host sink sdn: {name} must be a finite number > 0, got {text!r}")
    return value


def hook_from_spec(spec: str) -> IsolationHook:
    """``http://HOST:PORT[?queue=PATH&ttl=SECONDS&dry_run=1&...]`` -> a hook (the gateway's ``sdn:`` host sink);
    ValueError naming the option when the spec is wrong."""
    parts = urlsplit(spec)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"host sink sdn needs the isolation API's URL, e.g. sdn:http://127.0.0.1:8470; got {spec!r}")
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(options) - set(SPEC_OPTIONS)
    if unknown:
        raise ValueError(f"host sink sdn: unknown option(s) {', '.join(sorted(unknown))}; accepted: "
                         f"{', '.join(SPEC_OPTIONS)}")  # fmt: skip
    ttl = None
    if "ttl" in options:
        try:
            ttl = check_ttl(_number("ttl", options["ttl"]))
        except ValueError as err:
            raise ValueError(f"host sink sdn: {str(err).removeprefix('host sink sdn: ')}") from None
    dry = options.get("dry_run", "0").lower()
    if dry not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"host sink sdn: dry_run must be 0 or 1, got {options['dry_run']!r}")
    return IsolationHook(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
                         options.get("queue", "isolation-queue.sqlite"), ttl=ttl, dry_run=dry in ("1", "true", "yes"),
                         max_attempts=int(_number("max_attempts", options.get("max_attempts", "5"), integer=True)),
                         max_age=_number("max_age", options.get("max_age", "3600")),
                         interval=_number("interval", options.get("interval", "1")),
                         timeout=_number("timeout", options.get("timeout", "2")))  # fmt: skip


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdn.hook", description="Inspect an isolation hook's queue.")
    parser.add_argument("--queue", required=True, help="the queue file (the sink's queue option)")
    parser.add_argument("--status", action="store_true", help="print pending calls and the dead-letter table")
    args = parser.parse_args(argv)
    if not Path(args.queue).is_file():
        print(f"error: no queue file {args.queue}", file=sys.stderr)
        return 2
    try:
        report = status(args.queue)
    except QueueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
