"""The isolation service: block / unblock / list / expire / reconcile, behind the address checks, the allowlist and
the circuit breaker, over a durable store, enforcing through a rule backend (the os-ken app installs OpenFlow drop
rules; tests use a fake).

Calls are idempotent: blocking a blocked address or unblocking a free one changes nothing and says so. A call may
carry an idempotency key: its first final outcome is recorded and a call with the same key gets that outcome again
without being applied (so a block sent again after a DELETE that followed it does not block a second time). A
block is stored only after the backend confirmed its rules (the OpenFlow barrier), so the store never claims more
than the switches enforce; on a backend failure nothing is stored and the call reports the error (retryable).
Rules carry no switch-side timeout: the controller's timer lifts expired blocks (:meth:`expire`) and puts back
rules a switch lacks (:meth:`reconcile`), so the switches follow the store for any TTL.

Input is checked before anything else: the address must be a plain IPv4/IPv6 address (IPv4-mapped IPv6 folds to
IPv4; unspecified, broadcast, multicast, loopback and the controller's own addresses are refused), ``ttl`` a
finite number of seconds in (0, ``MAX_TTL``] (not a bool), ``reason`` a string of at most ``MAX_REASON``
characters, the key at most 128 characters of ``[A-Za-z0-9._:-]``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from sdn.blocklist import Block, BlockStore, canonical_ip
from sdn.safety import Allowlist, CircuitBreaker, never_blocked

MAX_TTL = 10 * 365 * 86400.0  # ten years
MAX_REASON = 1000
KEY_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
STATUSES = ("blocked", "already_blocked", "unblocked", "not_blocked", "refused", "invalid", "failed")


class RuleBackend(Protocol):
    def install(self, ip: str, ttl: float | None) -> None:
        """Drop everything from and to ``ip`` (and its ARP) on every switch; return once confirmed; raise if not."""

    def remove(self, ip: str) -> None:
        """Remove those rules; return once confirmed."""

    def known_hosts(self) -> int:
        """How many hosts the switches have seen (the circuit breaker's share limit)."""


def held_by(backend: RuleBackend, ip: str) -> list[int] | None:
    """The switches that hold ``ip``'s rules, if the backend tracks it (``held_by``), else None."""
    method = getattr(backend, "held_by", None)
    return None if method is None else sorted(method(ip))


def held_everywhere(backend: RuleBackend, ip: str) -> bool | None:
    """Whether every connected switch holds ``ip``'s rules (None: the backend does not say)."""
    method = getattr(backend, "held_everywhere", None)
    return None if method is None else bool(method(ip))


@dataclass
class Outcome:
    ok: bool
    status: str  # one of STATUSES
    ip: str = ""
    reason: str = ""
    block: Block | None = None
    retry_after: float | None = None  # refusals that pass later (circuit breaker): seconds to wait
    replayed: bool = False  # answered from the record of an earlier call with the same idempotency key

    @property
    def final(self) -> bool:
        """Whether the same call would get the same answer again (recorded under its idempotency key)."""
        return self.status != "failed" and self.retry_after is None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "status": self.status, "ip": self.ip, "reason": self.reason,
                "block": self.block.as_dict() if self.block else None, "retry_after": self.retry_after,
                "replayed": self.replayed}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> "Outcome":
        block = Block(**data["block"]) if data.get("block") else None
        return cls(data["ok"], data["status"], data["ip"], data["reason"], block, data.get("retry_after"))


def check_ttl(ttl: object) -> float | None:
    """``ttl`` as seconds, or None (no expiry); ValueError unless a finite number in (0, MAX_TTL]."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ValueError(f"ttl must be a number of seconds or null, got {json.dumps(ttl)[:80]}")
    if not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be > 0 seconds and at most {MAX_TTL:.0f}, got {ttl}")
    return float(ttl)


def check_reason(reason: object) -> str:
    if not isinstance(reason, str):
        raise ValueError(f"reason must be a string, got {type(reason).__name__}")
    if len(reason) > MAX_REASON:
        raise ValueError(f"reason has {len(reason)} characters; at most {MAX_REASON} are accepted")
    return reason


def check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ValueError("idempotency key must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    return key


class IsolationService:
    def __init__(self, store: BlockStore, backend: RuleBackend, allowlist: Allowlist | None = None,
                 breaker: CircuitBreaker | None = None, clock: Callable[[], float] = time.time,
                 own_addresses: Iterable[str] = ()) -> None:  # fmt: skip
        self.store, self.backend = store, backend
        self.allowlist = allowlist or Allowlist()
        self.breaker = breaker or CircuitBreaker()
        self.clock = clock
        self.own = {canonical_ip(a) for a in own_addresses}
        self._lock = threading.Lock()

    # ---- calls -------------------------------------------------------------------------------------------
    def block(self, ip: object, reason: object = "", ttl: object = None, key: object = None) -> Outcome:
        try:
            key = check_key(key)
            address = canonical_ip(ip)
            ttl, reason = check_ttl(ttl), check_reason(reason)
        except ValueError as err:
            return Outcome(False, "invalid", str(ip)[:80], str(err))
        return self._keyed(key, lambda: self._block(address, reason, ttl))

    def unblock(self, ip: object, key: object = None) -> Outcome:
        try:
            key = check_key(key)
            address = canonical_ip(ip)
        except ValueError as err:
            return Outcome(False, "invalid", str(ip)[:80], str(err))
        return self._keyed(key, lambda: self._unblock(str(address)))

    def _keyed(self, key: str | None, apply: Callable[[], Outcome]) -> Outcome:
        with self._lock:
            if key is not None:
                recorded = self.store.answer_for(key)
                if recorded is not None:
                    outcome = Outcome.from_dict(json.loads(recorded))
                    outcome.replayed = True
                    return outcome
            outcome = apply()
            if key is not None and outcome.final:
                self.store.record_answer(key, json.dumps(outcome.as_dict()), self.clock())
            return outcome

    def _block(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, reason: str, ttl: float | None) -> Outcome:
        ip = str(address)
        why = never_blocked(address, self.own)
        if why:
            return Outcome(False, "refused", ip, f"{ip} is {why} and is never blocked")
        covered = self.allowlist.covers(address)
        if covered:
            return Outcome(False, "refused", ip, f"{ip} is allowlisted ({covered}) and is never blocked")
        now = self.clock()
        existing = self.store.get(ip)
        if existing and (existing.expires is None or existing.expires > now):
            if held_everywhere(self.backend, ip) is False:  # the store has it, a switch does not: put it back
                try:
                    self.backend.install(ip, None if existing.expires is None else existing.expires - now)
                except Exception as err:
                    return Outcome(False, "failed", ip, f"rules not confirmed: {err}")
            return Outcome(True, "already_blocked", ip, existing.reason, existing)
        if existing:  # expired but not yet lifted by the timer: lift it now, then block afresh
            try:
                self._lift(existing)
            except Exception as err:
                return Outcome(False, "failed", ip, f"expired rules not removed: {err}")
        verdict = self.breaker.check(now, len(self.store.active(now)), self.backend.known_hosts())
        if not verdict.allowed:
            return Outcome(False, "refused", ip, verdict.reason, retry_after=verdict.retry_after)
        try:
            self.backend.install(ip, ttl)
        except Exception as err:  # the switch refused or did not confirm: nothing is stored
            return Outcome(False, "failed", ip, f"rules not confirmed: {err}")
        block = Block(ip=ip, reason=reason, created=now, expires=None if ttl is None else now + ttl)
        self.store.add(block)
        self.breaker.record(now)
        return Outcome(True, "blocked", ip, block.reason, block)

    def _unblock(self, ip: str) -> Outcome:
        existing = self.store.get(ip)
        if existing is None:
            return Outcome(True, "not_blocked", ip)
        try:
            self._lift(existing)
        except Exception as err:
            return Outcome(False, "failed", ip, f"rules not removed: {err}")
        return Outcome(True, "unblocked", ip, existing.reason, existing)

    # ---- state -------------------------------------------------------------------------------------------
    def blocks(self) -> list[Block]:
        return self.store.active(self.clock())

    def report(self) -> list[dict]:
        """Active blocks, each with the switches that hold its rules and whether every connected one does."""
        return [{**block.as_dict(), "switches": held_by(self.backend, block.ip),
                 "enforced": held_everywhere(self.backend, block.ip)} for block in self.blocks()]  # fmt: skip

    def expire(self) -> list[Block]:
        """Lift every block whose time to live has passed (the controller calls this on a timer)."""
        lifted = []
        with self._lock:
            for block in self.store.expired(self.clock()):
                try:
                    self._lift(block)
                    lifted.append(block)
                except Exception:  # the switch is away: try again on the next tick
                    continue
        return lifted

    def reconcile(self) -> int:
        """Install again every active block some connected switch lacks; returns how many were put back."""
        count = 0
        with self._lock:
            now = self.clock()
            for block in self.store.active(now):
                if held_everywhere(self.backend, block.ip) is False:
                    try:
                        self.backend.install(block.ip, None if block.expires is None else block.expires - now)
                        count += 1
                    except Exception:  # the switch left again: the next tick retries
                        continue
        return count

    def reinstall(self) -> int:
        """Install every active block again (a switch connected, or the controller restarted)."""
        count = 0
        with self._lock:
            now = self.clock()
            for block in self.store.active(now):
                self.backend.install(block.ip, None if block.expires is None else block.expires - now)
                count += 1
        return count

    def _lift(self, block: Block) -> None:
        self.backend.remove(block.ip)
        self.store.remove(block.ip)
