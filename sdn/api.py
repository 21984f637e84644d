"""The isolation service over HTTP: a small ASGI app served by uvicorn, on loopback by default.

    POST   /blocks            {"ip": "10.0.0.5", "reason": "gateway verdict", "ttl": 300}   -> block
    DELETE /blocks/<ip>                                                                   -> unblock
    GET    /blocks            -> active blocks, each with the switches holding its rules ("switches", "enforced")
    GET    /health            -> {"ok": true, ...} (the controller adds "switches")

Every call but ``GET /health`` carries a gateway's token, ``Authorization: Bearer <token>`` (:mod:`sdn.auth`): a
call without one, or with a token the tokens file does not hold, is answered 401 with ``WWW-Authenticate: Bearer``
and logged with the caller's address and port (and the gateway a wrong token names). A gateway may block and
unblock only addresses in its own networks (a 403 names the address and the gateway otherwise), and ``GET
/blocks`` lists only the blocks in them. The size and time limits on a body apply before the token is looked at.
``auth=None`` turns this off, on loopback only (a warning says so); beyond loopback the server also refuses to
start without TLS (``ssl_certfile`` and ``ssl_keyfile``).

A POST or DELETE may carry an ``Idempotency-Key`` header: the first final answer to that key is recorded and
repeated for every later call with it, without applying the call again (exactly-once delivery for the hook).

Answers are strict JSON (no NaN/Infinity): 200 done or already so (idempotent), 400 bad input, 401 no valid
token, 403 refused (allowlist, never-blocked address, outside the caller's networks, circuit breaker; a breaker
refusal carries ``retry_after`` seconds and a ``Retry-After`` header: the same call may pass then), 404/405 no
such resource or method, 408 the body did not arrive within the read timeout, 413 body too large, 415 a body
that is not ``application/json`` (a web page's ``text/plain`` form post), 502 the switch did not confirm the
rules, 503 too many connections.

Why uvicorn: os-ken 4 has no WSGI stack under its default native hub (its ``WSGIServer`` exists only with the
eventlet hub, which would monkey-patch the controller's threads), and growing the standard library's
``http.server`` into a hardened server means writing read timeouts, connection limits and TLS by hand. uvicorn is
maintained, already installed with flwr, parses HTTP with h11, serves TLS (``ssl_*`` options, needed by the
deployment), and gives a listen backlog (``backlog``) and a connection cap (``limit_concurrency``, a 503 past it).
This module adds what uvicorn leaves to the app: a deadline for a request's headers (a connection that sends
them too slowly is closed), a deadline and a size limit for its body, and a bounded pool of worker threads for
the service calls (which wait for switch barriers); the event loop itself never blocks, so stalled clients hold
no threads.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import ssl as tls
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from sdn.auth import Gateway, TokenStore
from sdn.isolation import IsolationService, Outcome

log = logging.getLogger("sdn.api")
STATUS_CODES = {"blocked": 200, "already_blocked": 200, "unblocked": 200, "not_blocked": 200, "refused": 403,
                "invalid": 400, "failed": 502}  # fmt: skip
MAX_BODY = 16 * 1024
POST_FIELDS = {"ip", "reason", "ttl"}


class RequestError(Exception):
    """A request the API answers with an error status (``code``) without calling the service."""

    def __init__(self, code: int, reason: str, headers: dict[str, str] | None = None, **fields) -> None:
        super().__init__(reason)
        self.code, self.reason, self.headers, self.fields = code, reason, headers or {}, fields


def _strict_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def parse_block_body(body: bytes, content_type: str) -> dict:
    """The JSON object of a POST /blocks body; RequestError (400/415) naming what was wrong."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise RequestError(415, f"the body must be application/json, got {content_type or 'no content type'!r}")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_strict_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise RequestError(400, f"bad request body: {err}; expected a JSON object with ip, reason and an optional "
                                "ttl") from None  # fmt: skip
    if not isinstance(data, dict) or "ip" not in data:
        raise RequestError(400, "bad request body: expected a JSON object with ip, reason and an optional ttl")
    unknown = sorted(set(data) - POST_FIELDS)
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(unknown)[:200]}; accepted: ip, reason, ttl")
    return data


def encode(body: dict) -> bytes:
    """Strict JSON (a value that is not JSON is a bug: a 500 says so instead of sending ``NaN``)."""
    return json.dumps(body, allow_nan=False).encode()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``); names and wildcard addresses are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class IsolationApp:
    """The ASGI app: routes, body limits, the token check and the worker pool around an :class:`IsolationService`
    (``auth=None``: no token check)."""

    def __init__(self, service: IsolationService, health: Callable[[], dict] = dict, *, auth: TokenStore | None,
                 workers: int = 8, read_timeout: float = 5.0, max_body: int = MAX_BODY) -> None:  # fmt: skip
        self.service, self.health, self.auth = service, health, auth
        self.read_timeout, self.max_body = read_timeout, max_body
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="isolation-api")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        extra: dict[str, str] = {}
        try:
            body = await self._body(receive, headers)  # size and time limits first: before any token work
            caller = None if scope["path"] == "/health" else self._authenticate(scope, headers)
            code, answer = await self._route(scope["method"], scope["path"], headers, body, caller)
            if answer.get("retry_after") is not None:
                extra["retry-after"] = str(max(1, int(-(-answer["retry_after"] // 1))))
        except RequestError as err:
            code, answer = err.code, {"ok": False, **err.fields, "reason": err.reason}
            extra.update(err.headers)
        try:
            data = encode(answer)
        except ValueError as err:
            log.error("answer is not JSON: %s", err)
            code, data = 500, encode({"ok": False, "reason": "internal error: the answer was not JSON"})
        response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        response_headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": code, "headers": response_headers})
        await send({"type": "http.response.body", "body": data})

    async def _body(self, receive, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length", "0")
        if not declared.isdigit():
            raise RequestError(400, f"bad Content-Length {declared[:40]!r}")
        if int(declared) > self.max_body:
            raise RequestError(413, f"body of {declared} bytes refused; at most {self.max_body} are accepted")
        chunks, size = [], 0

        async def read() -> None:
            nonlocal size
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestError(400, "client went away")
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body:
                    raise RequestError(413, f"body larger than {self.max_body} bytes refused")
                if not message.get("more_body", False):
                    return

        try:
            await asyncio.wait_for(read(), self.read_timeout)
        except asyncio.TimeoutError:
            raise RequestError(408, f"the body did not arrive within {self.read_timeout} s") from None
        return b"".join(chunks)

    def _authenticate(self, scope, headers: dict[str, str]) -> Gateway | None:
        """The calling gateway (None: auth is off); RequestError 401, logged with the caller, without a valid token."""
        if self.auth is None:
            return None
        verdict = self.auth.check(headers.get("authorization"))
        if verdict.gateway is not None:
            return verdict.gateway
        host, port = (scope.get("client") or ("unknown", 0))[:2]
        claimed = f" (the token names gateway {verdict.claimed})" if verdict.claimed else ""
        log.warning("401 for %s %r from %s port %s: %s%s", scope["method"], scope["path"][:100], host, port,
                    verdict.problem, claimed)  # fmt: skip
        challenge = 'Bearer realm="isolation"' + ("" if "no token" in verdict.problem else ', error="invalid_token"')
        raise RequestError(401, f"unauthorized: {verdict.problem}", {"www-authenticate": challenge})

    @staticmethod
    def _in_scope(caller: Gateway | None, ip: object, action: str) -> None:
        """RequestError 403 (final: no ``retry_after``) if ``ip`` lies outside ``caller``'s networks."""
        if caller is not None and not caller.covers(ip):
            log.warning("403: gateway %s asked to %s %r, outside its networks (%s)", caller.name, action,
                        str(ip)[:80], caller.scope())  # fmt: skip
            raise RequestError(403, f"{str(ip)[:80]} is outside the networks of gateway {caller.name} "
                                    f"({caller.scope()}); refused", status="refused", ip=str(ip)[:80])  # fmt: skip

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes,
                     caller: Gateway | None) -> tuple[int, dict]:  # fmt: skip
        key = headers.get("idempotency-key")
        if path == "/health":
            if method != "GET":
                raise RequestError(405, f"{method} not allowed on /health; use GET")
            return 200, {"ok": True, **await self._run(self.health)}
        if path == "/blocks":
            if method == "GET":
                report = await self._run(self.service.report)
                return 200, {"blocks": [b for b in report if caller is None or caller.covers(b["ip"])]}
            if method != "POST":
                raise RequestError(405, f"{method} not allowed on /blocks; use GET or POST")
            data = parse_block_body(body, headers.get("content-type", ""))
            self._in_scope(caller, data["ip"], "block")
            outcome = await self._run(self.service.block, data["ip"], data.get("reason", ""), data.get("ttl"), key)
            return self._outcome(outcome)
        if path.startswith("/blocks/"):
            if method != "DELETE":
                raise RequestError(405, f"{method} not allowed on /blocks/<ip>; use DELETE")
            self._in_scope(caller, path[len("/blocks/"):], "unblock")
            return self._outcome(await self._run(self.service.unblock, path[len("/blocks/"):], key))
        raise RequestError(404, f"no such resource {path[:200]}")

    @staticmethod
    def _outcome(outcome: Outcome) -> tuple[int, dict]:
        return STATUS_CODES[outcome.status], outcome.as_dict()

    async def _run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)


def _protocol_with_header_deadline(timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete within ``timeout``."""

    class HeaderDeadlineH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()  # before: the next pipelined request (handled inside) disarms it again
            super().on_response_complete()

    return HeaderDeadlineH11


def check_listen(host: str, auth: TokenStore | None, ssl: dict | None) -> None:
    """ValueError unless the API may listen on ``host`` so: beyond loopback only with tokens and TLS; the TLS
    files are loaded once here so that a bad one is named before the server starts."""
    ssl = ssl or {}
    if not is_loopback(host):
        if auth is None:
            raise ValueError(f"isolation API on {host!r}: beyond loopback it needs a tokens file ([api] tokens; "
                             'auth = "none" is for loopback only)')  # fmt: skip
        if not (ssl.get("ssl_certfile") and ssl.get("ssl_keyfile")):
            raise ValueError(f"isolation API on {host!r}: beyond loopback it needs TLS ([api] certfile and keyfile)")
    if ssl.get("ssl_certfile") or ssl.get("ssl_keyfile"):
        context = tls.create_default_context(tls.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(ssl.get("ssl_certfile") or "", ssl.get("ssl_keyfile"))
            if ssl.get("ssl_ca_certs"):
                context.load_verify_locations(ssl["ssl_ca_certs"])
        except (OSError, tls.SSLError) as err:
            raise ValueError(f"isolation API TLS files (certfile {ssl.get('ssl_certfile')}, keyfile "
                             f"{ssl.get('ssl_keyfile')}, client CA {ssl.get('ssl_ca_certs')}): {err}") from None
    if auth is None:
        log.warning('isolation API on %s without authentication (auth = "none"): any local process may block '
                    "hosts", host)  # fmt: skip


class IsolationAPI:
    """The uvicorn server on its own thread; ``address`` is (host, port) once constructed (port 0: any free).

    ``auth`` is the token store (None: no authentication, loopback only); ``ssl`` holds uvicorn's TLS options
    (``ssl_certfile``, ``ssl_keyfile``, ``ssl_ca_certs``, ``ssl_cert_reqs``), required beyond loopback."""

    def __init__(self, service: IsolationService, host: str = "127.0.0.1", port: int = 0,
                 health: Callable[[], dict] = dict, *, auth: TokenStore | None, workers: int = 8,
                 max_connections: int = 256, backlog: int = 1024, read_timeout: float = 5.0, max_body: int = MAX_BODY,
                 ssl: dict | None = None) -> None:  # fmt: skip
        check_listen(host, auth, ssl)
        self.app = IsolationApp(service, health, auth=auth, workers=workers, read_timeout=read_timeout,
                                max_body=max_body)  # fmt: skip
        self.tls = bool(ssl and ssl.get("ssl_certfile"))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=backlog)
        config = uvicorn.Config(self.app, http=_protocol_with_header_deadline(read_timeout), lifespan="off", ws="none",
                                log_config=None, access_log=False, limit_concurrency=max_connections,
                                backlog=backlog, timeout_keep_alive=int(max(1, read_timeout)),
                                h11_max_incomplete_event_size=MAX_BODY, **(ssl or {}))  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="isolation-api", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.socket.getsockname()[:2]

    def _serve(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.socket]))

    def start(self, timeout: float = 10.0) -> "IsolationAPI":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError(f"isolation API did not start on {self.address}")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.socket.close()
        self.app.pool.shutdown(wait=False, cancel_futures=True)
