"""The isolation API over HTTP and the gateway's hook (issue 6, points 1-2), on loopback with a fake rule backend:
status codes, queueing while the controller is down, delivery after, nothing lost or duplicated, dry run."""

from __future__ import annotations

import json
import urllib.request

import pytest

from conftest import FakeBackend
from gateway.hosts import HostVerdict
from sdn.api import IsolationAPI
from sdn.blocklist import BlockStore
from sdn.hook import IsolationHook, hook_from_spec
from sdn.isolation import IsolationService
from sdn.safety import Allowlist


@pytest.fixture
def api(tmp_path):
    backend = FakeBackend()
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend, allowlist=Allowlist(["10.9.0.0/16"]))
    server = IsolationAPI(service).start()
    yield server, backend
    server.stop()


def _call(url: str, method: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_api_status_codes(api):
    server, backend = api
    base = "http://%s:%d" % server.address
    assert _call(base + "/blocks", "POST", {"ip": "10.0.0.5", "reason": "test"})[0] == 200
    assert _call(base + "/blocks", "POST", {"ip": "10.0.0.5", "reason": "test"})[1]["status"] == "already_blocked"
    assert _call(base + "/blocks", "POST", {"ip": "10.9.1.1", "reason": "test"})[0] == 403  # allowlisted
    assert _call(base + "/blocks", "POST", {"ip": "nonsense"})[0] == 400
    assert _call(base + "/blocks", "POST", {"reason": "no ip"})[0] == 400
    assert [b["ip"] for b in _call(base + "/blocks", "GET")[1]["blocks"]] == ["10.0.0.5"]
    assert _call(base + "/blocks/10.0.0.5", "DELETE")[1]["status"] == "unblocked" and backend.rules == {}
    backend.fail = True
    assert _call(base + "/blocks", "POST", {"ip": "10.0.0.6", "reason": "test"})[0] == 502


def verdict(host: str, action: str) -> HostVerdict:
    return HostVerdict(host=host, action=action, time=0.0, flows=20, malicious=19 if action == "isolate" else 1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_hook_queues_while_the_controller_is_down_and_delivers_after(tmp_path):
    backend = FakeBackend()
    service = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), backend)
    server = IsolationAPI(service)  # bound, not yet serving: connections are refused... until start()
    host, port = server.address
    server.server.server_close()  # nothing listens on the port now
    clock = Clock()
    hook = IsolationHook(f"http://{host}:{port}", tmp_path / "queue.sqlite", timeout=0.5, clock=clock)
    hook.emit(verdict("10.0.0.5", "isolate"))
    hook.emit(verdict("10.0.0.6", "isolate"))
    hook.emit(verdict("10.0.0.5", "release"))
    assert hook.pending() == 3 and backend.rules == {}
    hook.close()  # a gateway restart: the queue is on disk
    server = IsolationAPI(service, host, port).start()
    try:
        clock.now = 100.0
        again = IsolationHook(f"http://{host}:{port}", tmp_path / "queue.sqlite", clock=clock)
        assert again.flush() == 3 and again.pending() == 0
        assert backend.rules == {"10.0.0.6": None} and backend.installs == 2  # in order, each once
        assert again.flush() == 0 and backend.installs == 2  # nothing duplicated
        again.close()
    finally:
        server.stop()


def test_refusals_are_final_and_dry_run_only_logs(api, tmp_path, caplog):
    server, backend = api
    url = "http://%s:%d" % server.address
    hook = hook_from_spec(f"{url}?queue={tmp_path / 'q.sqlite'}&ttl=60")
    hook.emit(verdict("10.9.3.3", "isolate"))  # allowlisted: refused, not retried
    hook.emit(verdict("10.0.0.8", "isolate"))
    assert hook.pending() == 0 and [r["code"] for r in hook.refused] == [403] and backend.rules == {"10.0.0.8": 60.0}
    hook.close()
    dry = hook_from_spec(f"{url}?queue={tmp_path / 'd.sqlite'}&dry_run=1")
    with caplog.at_level("INFO", logger="sdn.hook"):
        dry.emit(verdict("10.0.0.9", "isolate"))
    assert "dry run: would call POST /blocks" in caplog.text and "10.0.0.9" not in backend.rules
    dry.close()
    with pytest.raises(ValueError, match="unknown option"):
        hook_from_spec(f"{url}?queue=q&speed=1")
