"""The isolation API over HTTP (uvicorn) and the gateway's hook, on loopback with a fake rule backend: status codes,
the server's limits (read timeouts, body size, JSON only, backlog), queueing while the controller is down, the
dead-letter table, breaker refusals retried, delivery on the hook's own timer, exactly-once by idempotency key,
the sink spec checked on start. Every server here authenticates (one gateway token covering 10.0.0.0/8, sent by
``_call`` and the hooks); tests/test_isolation_auth.py tests the authentication itself."""

from __future__ import annotations

import ipaddress
import json
import socket
import sqlite3
import threading
import time
import urllib.request

import pytest

from conftest import FakeBackend
from gateway.hosts import HostVerdict
from sdn.api import IsolationAPI
from sdn.auth import Gateway, TokenStore, digest, new_token, save
from sdn.blocklist import BlockStore
from sdn.hook import IsolationHook, QueueError, hook_from_spec, main as hook_main
from sdn.isolation import IsolationService
from sdn.safety import Allowlist, CircuitBreaker

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TOKEN = new_token("gw")


def tokens(folder) -> TokenStore:
    """A tokens file in ``folder`` holding TOKEN's digest for the networks these tests use."""
    save(folder / "tokens.json", {"gw": Gateway("gw", digest(TOKEN), (ipaddress.ip_network("10.0.0.0/8"),))})
    return TokenStore(folder / "tokens.json")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api(tmp_path):
    backend = FakeBackend()
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend, allowlist=Allowlist(["10.9.0.0/16"]))
    server = IsolationAPI(service, auth=tokens(tmp_path), read_timeout=0.5).start()
    yield server, backend
    server.stop()


def _call(url: str, method: str, body: dict | None = None, headers: dict | None = None,
          data: bytes | None = None) -> tuple[int, dict]:  # fmt: skip
    data = data if data is not None else None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", **(headers or {"Content-Type": "application/json"})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with OPENER.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def base(server) -> str:
    return "http://%s:%d" % server.address


def test_api_status_codes(api):
    server, backend = api
    url = base(server)
    assert _call(url + "/blocks", "POST", {"ip": "10.0.0.5", "reason": "test"})[0] == 200
    assert _call(url + "/blocks", "POST", {"ip": "10.0.0.5", "reason": "test"})[1]["status"] == "already_blocked"
    assert _call(url + "/blocks", "POST", {"ip": "10.9.1.1", "reason": "test"})[0] == 403  # allowlisted
    assert _call(url + "/blocks", "POST", {"ip": "nonsense"})[0] == 400
    assert _call(url + "/blocks", "POST", {"reason": "no ip"})[0] == 400
    assert _call(url + "/blocks", "POST", {"ip": "10.0.0.7", "colour": "red"})[0] == 400
    assert [b["ip"] for b in _call(url + "/blocks", "GET")[1]["blocks"]] == ["10.0.0.5"]
    assert _call(url + "/blocks/10.0.0.5", "DELETE")[1]["status"] == "unblocked" and backend.rules == {}
    assert _call(url + "/nothing", "GET")[0] == 404 and _call(url + "/blocks", "PUT", {"ip": "1.2.3.4"})[0] == 405
    backend.fail = True
    assert _call(url + "/blocks", "POST", {"ip": "10.0.0.6", "reason": "test"})[0] == 502


def test_only_json_bodies_and_strict_json_both_ways(api):
    """Reproduced on main: a text/plain POST (what a web page may send without a preflight) was accepted, and
    ttl inf put Infinity into GET /blocks."""
    server, backend = api
    url = base(server)
    code, answer = _call(url + "/blocks", "POST", headers={"Content-Type": "text/plain"},
                         data=json.dumps({"ip": "10.0.0.5"}).encode())  # fmt: skip
    assert code == 415 and "application/json" in answer["reason"] and backend.rules == {}
    for raw in (b'{"ip": "10.0.0.5", "ttl": NaN}', b'{"ip": "10.0.0.5", "ttl": Infinity}', b"[1]", b"\xff"):
        assert _call(url + "/blocks", "POST", data=raw, headers={"Content-Type": "application/json"})[0] == 400
    assert _call(url + "/blocks", "POST", {"ip": "10.0.0.5", "ttl": 1e308})[0] == 400
    request = urllib.request.Request(url + "/blocks", method="GET", headers={"Authorization": f"Bearer {TOKEN}"})
    text = OPENER.open(request, timeout=5).read().decode()
    assert "NaN" not in text and "Infinity" not in text and backend.rules == {}


def _raw(server, payload: bytes, wait: float = 3.0) -> bytes:
    with socket.create_connection(server.address, timeout=wait) as s:
        s.sendall(payload)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<timeout>")
        return b"".join(chunks)


def test_a_body_shorter_than_its_content_length_times_out(api):
    """Reproduced on main: such a request held a server thread forever (300 stalled connections, 302 threads)."""
    server, _ = api
    started = time.monotonic()
    answer = _raw(server, b"POST /blocks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100"
                          b"\r\n\r\n{\"ip\":")  # fmt: skip
    assert b" 408 " in answer.split(b"\r\n")[0] and time.monotonic() - started < 2.5


def test_slow_headers_are_cut_off_and_stalled_clients_hold_no_threads(api):
    server, _ = api
    stalled = [socket.create_connection(server.address) for _ in range(100)]
    try:
        for s in stalled:
            s.sendall(b"POST /blocks HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        threads = threading.active_count()
        assert _call(base(server) + "/health", "GET")[0] == 200  # others are served meanwhile
        assert threading.active_count() <= threads + 8
        time.sleep(1.0)
        stalled[0].settimeout(1.0)
        assert stalled[0].recv(10) == b""  # closed by the server after the read timeout
    finally:
        for s in stalled:
            s.close()


def test_a_large_body_is_refused(api):
    """Reproduced on main: a 5 MB request body was read and its reason stored."""
    server, backend = api
    code, answer = _call(base(server) + "/blocks", "POST", {"ip": "10.0.0.5", "reason": "x" * 60_000})
    assert code == 413 and backend.rules == {}
    answer = _raw(server, b"POST /blocks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 5000000\r\n\r\n" + b"x" * 1000)  # fmt: skip
    assert b" 413 " in answer.split(b"\r\n")[0] and backend.rules == {}


def test_many_concurrent_requests_are_all_answered(api):
    """Reproduced on main: with a listen backlog of 5, 3-49 of 200 concurrent requests were reset."""
    server, _ = api
    codes: list[int] = []

    def one(i: int) -> None:
        try:
            codes.append(_call(base(server) + "/blocks", "POST", {"ip": f"10.1.{i // 250}.{i % 250 + 1}"})[0])
        except OSError as err:
            codes.append(repr(err))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes.count(200) + codes.count(403) == 200, [c for c in codes if c not in (200, 403)][:5]


def test_the_api_honours_the_idempotency_key(api):
    server, backend = api
    url, key = base(server), {"Content-Type": "application/json", "Idempotency-Key": "call-1"}
    assert _call(url + "/blocks", "POST", {"ip": "10.0.0.5"}, headers=key)[1]["status"] == "blocked"
    assert _call(url + "/blocks/10.0.0.5", "DELETE")[1]["status"] == "unblocked"
    code, answer = _call(url + "/blocks", "POST", {"ip": "10.0.0.5"}, headers=key)
    assert (code, answer["status"], answer["replayed"]) == (200, "blocked", True) and backend.rules == {}


def verdict(host: str, action: str) -> HostVerdict:
    return HostVerdict(host=host, action=action, time=0.0, flows=20, malicious=19 if action == "isolate" else 1)


def _free_address() -> tuple[str, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()


def test_the_hook_queues_while_the_controller_is_down_and_delivers_after(tmp_path):
    backend = FakeBackend()
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend)
    host, port = _free_address()  # nothing listens there yet
    clock = Clock()
    hook = IsolationHook(f"http://{host}:{port}", tmp_path / "queue.sqlite", token=TOKEN, timeout=0.5, clock=clock, interval=None)
    hook.emit(verdict("10.0.0.5", "isolate"))
    hook.emit(verdict("10.0.0.6", "isolate"))
    hook.emit(verdict("10.0.0.5", "release"))
    assert hook.pending() == 3 and backend.rules == {}
    hook.close()  # a gateway restart: the queue is on disk
    server = IsolationAPI(service, host, port, auth=tokens(tmp_path)).start()
    try:
        clock.now += 100
        again = IsolationHook(f"http://{host}:{port}", tmp_path / "queue.sqlite", token=TOKEN, clock=clock, interval=None)
        assert again.flush() == 3 and again.pending() == 0
        assert backend.rules == {"10.0.0.6": None} and backend.installs == 2  # in order, each once
        assert again.flush() == 0 and backend.installs == 2  # nothing duplicated
        again.close()
    finally:
        server.stop()


def test_a_quiet_gateway_still_delivers_on_the_hooks_timer(tmp_path):
    """Reproduced on main: queued calls went out only when a new verdict came or at exit (0 of 50 in a quiet run)."""
    backend = FakeBackend()
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend,
                               breaker=CircuitBreaker(max_per_minute=1000, max_blocked_share=1.0))  # fmt: skip
    host, port = _free_address()
    hook = IsolationHook(f"http://{host}:{port}", tmp_path / "queue.sqlite", token=TOKEN, timeout=0.5, interval=0.1,
                         backoff=0.1, max_backoff=0.2)  # fmt: skip
    for i in range(50):
        hook.emit(verdict(f"10.0.1.{i + 1}", "isolate"))
    time.sleep(0.3)
    server = IsolationAPI(service, host, port, auth=tokens(tmp_path)).start()
    try:
        deadline = time.monotonic() + 10
        while hook.pending() and time.monotonic() < deadline:  # no emit, no flush from here: the timer delivers
            time.sleep(0.05)
        assert hook.pending() == 0 and len(backend.rules) == 50
    finally:
        hook.close()
        server.stop()


class Scripted(FakeBackend):
    """Installs for ``broken`` addresses always fail (the switch never confirms)."""

    def __init__(self, broken: set[str]) -> None:
        super().__init__()
        self.broken = broken

    def install(self, ip, ttl):
        if ip in self.broken:
            raise TimeoutError("no barrier reply")
        super().install(ip, ttl)


def test_a_call_that_keeps_failing_goes_to_the_dead_letter_table_and_blocks_nothing(tmp_path, capsys):
    """Reproduced on main: a call always answered 5xx (or 4xx for a scoped address) was retried forever and held
    up every later call in the queue."""
    backend = Scripted({"10.0.0.66"})
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend)
    server = IsolationAPI(service, auth=tokens(tmp_path)).start()
    clock = Clock()
    try:
        hook = IsolationHook(base(server), tmp_path / "queue.sqlite", token=TOKEN, clock=clock, interval=None, max_attempts=3)
        hook.emit(verdict("10.0.0.66", "isolate"))  # 502 each time
        hook.emit(verdict("fe80::1%eth0", "isolate"))  # 400: final at once
        hook.emit(verdict("10.0.0.7", "isolate"))
        hook.emit(verdict("10.0.0.66", "release"))  # behind the failing call of the same host
        assert set(backend.rules) == {"10.0.0.7"} and hook.pending() == 2
        for _ in range(5):
            clock.now += 60
            hook.flush()
        assert hook.pending() == 0 and set(backend.rules) == {"10.0.0.7"}
        dead = hook.dead_letters()
        assert [(d["host"], d["code"], d["attempts"]) for d in dead] == [("fe80::1%eth0", 400, 0), ("10.0.0.66", 502, 3)]
        assert hook.summary()["dead_letter_total"] == 2
        hook.close()
        assert hook.summary() == {"queued": 4, "delivered": 2, "retried": 2, "dead_letter_new": 2,
                                  "dead_letter_total": 2, "pending": 0}  # fmt: skip
        assert hook_main(["--queue", str(tmp_path / "queue.sqlite"), "--status"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["dead_letter"] == 2 and report["pending"] == 0
    finally:
        server.stop()


def test_breaker_refusals_are_retried_after_its_window(tmp_path):
    """Reproduced on main: a circuit-breaker 403 was final: after an outage 10 of 40 queued isolations dropped."""
    clock = Clock()
    backend = FakeBackend(hosts=1000)
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend, clock=clock,
                               breaker=CircuitBreaker(max_per_minute=10, max_blocked_share=1.0))  # fmt: skip
    server = IsolationAPI(service, auth=tokens(tmp_path)).start()
    try:
        hook = IsolationHook(base(server), tmp_path / "queue.sqlite", token=TOKEN, clock=clock, interval=None)
        for i in range(40):
            hook.emit(verdict(f"10.0.2.{i + 1}", "isolate"))
        assert len(backend.rules) == 10 and hook.pending() == 30
        for _ in range(3):
            clock.now += 30
            hook.flush()
            assert hook.flush() == 0  # inside the window: no call at all
            clock.now += 31
            hook.flush()
        assert len(backend.rules) == 40 and hook.pending() == 0 and hook.dead_letters() == []
        hook.close()
    finally:
        server.stop()


def test_a_kill_during_delivery_does_not_apply_a_call_twice(tmp_path):
    """The API applied the block, the gateway died before dequeuing it, an operator unblocked meanwhile: the call
    sent again by the next run is answered from the record (its idempotency key) and the host stays free."""
    backend = FakeBackend()
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend)
    server = IsolationAPI(service, auth=tokens(tmp_path)).start()
    try:
        hook = IsolationHook(base(server), tmp_path / "queue.sqlite", token=TOKEN, interval=None)
        real = hook._request

        def killed(call, key):
            real(call, key)
            raise KeyboardInterrupt  # the process dies after the answer, before the DELETE FROM pending

        hook._request = killed
        with pytest.raises(KeyboardInterrupt):
            hook.emit(verdict("10.0.0.5", "isolate"))
        hook._db.close()
        assert backend.rules == {"10.0.0.5": None}
        assert _call(base(server) + "/blocks/10.0.0.5", "DELETE")[1]["status"] == "unblocked"
        again = IsolationHook(base(server), tmp_path / "queue.sqlite", token=TOKEN, interval=None)
        assert again.pending() == 1 and again.flush() == 1 and again.pending() == 0
        assert backend.rules == {} and backend.installs == 1
        again.close()
    finally:
        server.stop()


def test_a_queue_of_the_first_schema_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE pending (id INTEGER PRIMARY KEY AUTOINCREMENT, call TEXT NOT NULL)")
    db.execute("INSERT INTO pending (call) VALUES (?)",
               (json.dumps({"method": "DELETE", "path": "/blocks/10.0.0.5", "body": None}),))  # fmt: skip
    db.commit()
    db.close()
    hook = IsolationHook("http://127.0.0.1:9", path, interval=None)
    assert hook.pending() == 1 and hook._db.execute("SELECT host FROM pending").fetchone() == ("10.0.0.5",)
    hook._db.close()


def test_refusals_are_final_and_dry_run_only_logs(api, tmp_path, caplog, monkeypatch):
    server, backend = api
    monkeypatch.setenv("BOTDEFENDER_ISOLATION_TOKEN", TOKEN)
    url = base(server)
    hook = hook_from_spec(f"{url}?queue={tmp_path / 'q.sqlite'}&ttl=60")
    hook.emit(verdict("10.9.3.3", "isolate"))  # allowlisted: refused, not retried
    hook.emit(verdict("10.0.0.8", "isolate"))
    assert hook.drain(5) and [d["code"] for d in hook.dead_letters()] == [403] and backend.rules == {"10.0.0.8": 60.0}
    hook.close()
    dry = hook_from_spec(f"{url}?queue={tmp_path / 'd.sqlite'}&dry_run=1")
    with caplog.at_level("INFO", logger="sdn.hook"):
        dry.emit(verdict("10.0.0.9", "isolate"))
    assert "dry run: would call POST /blocks" in caplog.text and "10.0.0.9" not in backend.rules
    dry.close()


@pytest.mark.parametrize("query, message", [("ttl=-5", "ttl must be a finite number > 0"),
                                            ("ttl=inf", "ttl must be a finite number > 0"),
                                            ("ttl=nan", "ttl must be a finite number > 0"),
                                            ("ttl=abc", "ttl='abc' is not a number"),
                                            ("ttl=1e12", "ttl must be > 0 seconds and at most"),
                                            ("max_attempts=0", "max_attempts must be"),
                                            ("dry_run=maybe", "dry_run must be 0 or 1"),
                                            ("speed=1", "unknown option")])  # fmt: skip
def test_the_sink_spec_is_checked_on_start(tmp_path, query, message):
    """Reproduced on main: ttl=-5 was accepted and every block then refused."""
    with pytest.raises(ValueError, match=message) as caught:
        hook_from_spec(f"http://127.0.0.1:8470?queue={tmp_path / 'q.sqlite'}&{query}")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("host sink sdn")


def test_a_missing_queue_folder_is_a_clear_error(tmp_path):
    """Reproduced on main: sqlite3.OperationalError 'unable to open database file' with a traceback."""
    with pytest.raises(QueueError, match="queue folder .*no-such-folder does not exist"):
        hook_from_spec(f"http://127.0.0.1:8470?queue={tmp_path / 'no-such-folder' / 'q.sqlite'}")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(QueueError, match="junk.sqlite"):
        hook_from_spec(f"http://127.0.0.1:8470?queue={tmp_path / 'junk.sqlite'}")
