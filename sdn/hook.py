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
* any other refusal (400 bad input, 403 allowlisted or never-blocked address, 403 outside this gateway's
  networks, 404) is final;
* a 401 (no token, a wrong or rotated token, the controller's tokens file broken) is an operator's error, not the
  call's: nothing is dead-lettered, every call stays queued, an error is logged and delivery backs off as if the
  controller were unreachable; once the token is fixed (the token file is read again when it changes) they go.

A call that fails for good (a final refusal, ``max_attempts`` answers that may change, or older than ``max_age``)
is moved to the dead-letter table with its last answer: it never holds up later calls. Calls for one host keep
their order (a later call for a host waits behind an earlier one still being retried); other hosts go ahead.
``dry_run`` only logs what it would call.

    python -m gateway serve --bundle B --source S --host-sink 'sdn:http://127.0.0.1:8470?ttl=300&queue=q.sqlite'
    python -m gateway serve ... --host-sink 'sdn:https://ctl.example:8470?ca=ca.pem&token_file=gw1.token&ttl=300'
    python -m sdn.hook --queue q.sqlite --status      # pending calls and the dead-letter table, as JSON

Authentication (:mod:`sdn.auth`): the gateway's token goes in ``Authorization: Bearer``, read from
``token_file=PATH`` (a file only its owner may read: mode 0600 or 0400; anything more is refused) or else from the
environment variable ``BOTDEFENDER_ISOLATION_TOKEN``; never from the URL (a ``token`` option or ``user:pass@`` is
refused), and it is never logged. A token is sent over plain http only to a loopback address. For https,
``ca=PATH`` is the CA file that signed the controller's certificate (default: the system's trust store) and
``cert=PATH`` / ``key=PATH`` a client certificate, if the controller asks for one.

Options in the query: ``queue`` the queue file (its folder must exist; default ``isolation-queue.sqlite``),
``ttl`` seconds for blocks (a finite number > 0), ``dry_run=1``, ``max_attempts`` (default 5), ``max_age`` seconds
(default 3600), ``interval`` seconds between delivery rounds (default 1), ``timeout`` seconds per call (default 2).
"""

from __future__ import annotations

import argparse
import json
import ipaddress
import logging
import math
import os
import sqlite3
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from sdn.auth import AuthError, check_private
from sdn.hook_queue import FIELDS, QueueError, open_queue, status
from sdn.isolation import check_ttl

log = logging.getLogger("sdn.hook")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the controller is local: no proxy
TOKEN_VARIABLE = "BOTDEFENDER_ISOLATION_TOKEN"
RETRY_CODES = {408, 429}  # besides 5xx: answers that may change
__all__ = ["IsolationHook", "QueueError", "hook_from_spec", "main", "open_queue", "status"]


class IsolationHook:
    """Host sink (``emit``/``close``) delivering verdicts to ``url``; see the module docstring."""

    def __init__(self, url: str, queue_path: str | Path = "isolation-queue.sqlite", *, ttl: float | None = None,
                 dry_run: bool = False, timeout: float = 2.0, backoff: float = 0.5, max_backoff: float = 30.0,
                 max_attempts: int = 5, max_age: float = 3600.0, interval: float | None = 1.0,
                 clock=time.time, token: str | None = None, token_file: str | Path | None = None,
                 cafile: str | None = None, certfile: str | None = None,
                 keyfile: str | None = None) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self._token_text, self._token_file = token, None if token_file is None else Path(token_file)
        self._token_signature: tuple = ()
        if self._token() and self.url.startswith("http:") and not _loopback(urlsplit(self.url).hostname):
            raise ValueError(f"host sink sdn: the token would cross the network in the clear to "
                             f"{urlsplit(self.url).hostname}; use an https URL (with ca=PATH)")  # fmt: skip
        self._opener = _opener(self.url, cafile, certfile, keyfile)
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
                "reason": f"gateway: {verdict.malicious} of {verdict.flows} flows malicious ({share:.0%})"
                          + (f", model {version}" if (version := getattr(verdict, "model_version", "")) else "")}}  # fmt: skip
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
                    log.warning("isolation call not delivered (%s); %d call(s) queued, next try in %.1f s", err,
                                len(rows) - sent, self._delay)  # fmt: skip
                    return sent
                self._delay = 0.0
                if code == 401:  # the token, not the call: keep everything queued (see the module docstring)
                    self._delay = min(max(self._delay * 2, self.backoff), self.max_backoff)
                    self._unreachable_until = self.clock() + self._delay
                    self.counts["unauthorized"] += 1
                    log.error("the controller refused this gateway's token (401: %s); %d call(s) stay queued, next "
                              "try in %.1f s; check token_file= or %s", str(answer.get("reason", ""))[:200],
                              len(rows) - sent, self._delay, TOKEN_VARIABLE)  # fmt: skip
                    return sent
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

    def _token(self) -> str | None:
        """The token: the token file's (read again when the file changed), else the one given; None: no token."""
        if self._token_file is None:
            return self._token_text
        try:
            info = check_private(self._token_file, "isolation token file")
        except AuthError as err:
            raise ValueError(f"host sink sdn: {err}") from None
        signature = (info.st_ino, info.st_mtime_ns, info.st_size)
        if signature != self._token_signature:
            text = self._token_file.read_text(encoding="utf-8").strip()
            if not text or any(c.isspace() for c in text):
                raise ValueError(f"host sink sdn: isolation token file {self._token_file} must hold one token")
            self._token_text, self._token_signature = text, signature
        return self._token_text

    def _request(self, call: dict, key: str) -> tuple[int, dict]:
        data = None if call["body"] is None else json.dumps(call["body"]).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        token = self._token()  # a token file gone bad: ValueError, handled like an unreachable controller
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + call["path"], data=data, method=call["method"], headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, _json_object(response.read())
        except urllib.error.HTTPError as err:  # an answer, not a transport failure
            try:
                return err.code, _json_object(err.read())
            except ValueError:
                return err.code, {"reason": str(err)}


def _opener(url: str, cafile: str | None, certfile: str | None, keyfile: str | None) -> urllib.request.OpenerDirector:
    """No proxy (the controller is reached directly); for https, a TLS context trusting ``cafile`` (default: the
    system's CAs) with the client certificate ``certfile``/``keyfile`` if given."""
    if not url.startswith("https:"):
        if cafile or certfile or keyfile:
            raise ValueError("host sink sdn: ca, cert and key need an https URL")
        return NO_PROXY
    try:
        context = ssl.create_default_context(cafile=cafile)
        if certfile or keyfile:
            context.load_cert_chain(certfile or "", keyfile)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"host sink sdn: TLS files (ca {cafile}, cert {certfile}, key {keyfile}): {err}") from None
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))


def _loopback(hostname: str | None) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname or "").is_loopback
    except ValueError:
        return False


def _json_object(data: bytes) -> dict:
    value = json.loads(data or b"{}")
    if not isinstance(value, dict):
        raise ValueError(f"the controller answered {type(value).__name__}, not a JSON object")
    return value


SPEC_OPTIONS = ("queue", "ttl", "dry_run", "max_attempts", "max_age", "interval", "timeout", "token_file", "ca", "cert",
                "key")  # fmt: skip


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
    if "@" in parts.netloc:
        raise ValueError("host sink sdn: credentials in the URL are refused; give the token in a file (token_file=) "
                         f"or {TOKEN_VARIABLE}")  # fmt: skip
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if "token" in options:
        raise ValueError(f"host sink sdn: a token in the URL is refused (it would show in process lists and logs); "
                         f"give it in a file (token_file=) or {TOKEN_VARIABLE}")  # fmt: skip
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
    token_file = options.get("token_file") or None
    token = None if token_file else os.environ.get(TOKEN_VARIABLE, "").strip() or None
    return IsolationHook(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
                         options.get("queue", "isolation-queue.sqlite"), ttl=ttl, dry_run=dry in ("1", "true", "yes"),
                         max_attempts=int(_number("max_attempts", options.get("max_attempts", "5"), integer=True)),
                         max_age=_number("max_age", options.get("max_age", "3600")),
                         interval=_number("interval", options.get("interval", "1")),
                         timeout=_number("timeout", options.get("timeout", "2")), token=token, token_file=token_file,
                         cafile=options.get("ca") or None, certfile=options.get("cert") or None,
                         keyfile=options.get("key") or None)  # fmt: skip


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
