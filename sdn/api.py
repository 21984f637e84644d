"""The isolation service over HTTP (standard library ``http.server``), on loopback by default.

    POST   /blocks            {"ip": "10.0.0.5", "reason": "gateway verdict", "ttl": 300}   -> block
    DELETE /blocks/<ip>                                                                   -> unblock
    GET    /blocks                                                                        -> active blocks
    GET    /health                                            -> {"ok": true, ...} (the controller adds "switches")

Answers are JSON: 200 for done or already so (idempotent), 403 for a refusal (allowlist, circuit breaker), 400
for bad input, 502 when the switch did not confirm the rules.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from sdn.isolation import IsolationService, Outcome

STATUS_CODES = {"blocked": 200, "already_blocked": 200, "unblocked": 200, "not_blocked": 200, "refused": 403,
                "invalid": 400, "failed": 502}  # fmt: skip


def _handler(service: IsolationService, health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # quiet: the controller logs decisions itself
            return

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _outcome(self, outcome: Outcome) -> None:
            self._send(STATUS_CODES[outcome.status], outcome.as_dict())

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"ok": True, **health()})
            elif self.path == "/blocks":
                self._send(200, {"blocks": [b.as_dict() for b in service.blocks()]})
            else:
                self._send(404, {"ok": False, "reason": f"no such resource {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/blocks":
                return self._send(404, {"ok": False, "reason": f"no such resource {self.path}"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                ip, reason, ttl = body["ip"], str(body.get("reason", "")), body.get("ttl")
                ttl = None if ttl is None else float(ttl)
            except (ValueError, KeyError, TypeError) as err:
                return self._send(400, {"ok": False, "reason": f"bad request body: {err!r}; expected JSON with "
                                                                 "ip, reason and an optional ttl"})  # fmt: skip
            self._outcome(service.block(ip, reason, ttl))

        def do_DELETE(self) -> None:
            if not self.path.startswith("/blocks/"):
                return self._send(404, {"ok": False, "reason": f"no such resource {self.path}"})
            self._outcome(service.unblock(unquote(self.path[len("/blocks/"):])))

    return Handler


class IsolationAPI:
    """The HTTP server in a background thread; ``address`` is (host, port) once started."""

    def __init__(self, service: IsolationService, host: str = "127.0.0.1", port: int = 0,
                 health: Callable[[], dict] = dict) -> None:  # fmt: skip
        self.server = ThreadingHTTPServer((host, port), _handler(service, health))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="isolation-api", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def start(self) -> "IsolationAPI":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
