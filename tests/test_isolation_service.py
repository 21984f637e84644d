"""sdn isolation service logic (issue 6, point 1) with a fake rule backend: idempotent calls, allowlist, circuit
breaker, TTL expiry, durability across a restart, nothing stored when the switch does not confirm."""

from __future__ import annotations

import pytest

from conftest import FakeBackend
from sdn.blocklist import BlockStore
from sdn.isolation import IsolationService
from sdn.safety import Allowlist, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(tmp_path, **kwargs):
    clock = Clock()
    backend = FakeBackend(kwargs.pop("hosts", 40))
    store = BlockStore(tmp_path / "blocks.sqlite")
    return IsolationService(store, backend, clock=clock, **kwargs), backend, clock, store


def test_block_is_idempotent_and_unblock_restores(tmp_path):
    isolation, backend, _, _ = service(tmp_path)
    first = isolation.block("10.0.0.5", "bot verdict")
    again = isolation.block("10.0.0.5", "second verdict")
    assert (first.status, again.status) == ("blocked", "already_blocked") and backend.installs == 1
    assert again.reason == "bot verdict" and [b.ip for b in isolation.blocks()] == ["10.0.0.5"]
    assert isolation.unblock("10.0.0.5").status == "unblocked" and backend.rules == {}
    assert isolation.unblock("10.0.0.5").status == "not_blocked"


@pytest.mark.parametrize("ip", ["10.0.0.1", "192.168.7.200", "fe80::1"])
def test_allowlisted_addresses_are_never_blocked(tmp_path, ip):
    isolation, backend, _, _ = service(tmp_path, allowlist=Allowlist(["10.0.0.1", "192.168.7.0/24", "fe80::/10"]))
    outcome = isolation.block(ip, "bot verdict")
    assert outcome.status == "refused" and "allowlisted" in outcome.reason and backend.rules == {}


def test_bad_input_is_refused_with_a_reason(tmp_path):
    isolation, backend, _, _ = service(tmp_path)
    assert "not an IP address" in isolation.block("10.0.0.999", "x").reason
    assert "ttl must be > 0" in isolation.block("10.0.0.9", "x", ttl=0).reason
    with pytest.raises(ValueError, match="allowlist entry"):
        Allowlist(["not-a-network"])


def test_ttl_blocks_lift_themselves(tmp_path):
    isolation, backend, clock, _ = service(tmp_path)
    isolation.block("10.0.0.7", "bot verdict", ttl=30)
    clock.now += 29
    assert isolation.expire() == [] and "10.0.0.7" in backend.rules
    clock.now += 2
    assert [b.ip for b in isolation.expire()] == ["10.0.0.7"] and backend.rules == {} and isolation.blocks() == []


def test_circuit_breaker_caps_the_rate_and_the_share(tmp_path):
    isolation, _, clock, _ = service(tmp_path, breaker=CircuitBreaker(max_per_minute=3, max_blocked_share=0.5))
    assert [isolation.block(f"10.0.1.{i}", "x").status for i in range(4)] == ["blocked"] * 3 + ["refused"]
    assert "3 blocks in the last minute" in isolation.block("10.0.1.9", "x").reason
    clock.now += 61
    assert isolation.block("10.0.1.9", "x").status == "blocked"
    few, _, _, _ = service(tmp_path / "few", hosts=10, breaker=CircuitBreaker(max_per_minute=100, max_blocked_share=0.2))
    statuses = [few.block(f"10.0.2.{i}", "x").status for i in range(4)]
    assert statuses == ["blocked", "blocked", "refused", "refused"]  # 3 of 10 known hosts would pass 20%


def test_nothing_is_stored_when_the_switch_does_not_confirm(tmp_path):
    isolation, backend, _, store = service(tmp_path)
    backend.fail = True
    outcome = isolation.block("10.0.0.8", "bot verdict")
    assert outcome.status == "failed" and "barrier" in outcome.reason and store.get("10.0.0.8") is None


def test_blocks_survive_a_restart_and_are_reinstalled(tmp_path):
    isolation, _, clock, store = service(tmp_path)
    isolation.block("10.0.0.5", "bot verdict")
    isolation.block("2001:db8::5", "bot verdict", ttl=100)
    store.close()
    restarted_backend = FakeBackend()
    restarted = IsolationService(BlockStore(tmp_path / "blocks.sqlite"), restarted_backend, clock=clock)
    assert restarted.reinstall() == 2
    assert restarted_backend.rules == {"10.0.0.5": None, "2001:db8::5": 100.0}
