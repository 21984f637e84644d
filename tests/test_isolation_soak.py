"""Soak test of the isolation path (issue 14): gateway-side hook -> isolation API (uvicorn, loopback) -> isolation
service -> a fake switch, with 10,000 host verdicts while the API goes down and up, the hook is closed or killed
and restarted, the service (controller side) is restarted over its store (once with the switch's rules wiped),
and 5xx answers are injected before and after the service applied a call. At the end the switch holds exactly
the verdicts' net effect, every call was applied exactly once, and the dead-letter table lists exactly the calls
that can never succeed (allowlisted hosts, a host whose rules the switch never confirms). The circuit breaker's
limits are raised here; it is exercised in tests/test_isolation_hook.py. The API authenticates: the hooks send one
gateway's token (the serve runs read it from a 0600 token file)."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import RAW_FILE

from flows.normalise import UnswRaw
from gateway.hosts import HostVerdict
from sdn.api import IsolationAPI
from sdn.auth import Gateway, TokenStore, digest, new_token, save
from sdn.blocklist import BlockStore
from sdn.hook import IsolationHook
from sdn.isolation import IsolationService
from sdn.safety import Allowlist, CircuitBreaker

VERDICTS = 10_000
PHASES = 20
ALLOWLISTED = [f"10.60.0.{i}" for i in range(1, 4)]
BROKEN = ["10.61.0.1"]  # the switch never confirms its rules: every block answers 502
REPO = Path(__file__).resolve().parents[1]
TOKEN = new_token("soak")


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
        save(folder / "tokens.json", {"soak": Gateway("soak", digest(TOKEN), (ipaddress.ip_network("10.0.0.0/8"),))})
        self.token_file = folder / "soak.token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.service = self._service()

    def _service(self) -> CountingService:
        return CountingService(BlockStore(self.folder / "blocks.sqlite"), self.switch, allowlist=Allowlist(ALLOWLISTED),
                               breaker=CircuitBreaker(max_per_minute=10**9, max_blocked_share=1.0))  # fmt: skip

    def up(self) -> None:
        self.server = IsolationAPI(self.service, "127.0.0.1", self.port, workers=4,
                                   auth=TokenStore(self.folder / "tokens.json"))  # fmt: skip
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
                             max_age=10**6, token=TOKEN)  # fmt: skip

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


# --- the same soak through `python -m gateway serve` ---------------------------------------------------------

SERVE_PHASES = 20
BURSTS_PER_SLOT = 25  # each burst: 10 flows of one host, all scored attack or all benign -> one host verdict
SLOTS_PER_PHASE = 20  # 20 phases x 20 slots x 25 bursts = 10,000 host verdicts, 100,000 flows
SLOT_SECONDS = 61.0  # > the host window (60 s): a host's next burst is judged on its own flows only


def confident_lines(bundle_dir: Path, source: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    """Raw UNSW-NB15 lines the bundle scores at least 0.1 above its threshold (attack) and at most 0.05 (benign),
    scored through serve."""
    flows = tmp_path / "pool.jsonl"
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--bundle", str(bundle_dir), "--source",
                           str(source), "--out", str(flows), "--host-sink", ""], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = source.read_text().splitlines()
    scores = {json.loads(row)["line"]: json.loads(row)["score"] for row in flows.read_text().splitlines()}
    threshold = json.loads((bundle_dir / "manifest.json").read_text())["threshold"]
    attack = [lines[n - 1] for n, s in scores.items() if s >= threshold + 0.1]
    benign = [lines[n - 1] for n, s in scores.items() if s <= 0.05]
    assert len(attack) >= 20 and len(benign) >= 200, (len(attack), len(benign))
    return attack, benign


def phase_capture(rng: random.Random, hosts: list[str], pools: tuple[list[str], list[str]], start: float
                  ) -> tuple[list[str], list[tuple[str, str]]]:  # fmt: skip
    """A phase's capture lines and the host verdicts a fresh gateway must take on them, in order: a host's burst is
    attack when the gateway has not isolated it in this phase (-> isolate), benign when it has (-> release)."""
    columns = UnswRaw().columns
    src, stime, ltime = columns.index("src_ip"), columns.index("start_time"), columns.index("ltime")
    isolated: set[str] = set()
    lines, verdicts = [], []
    for slot in range(SLOTS_PER_PHASE):
        for burst, host in enumerate(rng.sample(hosts, BURSTS_PER_SLOT)):
            action = "release" if host in isolated else "isolate"
            (isolated.discard if action == "release" else isolated.add)(host)
            verdicts.append((host, action))
            pool = pools[1] if action == "release" else pools[0]
            for flow in range(10):
                cells = rng.choice(pool).split(",")
                moment = start + slot * SLOT_SECONDS + burst * 0.02 + flow * 0.001
                cells[src], cells[stime], cells[ltime] = host, f"{moment:.3f}", f"{moment + 0.5:.3f}"
                lines.append(",".join(cells))
    return lines, verdicts


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_through_gateway_serve(tmp_path, bundle_dir, data_dir):
    """10,000 host verdicts taken by `python -m gateway serve` (20 gateway processes, 4 of them killed with SIGKILL
    while delivering) on captures built from confidently scored real records, sent by its `sdn:` sink to the
    isolation API while the API goes down and up, the controller restarts (once wiping the switch) and 5xx answers
    are injected: the switch ends with the verdicts' net effect, each verdict applied exactly once."""
    rng = random.Random(1414)
    pools = confident_lines(bundle_dir, data_dir / "unsw-nb15" / "raw" / RAW_FILE, tmp_path)
    switch = Switch()
    CountingService.applied = Counter()
    controller = ControllerSide(tmp_path, switch, rng)
    controller.up()
    url = f"http://127.0.0.1:{controller.port}"
    queue, log = tmp_path / "queue.sqlite", tmp_path / "hosts.jsonl"
    sink = f"sdn:{url}?queue={queue}&max_attempts=25&max_age=1000000&interval=0.05&timeout=2" \
           f"&token_file={controller.token_file}"  # fmt: skip
    hosts = [f"10.50.{i // 200}.{i % 200 + 1}" for i in range(400)] + ALLOWLISTED + BROKEN
    predicted: list[tuple[str, str]] = []
    events, started = Counter(), time.monotonic()
    for phase in range(SERVE_PHASES):
        event = ["restart", "api_down", "kill", "controller_restart", "controller_restart_wiped"][phase % 5]
        lines, verdicts = phase_capture(rng, hosts, pools, 1_421_000_000.0 + phase * 10_000)
        predicted += verdicts
        capture = tmp_path / f"phase{phase:02d}.csv"
        capture.write_text("\n".join(lines) + "\n")
        command = [sys.executable, "-m", "gateway", "serve", "--bundle", str(bundle_dir), "--source", str(capture),
                   "--out", os.devnull, "--host-sink", sink, "--host-sink", f"file:{log}"]  # fmt: skip
        if event == "kill":
            command += ["--follow", "--idle-exit", "120"]
        if event == "api_down":
            controller.down()
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            if event.startswith("controller"):
                time.sleep(rng.uniform(1.0, 2.0))
                controller.restart(wipe_switch=event.endswith("wiped"))
            if event == "kill":  # every verdict is queued (the sdn sink comes first), delivery under way
                deadline = time.monotonic() + 120
                while (log.read_text().count("\n") if log.exists() else 0) < len(predicted):
                    assert time.monotonic() < deadline and process.poll() is None, "serve stalled"
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, 0.3))
                process.send_signal(signal.SIGKILL)  # our own child, by handle
            _, stderr = process.communicate(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == (-signal.SIGKILL if event == "kill" else 0), stderr[-2000:]
        if event == "api_down":
            controller.up()
        events[event] += 1
    hook = IsolationHook(url, queue, timeout=2.0, interval=0.05, backoff=0.01, max_backoff=0.1, max_attempts=25,
                         max_age=10**6, token=TOKEN)  # fmt: skip
    assert hook.drain(180), f"{hook.pending()} calls still queued"
    seconds = time.monotonic() - started
    dead = hook.dead_letters()
    hook.close()
    controller.down()

    taken = [(v["host"], v["action"]) for v in map(json.loads, log.read_text().splitlines())]
    assert taken == predicted  # serve took exactly the verdicts the captures imply
    never = set(ALLOWLISTED) | set(BROKEN)
    net: dict[str, bool] = {}
    for host, action in taken:
        net[host] = action == "isolate"
    expected = {h for h, on in net.items() if on and h not in never}
    applied = CountingService.applied
    print(f"\nsoak through serve: {len(taken)} host verdicts from {SERVE_PHASES} gateway runs in {seconds:.1f} s; "
          f"events {dict(events)}; injected 5xx {dict(controller.injected)}; dead letters {len(dead)}; switch "
          f"holds {len(switch.rules)} blocks (expected {len(expected)})")  # fmt: skip
    assert switch.rules == expected
    for host in set(hosts) - never:  # each verdict applied exactly once, in order: replay the API's answers
        blocked, answers = False, Counter()
        for h, action in taken:
            if h == host:
                answers[("blocked" if not blocked else "already_blocked") if action == "isolate"
                        else ("unblocked" if blocked else "not_blocked")] += 1  # fmt: skip
                blocked = action == "isolate"
        assert Counter({k: v for (h, k), v in applied.items() if h == host}) == answers, host
    emitted_never = Counter((h, "POST") for h, a in taken if h in never and a == "isolate")
    assert Counter((d["host"], d["call"]["method"]) for d in dead) == emitted_never
    assert controller.injected["before"] > 50 and controller.injected["after"] > 50
