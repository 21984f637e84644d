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


class HoldingBackend(FakeBackend):
    """A fake switch that also says which rules it holds (as the controller's record does); ``forget`` loses them."""

    def held_by(self, ip):
        return [1] if ip in self.rules else []

    def held_everywhere(self, ip):
        return ip in self.rules

    def forget(self):
        self.rules.clear()


@pytest.mark.parametrize("ip, why", [("0.0.0.0", "unspecified"), ("::", "unspecified"), ("255.255.255.255", "broadcast"),
                                     ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("127.0.0.1", "loopback"),
                                     ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
                                     ("10.1.2.3", "controller's own")])  # fmt: skip
def test_addresses_that_are_never_blocked(tmp_path, ip, why):
    """Reproduced on main: 0.0.0.0, 255.255.255.255, multicast and 127.0.0.1 were blocked."""
    isolation, backend, _, _ = service(tmp_path, own_addresses=["10.1.2.3"])
    outcome = isolation.block(ip, "bot verdict")
    assert outcome.status == "refused" and why in outcome.reason and backend.rules == {}


def test_ipv4_mapped_ipv6_folds_to_ipv4_before_the_allowlist(tmp_path):
    """Reproduced on main: ::ffff:10.0.0.1 passed an allowlist of 10.0.0.0/28 and installed IPv6-only matches."""
    isolation, backend, _, _ = service(tmp_path, allowlist=Allowlist(["10.0.0.0/28"]))
    assert isolation.block("::ffff:10.0.0.1", "x").status == "refused" and backend.rules == {}
    outcome = isolation.block("::FFFF:10.0.0.99", "x")
    assert (outcome.status, outcome.ip) == ("blocked", "10.0.0.99") and backend.rules == {"10.0.0.99": None}
    assert isolation.unblock("::ffff:10.0.0.99").status == "unblocked" and backend.rules == {}


@pytest.mark.parametrize("ttl", [float("nan"), float("inf"), -5, 0, True, "5", 1e12, [1]])
def test_ttl_must_be_a_finite_positive_number(tmp_path, ttl):
    """Reproduced on main: NaN stored a permanent block, inf wrote Infinity into GET /blocks, true meant 1 s."""
    isolation, backend, _, store = service(tmp_path)
    outcome = isolation.block("10.0.0.9", "x", ttl=ttl)
    assert outcome.status == "invalid" and "ttl" in outcome.reason and store.get("10.0.0.9") is None


@pytest.mark.parametrize("ip", ["fe80::1%eth0", "10.0.0.0/24", "", None, 7, "1" * 100])
def test_bad_addresses_are_invalid_not_failures(tmp_path, ip):
    """Reproduced on main: a scoped address fe80::1%eth0 passed the check and every install then failed (a 5xx)."""
    isolation, backend, _, _ = service(tmp_path)
    outcome = isolation.block(ip, "x")
    assert outcome.status == "invalid" and backend.installs == 0 and len(outcome.ip) <= 80


def test_a_reason_is_bounded(tmp_path):
    """Reproduced on main: a 5 MB reason was stored."""
    isolation, _, _, store = service(tmp_path)
    assert isolation.block("10.0.0.9", "x" * 5_000_000).status == "invalid" and store.get("10.0.0.9") is None
    assert isolation.block("10.0.0.9", {"a": 1}).status == "invalid"
    assert isolation.block("10.0.0.9", "x" * 1000).status == "blocked"


def test_an_idempotency_key_applies_a_call_once(tmp_path):
    """A block sent again with its key (the hook crashed before it saw the answer) after an unblock is answered
    from the record, not applied a second time."""
    isolation, backend, _, _ = service(tmp_path)
    first = isolation.block("10.0.0.5", "bot", key="k-1")
    assert isolation.unblock("10.0.0.5", key="k-2").status == "unblocked"
    again = isolation.block("10.0.0.5", "bot", key="k-1")
    assert (first.status, again.status, again.replayed) == ("blocked", "blocked", True)
    assert backend.rules == {} and backend.installs == 1
    assert isolation.block("10.0.0.5", "bot", key="bad key!").status == "invalid"


def test_transient_outcomes_are_not_recorded_under_the_key(tmp_path):
    isolation, backend, clock, _ = service(tmp_path, breaker=CircuitBreaker(max_per_minute=1))
    isolation.block("10.0.0.1", "x")
    refused = isolation.block("10.0.0.2", "x", key="k-b")
    assert refused.status == "refused" and 0 < refused.retry_after <= 60.01
    backend.fail = True
    clock.now += 61
    assert isolation.block("10.0.0.2", "x", key="k-b").status == "failed"
    backend.fail = False
    assert isolation.block("10.0.0.2", "x", key="k-b").status == "blocked"


def test_a_block_the_switch_lost_is_put_back(tmp_path):
    """Reproduced on main: a rule gone from the switch (hard_timeout 65,535 s) stayed listed, and a repeated POST
    answered already_blocked without installing it again."""
    store = BlockStore(tmp_path / "blocks.sqlite")
    backend = HoldingBackend()
    isolation = IsolationService(store, backend, clock=Clock())
    isolation.block("10.0.0.5", "bot", ttl=200_000)
    assert isolation.report()[0]["enforced"] is True and isolation.report()[0]["switches"] == [1]
    backend.forget()
    assert isolation.report()[0]["enforced"] is False  # GET /blocks says what the switches hold
    assert isolation.block("10.0.0.5", "bot").status == "already_blocked" and "10.0.0.5" in backend.rules
    backend.forget()
    assert isolation.reconcile() == 1 and backend.rules["10.0.0.5"] == pytest.approx(200_000)


def test_the_controller_installs_rules_without_a_switch_side_timeout(monkeypatch):
    """Reproduced on main: hard_timeout was min(ttl, 65535), so a block with a longer TTL vanished from the switch
    after about 18 h."""
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

    from sdn.controller import IsolationSwitch

    class Datapath:
        id, ofproto, ofproto_parser = 1, ofproto_v1_3, ofproto_v1_3_parser

        def __init__(self):
            self.sent = []

        def send_msg(self, msg):
            self.sent.append(msg)

    switch = IsolationSwitch.__new__(IsolationSwitch)
    import threading

    switch.lock, switch.datapaths, switch.held = threading.Lock(), {}, {}
    dp = Datapath()
    switch.datapaths[1], switch.held[1] = dp, set()
    monkeypatch.setattr(switch, "barrier", lambda dp: None, raising=False)
    switch.install("10.0.0.5", 100_000.0)
    assert dp.sent and all(m.hard_timeout == 0 and m.idle_timeout == 0 for m in dp.sent)
    assert switch.held_by("10.0.0.5") == [1] and switch.held_everywhere("10.0.0.5")
    switch.remove("10.0.0.5")
    assert switch.held_by("10.0.0.5") == [] and not switch.held_everywhere("10.0.0.5")
