"""What keeps isolation safe when a model goes wrong (standard library only).

* :class:`Allowlist`: addresses and networks that can never be blocked (gateways, the controller, infrastructure);
* :class:`CircuitBreaker`: refuses new blocks past ``max_per_minute`` in any sliding minute, or when blocking one
  more host would put more than ``max_blocked_share`` of the known hosts behind blocks (1 or more: no share
  limit, e.g. for a benchmark of many blocks).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


class Allowlist:
    """Addresses (``10.0.0.1``) and networks (``10.0.0.0/24``, ``fe80::/10``) that are never blocked."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError:
                raise ValueError(f"allowlist entry is not an address or network: {entry!r}") from None

    def covers(self, ip: str) -> str | None:
        """The allowlist entry that covers ``ip``, else None."""
        address = ipaddress.ip_address(ip)
        for network in self.networks:
            if address.version == network.version and address in network:
                return str(network)
        return None


@dataclass
class BreakerVerdict:
    allowed: bool
    reason: str = ""


class CircuitBreaker:
    """Rate and share limits on new blocks; ``check`` before a block, ``record`` after one is made."""

    def __init__(self, max_per_minute: int = 30, max_blocked_share: float = 0.25, min_known_hosts: int = 8) -> None:
        if max_per_minute < 1 or max_blocked_share <= 0.0:
            raise ValueError("max_per_minute must be >= 1 and max_blocked_share > 0 (1 or more: no share limit)")
        self.max_per_minute = max_per_minute
        self.max_blocked_share = max_blocked_share
        self.min_known_hosts = min_known_hosts  # below this many known hosts the share limit would refuse everything
        self.recent: deque[float] = deque()

    def check(self, now: float, blocked: int, known_hosts: int) -> BreakerVerdict:
        while self.recent and now - self.recent[0] >= 60.0:
            self.recent.popleft()
        if len(self.recent) >= self.max_per_minute:
            return BreakerVerdict(False, f"circuit breaker: {len(self.recent)} blocks in the last minute "
                                         f"(limit {self.max_per_minute})")  # fmt: skip
        hosts = max(known_hosts, self.min_known_hosts)
        if self.max_blocked_share < 1.0 and (blocked + 1) / hosts > self.max_blocked_share:
            return BreakerVerdict(False, f"circuit breaker: blocking one more of {known_hosts} known hosts would put "
                                         f"{blocked + 1} behind blocks (limit {self.max_blocked_share:.0%})")  # fmt: skip
        return BreakerVerdict(True)

    def record(self, now: float) -> None:
        self.recent.append(now)
