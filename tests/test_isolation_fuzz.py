"""Fuzz test of the isolation API (issue 14): random methods, paths, headers and bodies (JSON of any shape and raw
bytes) go through the ASGI app and the service over a real store; no exception may escape and every answer must
be strict JSON with a known status code. Authentication is on: each request carries an admin token, a gateway's
token scoped to 10.0.0.0/8 and 2001:db8::/32, a wrong token, none or junk. Hypothesis with a fixed seed, derandomised under CI=true, bounded."""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from conftest import FakeBackend
from sdn.api import IsolationApp
from sdn.auth import Gateway, TokenStore, digest, new_token, save
from sdn.blocklist import BlockStore
from sdn.isolation import IsolationService
from sdn.safety import Allowlist, CircuitBreaker

CODES = {200, 400, 401, 403, 404, 405, 408, 413, 415, 502}
IN_CI = os.environ.get("CI", "").lower() == "true"

addresses = st.one_of(st.ip_addresses().map(str), st.sampled_from(["::ffff:10.0.0.1", "fe80::1%eth0", "0.0.0.0",
                                                                   "255.255.255.255", "10.0.0.0/8", ""]),
                      st.text(max_size=40))  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=30))  # fmt: skip
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                         max_size=3), max_leaves=6)
bodies = st.one_of(
    st.fixed_dictionaries({"ip": addresses}, optional={"ttl": values, "reason": values, "other": values}).map(
        lambda d: json.dumps(d).encode()),
    values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)  # fmt: skip
paths = st.one_of(st.sampled_from(["/blocks", "/health", "/"]), addresses.map(lambda a: "/blocks/" + a),
                  st.text(max_size=30).map(lambda t: "/" + t))  # fmt: skip
ADMIN, SCOPED = new_token("admin"), new_token("gw")
authorization = st.sampled_from([f"Bearer {ADMIN}".encode(), f"Bearer {SCOPED}".encode(), f"Bearer {SCOPED}".encode(),
                                 f"Bearer {new_token('gw')}".encode(), f"bearer {ADMIN}x".encode(), b"", b"Basic eDp5"])
headers = st.fixed_dictionaries({b"authorization": authorization | st.binary(max_size=80)}, optional={
    b"content-type": st.sampled_from([b"application/json", b"text/plain", b"application/json; charset=utf-8", b""])
    | st.binary(max_size=20),
    b"idempotency-key": st.sampled_from([b"k-1", b"k-2"]) | st.binary(max_size=140),
    b"content-length": st.sampled_from([b"0", b"5", b"99999999", b"-1", b"abc"]),
})  # fmt: skip


def _strict(name: str):
    raise ValueError(f"{name} in an answer")


def make_app() -> IsolationApp:
    folder = Path(tempfile.mkdtemp(prefix="isolation-fuzz-"))
    atexit.register(shutil.rmtree, folder, True)
    tokens = folder / "tokens.json"
    save(tokens, {"admin": Gateway("admin", digest(ADMIN), (), admin=True),
                  "gw": Gateway("gw", digest(SCOPED), tuple(map(ipaddress.ip_network, ["10.0.0.0/8", "2001:db8::/32"])))})
    service = IsolationService(BlockStore(":memory:"), FakeBackend(hosts=1000), allowlist=Allowlist(["10.9.0.0/16"]),
                               breaker=CircuitBreaker(max_per_minute=5, max_blocked_share=0.5),
                               own_addresses=["10.1.2.3"])  # fmt: skip
    return IsolationApp(service, auth=TokenStore(tokens), read_timeout=0.2, workers=2)


APP = make_app()


async def _exchange(app, method: str, path: str, header_map: dict, body: bytes) -> tuple[int, bytes]:
    scope = {"type": "http", "method": method, "path": path, "headers": list(header_map.items())}
    sent = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(10)  # a client that sends nothing more: the app's read timeout ends it
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@seed(14)
@settings(max_examples=400, deadline=None, derandomize=IN_CI, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]), path=paths, header_map=headers, body=bodies)
def test_any_request_gets_a_strict_json_answer(method, path, header_map, body):
    code, data = asyncio.run(_exchange(APP, method, path, header_map, body))
    answer = json.loads(data, parse_constant=_strict)
    assert code in CODES and isinstance(answer, dict), (code, answer)
    if code == 200 and method == "POST":
        block = answer["block"]
        assert block and math.isfinite(block["created"]) and (block["expires"] is None or math.isfinite(block["expires"]))
    admin = {b"authorization": f"Bearer {ADMIN}".encode()}
    blocks = json.loads(asyncio.run(_exchange(APP, "GET", "/blocks", admin, b""))[1], parse_constant=_strict)["blocks"]
    assert not {"0.0.0.0", "255.255.255.255", "10.1.2.3", "127.0.0.1", "::1"} & {b["ip"] for b in blocks}


@seed(14)
@settings(max_examples=300, deadline=None, derandomize=IN_CI, database=None)
@given(ip=st.one_of(addresses, values), reason=values, ttl=values, key=st.one_of(st.none(), values))
def test_the_service_refuses_bad_input_with_an_outcome(ip, reason, ttl, key):
    service = APP.service
    outcome = service.block(ip, reason, ttl, key)
    json.dumps(outcome.as_dict(), allow_nan=False)
    assert outcome.status in {"blocked", "already_blocked", "refused", "invalid"}
    json.dumps(service.unblock(ip, key).as_dict(), allow_nan=False)
