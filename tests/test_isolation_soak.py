"""Soak test of the isolation path (issue 14): gateway-side hook -> isolation API (uvicorn, loopback) -> isolation
service -> a fake switch, with 10,000 host verdicts while the API goes down and up, the hook is closed or killed
and restarted, the service (controller side) is restarted over its store (once with the switch's rules wiped),
and 5xx answers are injected before and after the service applied a call. At the end the switch holds exactly
the verdicts' net effect, every call was applied exactly once, and the dead-letter table lists exactly the calls
that can never succeed (allowlisted hosts, a host whose rules the switch never confirms). The circuit breaker's
limits are raised here; it is exercised in tests/test_isolation_hook.py."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from gateway.hosts import HostVerdict
from sdn.api import IsolationAPI
from sdn.blocklist import BlockStore
from sdn.hook import IsolationHook
from sdn.isolation import IsolationService
from sdn.safety import Allowlist, CircuitBreaker

VERDICTS = 10_000
PHASES = 20
ALLOWLISTED = [f"10.60.0.{i}" for i in range(1, 4)]
BROKEN = ["10.61.0.1"]  # the switch never confirms its rules: every block answers 502


class Switch:
    """The switch side: the drop rules it holds (survives controller restarts unless wiped)."""

    def __init__(self) -> None:
        self.rules: set[str] = set()
        self.lock = threading.Lock()

    def install(self, ip, ttl):
        if ip in BROKEN:
            raise TimeoutError("no barrier reply")
        with self.lock:
            self.rules.add(ip)

    def remove(self, ip):
        with self.lock:
            self.rules.discard(ip)

    def known_hosts(self):
        return 10_000


class CountingService(IsolationService):
    """Counts what the service applied (not what it replayed from an idempotency key's record)."""

    applied: Counter = Counter()

    def _block(self, address, reason, ttl):
        outcome = super()._block(address, reason, ttl)
        self.applied[(outcome.ip, outcome.status)] += 1
        return outcome

    def _unblock(self, ip):
        outcome = super()._unblock(ip)
        self.applied[(ip, outcome.status)] += 1
        return outcome


class Flaky:
    """ASGI wrapper: answers 500 instead of calling the app (``before``), or calls it and loses its answer
    (``after``: the call was applied, the client sees a 500 and must not apply it twice by retrying)."""

    def __init__(self, app, rng: random.Random, before: float, after: float) -> None:
        self.app, self.rng, self.before, self.after = app, rng, before, after
        self.injected = Counter()

    async def __call__(self, scope, receive, send):
        draw = self.rng.random() if scope["type"] == "http" and scope["method"] != "GET" else 1.0
        if draw < self.before + self.after:
            if draw >= self.before:
                self.injected["after"] += 1

                async def swallow(message):
                    return None

                await self.app(scope, receive, swallow)
            else:
                self.injected["before"] += 1
            body = b'{"ok": false, "reason": "injected failure"}'
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class ControllerSide:
    """Service + API on a fixed port over one store file; ``restart`` and ``down``/``up`` as the soak needs."""

    def __init__(self, folder, switch: Switch, rng: random.Random) -> None:
        self.folder, self.switch, self.rng = folder, switch, rng
        self.server: IsolationAPI | None = None
        self.port = 0
        self.injected = Counter()
        self.service = self._service()

    def _service(self) -> CountingService:
        return CountingService(BlockStore(self.folder / "blocks.sqlite"), self.switch, allowlist=Allowlist(ALLOWLISTED),
                               breaker=CircuitBreaker(max_per_minute=10**9, max_blocked_share=1.0))  # fmt: skip

    def up(self) -> None:
        self.server = IsolationAPI(self.service, "127.0.0.1", self.port, workers=4)
        self.port = self.server.address[1]
        flaky = Flaky(self.server.app, self.rng, before=0.05, after=0.05)
        self.server.server.config.app = flaky  # uvicorn loads the app on start
        self.server.start()
        self._flaky = flaky

    def down(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.injected.update(self._flaky.injected)
            self.server = None

    def restart(self, wipe_switch: bool) -> None:
        self.down()
        self.service.store.close()
        if wipe_switch:
            self.switch.rules.clear()
        self.service = self._service()
        assert self.service.reinstall() >= 0  # the controller re-installs from its store
        self.up()


def kill(hook: IsolationHook) -> None:
    """The gateway dies: the delivery thread stops, no final delivery, the queue stays on disk."""
    hook._stop.set()
    hook._wake.set()
    hook._thread.join(10)
    hook._db.close()


@pytest.mark.slow
def test_soak_the_switch_ends_with_the_verdicts_net_effect(tmp_path):
    rng = random.Random(14)
    switch = Switch()
    CountingService.applied = Counter()
    controller = ControllerSide(tmp_path, switch, rng)
    controller.up()
    url = f"http://127.0.0.1:{controller.port}"
    queue = tmp_path / "queue.sqlite"

    def new_hook() -> IsolationHook:
        return IsolationHook(url, queue, timeout=2.0, interval=0.05, backoff=0.01, max_backoff=0.1, max_attempts=25,
                             max_age=10**6)  # fmt: skip

    hook = new_hook()
    hosts = [f"10.50.{i // 200}.{i % 200 + 1}" for i in range(400)] + ALLOWLISTED + BROKEN
    isolated: set[str] = set()
    emitted = Counter()
    events = Counter()
    started = time.monotonic()
    for phase in range(PHASES):
        event = ["api_down", "hook_restart", "hook_kill", "controller_restart", "controller_restart_wiped",
                 "none"][phase % 6]  # fmt: skip
        if event == "api_down":
            controller.down()
        for _ in range(VERDICTS // PHASES):
            host = rng.choice(hosts)
            action = "release" if host in isolated else "isolate"
            (isolated.discard if action == "release" else isolated.add)(host)
            hook.emit(HostVerdict(host, action, 0.0, 20, 19 if action == "isolate" else 1))
            emitted[(host, action)] += 1
            if event.startswith("controller") and _ == VERDICTS // PHASES // 2:
                controller.restart(wipe_switch=event.endswith("wiped"))
        if event == "api_down":
            time.sleep(0.3)
            controller.up()
        elif event == "hook_restart":
            hook.close()
            hook = new_hook()
        elif event == "hook_kill":
            kill(hook)
            hook = new_hook()
        events[event] += 1
    emitting = time.monotonic() - started
    assert hook.drain(120), f"{hook.pending()} calls still queued"
    seconds = time.monotonic() - started
    summary, dead = hook.summary(), hook.dead_letters()
    hook.close()
    controller.down()

    never = set(ALLOWLISTED) | set(BROKEN)
    expected = {h for h in isolated if h not in never}
    applied = CountingService.applied
    print(f"\nsoak: {VERDICTS} verdicts ({sum(v for (h, a), v in emitted.items() if a == 'isolate')} isolate) over "
          f"{len(hosts)} hosts in {seconds:.1f} s ({emitting:.1f} s emitting); events {dict(events)}; injected 5xx "
          f"{dict(controller.injected)}; last hook run {summary}; dead letters {len(dead)}; switch holds "
          f"{len(switch.rules)} blocks (expected {len(expected)})")  # fmt: skip
    assert switch.rules == expected
    for host in hosts:
        if host in never:
            continue
        assert applied[(host, "blocked")] == emitted[(host, "isolate")], host  # nothing lost, nothing twice
        assert applied[(host, "unblocked")] == emitted[(host, "release")], host
        assert applied[(host, "already_blocked")] == applied[(host, "not_blocked")] == 0, host
    expected_dead = Counter({(h, "POST"): emitted[(h, "isolate")] for h in never})
    assert Counter((d["host"], d["call"]["method"]) for d in dead) == expected_dead
    assert {d["code"] for d in dead if d["host"] in ALLOWLISTED} == {403}
    assert all(d["code"] >= 500 and d["attempts"] == 25 for d in dead if d["host"] in BROKEN)
    assert controller.injected["before"] > 50 and controller.injected["after"] > 50
