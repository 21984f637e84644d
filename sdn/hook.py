"""The isolation hook: a gateway host sink that turns host verdicts into block / unblock calls on the controller's
isolation API (standard library only, so a gateway needs nothing more).

Every verdict is first appended to a durable queue (SQLite), then delivered in order. While the controller is
unreachable the queue keeps growing and delivery is retried with exponential backoff; nothing is lost, and
since the API is idempotent a call repeated after a crash (delivered, not yet dequeued) changes nothing. A
refusal (allowlist, circuit breaker, bad input) is final: logged and dequeued, not retried. ``dry_run`` only
logs what it would call.

    python -m gateway serve --bundle B --source S --host-sink 'sdn:http://127.0.0.1:8470?ttl=300&queue=q.sqlite'

(options in the query: ``queue`` the queue file, default ``isolation-queue.sqlite``; ``ttl`` seconds for blocks;
``dry_run=1``.)
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger("sdn.hook")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the controller is local: no proxy
QUEUE_SCHEMA = "CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY AUTOINCREMENT, call TEXT NOT NULL)"


class IsolationHook:
    """Host sink (``emit``/``close``) delivering verdicts to ``url``; see the module docstring."""

    def __init__(self, url: str, queue_path: str | Path = "isolation-queue.sqlite", *, ttl: float | None = None,
                 dry_run: bool = False, timeout: float = 2.0, backoff: float = 0.5, max_backoff: float = 30.0,
                 clock=time.monotonic) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.ttl, self.dry_run, self.timeout = ttl, dry_run, timeout
        self.backoff, self.max_backoff, self.clock = backoff, max_backoff, clock
        self._delay = 0.0
        self._next_attempt = 0.0
        self.delivered: list[dict] = []  # this process's delivered calls and the API's answers (for reports)
        self.refused: list[dict] = []
        self._db = sqlite3.connect(str(queue_path), isolation_level=None)
        self._db.execute(QUEUE_SCHEMA)

    # ---- the sink interface of gateway.serve -------------------------------------------------------------
    def emit(self, verdict) -> None:
        """Queue the call for a host verdict (``isolate`` -> block, ``release`` -> unblock), then deliver."""
        if verdict.action == "isolate":
            share = verdict.malicious / max(verdict.flows, 1)
            call = {"method": "POST", "path": "/blocks", "body": {
                "ip": verdict.host, "ttl": self.ttl,
                "reason": f"gateway: {verdict.malicious} of {verdict.flows} flows malicious ({share:.0%})"}}  # fmt: skip
        else:
            call = {"method": "DELETE", "path": f"/blocks/{quote(verdict.host)}", "body": None}
        if self.dry_run:
            log.info("dry run: would call %s %s %s", call["method"], call["path"], call["body"] or "")
            return
        self._db.execute("INSERT INTO pending (call) VALUES (?)", (json.dumps(call),))
        self.flush()

    def close(self) -> None:
        if not self.dry_run:
            self.flush(force=True)
            left = self.pending()
            if left:
                log.warning("%d isolation call(s) still queued; they are delivered by the next run", left)
        self._db.close()

    # ---- delivery ------------------------------------------------------------------------------------------
    def pending(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def flush(self, force: bool = False) -> int:
        """Deliver queued calls in order until one fails to reach the controller; returns how many went out."""
        if not force and self.clock() < self._next_attempt:
            return 0
        sent = 0
        for row_id, text in self._db.execute("SELECT id, call FROM pending ORDER BY id").fetchall():
            call = json.loads(text)
            try:
                code, answer = self._request(call)
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                self._delay = min(max(self._delay * 2, self.backoff), self.max_backoff)
                self._next_attempt = self.clock() + self._delay
                log.warning("controller unreachable (%s); %d call(s) queued, next try in %.1f s", err,
                            self.pending(), self._delay)  # fmt: skip
                return sent
            if code >= 500:  # the controller is up but the switch did not confirm: retry later
                self._delay = min(max(self._delay * 2, self.backoff), self.max_backoff)
                self._next_attempt = self.clock() + self._delay
                log.warning("controller could not enforce %s: %s", call["path"], answer.get("reason"))
                return sent
            (self.delivered if code < 400 else self.refused).append({"call": call, "code": code, "answer": answer})
            if code >= 400:
                log.warning("controller refused %s %s: %s", call["method"], call["path"], answer.get("reason"))
            self._db.execute("DELETE FROM pending WHERE id = ?", (row_id,))
            self._delay = 0.0
            sent += 1
        return sent

    def _request(self, call: dict) -> tuple[int, dict]:
        data = None if call["body"] is None else json.dumps(call["body"]).encode()
        request = urllib.request.Request(self.url + call["path"], data=data, method=call["method"],
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with NO_PROXY.open(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:  # an answer, not a transport failure
            try:
                body = json.loads(err.read() or b"{}")
            except ValueError:
                body = {"reason": str(err)}
            return err.code, body


def hook_from_spec(spec: str) -> IsolationHook:
    """``http://HOST:PORT[?queue=PATH&ttl=SECONDS&dry_run=1]`` -> a hook (the gateway's ``sdn:`` host sink)."""
    from urllib.parse import parse_qs, urlsplit, urlunsplit

    parts = urlsplit(spec)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"host sink sdn needs the isolation API's URL, e.g. sdn:http://127.0.0.1:8470; got {spec!r}")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(options) - {"queue", "ttl", "dry_run"}
    if unknown:
        raise ValueError(f"host sink sdn: unknown option(s) {', '.join(sorted(unknown))}; accepted: queue, ttl, dry_run")
    return IsolationHook(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
                         options.get("queue", "isolation-queue.sqlite"),
                         ttl=float(options["ttl"]) if "ttl" in options else None,
                         dry_run=options.get("dry_run", "0") in ("1", "true", "yes"))  # fmt: skip
