"""Flow verdicts -> host verdicts over a sliding time window (standard library only).

A host (the flow's source address) is isolated when, within the last ``window`` seconds, at least ``min_flows``
of its flows were scored and the share judged malicious reached ``isolate_share``; an isolated host is released
when that share falls to ``release_share`` or below (hysteresis: no flapping around one threshold) with at least
``min_flows`` flows in the window, or when it sends nothing for a whole window. Time is the flows' own time
(capture time) when the source has it, else the gateway's clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class HostPolicy:
    window: float = 60.0
    min_flows: int = 10
    isolate_share: float = 0.8
    release_share: float = 0.2

    def __post_init__(self) -> None:
        if self.window <= 0 or self.min_flows < 1:
            raise ValueError("window must be > 0 and min_flows >= 1")
        if not 0.0 <= self.release_share < self.isolate_share <= 1.0:
            raise ValueError("need 0 <= release_share < isolate_share <= 1")


@dataclass(frozen=True)
class HostVerdict:
    host: str
    action: str  # "isolate" or "release"
    time: float
    flows: int
    malicious: int

    def as_dict(self) -> dict:
        return {"host": self.host, "action": self.action, "time": self.time, "flows": self.flows,
                "malicious": self.malicious, "share": round(self.malicious / max(self.flows, 1), 4)}  # fmt: skip


class HostTracker:
    """Per-host windows of (time, malicious); ``observe`` returns the host verdicts a flow verdict triggers."""

    def __init__(self, policy: HostPolicy | None = None) -> None:
        self.policy = policy or HostPolicy()
        self.windows: dict[str, deque[tuple[float, bool]]] = {}
        self.malicious: dict[str, int] = {}
        self.isolated: set[str] = set()

    def observe(self, host: str, time: float, malicious: bool) -> list[HostVerdict]:
        verdicts = self.expire(time)
        window = self.windows.setdefault(host, deque())
        window.append((time, malicious))
        self.malicious[host] = self.malicious.get(host, 0) + int(malicious)
        self._drop_old(host, time)
        flows, bad = len(window), self.malicious[host]
        if flows >= self.policy.min_flows:
            share = bad / flows
            if host not in self.isolated and share >= self.policy.isolate_share:
                self.isolated.add(host)
                verdicts.append(HostVerdict(host, "isolate", time, flows, bad))
            elif host in self.isolated and share <= self.policy.release_share:
                self.isolated.discard(host)
                verdicts.append(HostVerdict(host, "release", time, flows, bad))
        return verdicts

    def expire(self, now: float) -> list[HostVerdict]:
        """Release isolated hosts that sent nothing for a whole window."""
        verdicts = []
        for host in sorted(self.isolated):
            window = self.windows.get(host)
            if window and now - window[-1][0] > self.policy.window:
                self.isolated.discard(host)
                verdicts.append(HostVerdict(host, "release", now, 0, 0))
                window.clear()
                self.malicious[host] = 0
        return verdicts

    def _drop_old(self, host: str, now: float) -> None:
        window = self.windows[host]
        while window and now - window[0][0] > self.policy.window:
            _, was_bad = window.popleft()
            self.malicious[host] -= int(was_bad)
