"""The isolation service: block / unblock / list / expire, behind the allowlist and the circuit breaker, over a
durable store, enforcing through a rule backend (the os-ken app installs OpenFlow drop rules; tests use a fake).

Calls are idempotent: blocking a blocked address or unblocking a free one changes nothing and says so. A block is
stored only after the backend confirmed its rules (the OpenFlow barrier), so the store never claims more than the
switches enforce; on a backend failure nothing is stored and the call reports the error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sdn.blocklist import Block, BlockStore, normalise_ip
from sdn.safety import Allowlist, CircuitBreaker


class RuleBackend(Protocol):
    def install(self, ip: str, ttl: float | None) -> None:
        """Drop everything from and to ``ip`` (and its ARP) on every switch; return once confirmed; raise if not."""

    def remove(self, ip: str) -> None:
        """Remove those rules; return once confirmed."""

    def known_hosts(self) -> int:
        """How many hosts the switches have seen (the circuit breaker's share limit)."""


@dataclass
class Outcome:
    ok: bool
    status: str  # blocked, already_blocked, unblocked, not_blocked, refused, invalid, failed
    ip: str = ""
    reason: str = ""
    block: Block | None = None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "status": self.status, "ip": self.ip, "reason": self.reason,
                "block": self.block.as_dict() if self.block else None}  # fmt: skip


class IsolationService:
    def __init__(self, store: BlockStore, backend: RuleBackend, allowlist: Allowlist | None = None,
                 breaker: CircuitBreaker | None = None, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store, self.backend = store, backend
        self.allowlist = allowlist or Allowlist()
        self.breaker = breaker or CircuitBreaker()
        self.clock = clock
        self._lock = threading.Lock()

    def block(self, ip: str, reason: str, ttl: float | None = None) -> Outcome:
        try:
            ip = normalise_ip(ip)
        except ValueError as err:
            return Outcome(False, "invalid", str(ip), str(err))
        if ttl is not None and ttl <= 0:
            return Outcome(False, "invalid", ip, f"ttl must be > 0 seconds, got {ttl}")
        covered = self.allowlist.covers(ip)
        if covered:
            return Outcome(False, "refused", ip, f"{ip} is allowlisted ({covered}) and is never blocked")
        with self._lock:
            now = self.clock()
            existing = self.store.get(ip)
            if existing and (existing.expires is None or existing.expires > now):
                return Outcome(True, "already_blocked", ip, existing.reason, existing)
            if existing:  # expired but not yet lifted by the timer: lift it now, then block afresh
                self._lift(existing)
            verdict = self.breaker.check(now, len(self.store.active(now)), self.backend.known_hosts())
            if not verdict.allowed:
                return Outcome(False, "refused", ip, verdict.reason)
            try:
                self.backend.install(ip, ttl)
            except Exception as err:  # the switch refused or did not confirm: nothing is stored
                return Outcome(False, "failed", ip, f"rules not confirmed: {err}")
            block = Block(ip=ip, reason=str(reason), created=now, expires=None if ttl is None else now + ttl)
            self.store.add(block)
            self.breaker.record(now)
        return Outcome(True, "blocked", ip, block.reason, block)

    def unblock(self, ip: str) -> Outcome:
        try:
            ip = normalise_ip(ip)
        except ValueError as err:
            return Outcome(False, "invalid", str(ip), str(err))
        with self._lock:
            existing = self.store.get(ip)
            if existing is None:
                return Outcome(True, "not_blocked", ip)
            try:
                self._lift(existing)
            except Exception as err:
                return Outcome(False, "failed", ip, f"rules not removed: {err}")
        return Outcome(True, "unblocked", ip, existing.reason, existing)

    def blocks(self) -> list[Block]:
        return self.store.active(self.clock())

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

    def reinstall(self) -> int:
        """Install every active block again (a switch connected, or the controller restarted)."""
        count = 0
        now = self.clock()
        for block in self.store.active(now):
            self.backend.install(block.ip, None if block.expires is None else block.expires - now)
            count += 1
        return count

    def _lift(self, block: Block) -> None:
        self.backend.remove(block.ip)
        self.store.remove(block.ip)
