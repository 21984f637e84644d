"""What keeps isolation safe when a model goes wrong (standard library only).

* :func:`never_blocked`: addresses no block may name: unspecified (``0.0.0.0``, ``::``), broadcast
  (``255.255.255.255``), multicast, loopback, and the controller's own addresses;
* :class:`Allowlist`: addresses and networks that can never be blocked (gateways, the controller, infrastructure);
* :class:`CircuitBreaker`: refuses new blocks past ``max_per_minute`` in any sliding minute, or when blocking one
  more host would put more than ``max_blocked_share`` of the known hosts behind blocks (1 or more: no share
  limit, e.g. for a benchmark of many blocks). A refusal says after how many seconds the same call may pass
  (``retry_after``): the hook queues it again for then instead of dropping it.

Addresses reach these checks canonicalised (:func:`sdn.blocklist.canonical_ip`: IPv4-mapped IPv6 folded to IPv4),
so ``::ffff:10.0.0.1`` meets the same allowlist entry as ``10.0.0.1``.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def never_blocked(address: Address, own: Iterable[Address] = ()) -> str | None:
    """Why ``address`` may never be blocked (unspecified, broadcast, multicast, loopback, the controller's own), or
    None when it may be."""
    if address.is_unspecified:
        return "the unspecified address"
    if address == BROADCAST:
        return "the broadcast address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_loopback:
        return "a loopback address"
    if address in set(own):
        return "one of the controller's own addresses"
    return None


class Allowlist:
    """Addresses (``10.0.0.1``) and networks (``10.0.0.0/24``, ``fe80::/10``) that are never blocked."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError:
                raise ValueError(f"allowlist entry is not an address or network: {entry!r}") from None

    def covers(self, ip: str | Address) -> str | None:
        """The allowlist entry that covers ``ip`` (IPv4-mapped IPv6 folded to IPv4 first), else None."""
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for network in self.networks:
            if address.version == network.version and address in network:
                return str(network)
        return None


@dataclass
class BreakerVerdict:
    allowed: bool
    reason: str = ""
    retry_after: float | None = None  # seconds until the same call may pass (refusals only)


class CircuitBreaker:
    """Rate and share limits on new blocks; ``check`` before a block, ``record`` after one is made."""

    def __init__(self, max_per_minute: int = 30, max_blocked_share: float = 0.25, min_known_hosts: int = 8) -> None:
        if isinstance(max_per_minute, bool) or not isinstance(max_per_minute, int) or max_per_minute < 1 \
                or not isinstance(max_blocked_share, (int, float)) or not max_blocked_share > 0.0:
            raise ValueError("max_per_minute must be >= 1 and max_blocked_share > 0 (1 or more: no share limit)")
        self.max_per_minute = max_per_minute
        self.max_blocked_share = max_blocked_share
        self.min_known_hosts = min_known_hosts  # below this many known hosts the share limit would refuse everything
        self.recent: deque[float] = deque()

    def check(self, now: float, blocked: int, known_hosts: int) -> BreakerVerdict:
        while self.recent and now - self.recent[0] >= 60.0:
            self.recent.popleft()
        if len(self.recent) >= self.max_per_minute:
            wait = max(60.0 - (now - self.recent[0]), 0.0) + 0.01
            return BreakerVerdict(False, f"circuit breaker: {len(self.recent)} blocks in the last minute "
                                         f"(limit {self.max_per_minute})", round(wait, 3))  # fmt: skip
        hosts = max(known_hosts, self.min_known_hosts)
        if self.max_blocked_share < 1.0 and (blocked + 1) / hosts > self.max_blocked_share:
            return BreakerVerdict(False, f"circuit breaker: blocking one more of {known_hosts} known hosts would put "
                                         f"{blocked + 1} behind blocks (limit {self.max_blocked_share:.0%})", 60.0)  # fmt: skip
        return BreakerVerdict(True)

    def record(self, now: float) -> None:
        self.recent.append(now)
