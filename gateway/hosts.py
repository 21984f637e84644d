"""Flow verdicts -> host verdicts over a sliding window of stream time (standard library only).

Time is the stream's own: a **watermark**, the latest record time accepted so far (capture time when the source
has it, else the gateway's clock, as the caller passes it). The watermark never goes back and one record moves it
forward by at most ``max_advance`` seconds:

* a record whose time is not a finite number, or lies more than ``max_advance`` s ahead of the watermark, is
  **set aside**: counted (:meth:`HostTracker.counts`), not scored into any window, and it moves nothing. Only when
  ``rebase_after`` records in a row lie beyond the bound, within ``max_advance`` of each other, has the stream
  itself moved on (a gateway back after a long gap): the watermark then jumps to the earliest of them;
* a record older than the watermark by more than ``lateness`` (Zeek logs a connection when it ends, stamped with
  its start: long connections arrive hours "late") counts at ``watermark - lateness``, so it is still scored.

A host (the flow's source address) is **isolated** when its window (the last ``window`` s up to the watermark)
holds at least ``min_flows`` flows and the malicious share reaches ``isolate_share``. While that stays true the
isolation is re-asserted every ``window`` s of stream time (idempotent at the isolation API; it renews a block
whose TTL lapsed while the bot kept attacking). An isolated host is **released** only

* by hysteresis: at least ``min_flows`` flows in its window, malicious share at or below ``release_share``;
* after ``hold`` s of stream time since its isolation, when ``hold`` is set (a rule that does not depend on the
  host's own traffic; set it to the block TTL so that tracker and controller agree); or
* explicitly, :meth:`HostTracker.release`.

After a release by ``hold`` or explicitly the host's window starts empty: isolating it again takes ``min_flows``
new flows.

Silence never releases a host: a blocked host goes quiet because it is cut off. A single record never releases
one either: hysteresis needs ``min_flows`` of them, and a record cannot move the watermark past ``max_advance``.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass


def _finite(name: str, value: object, low: float, *, inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"host policy: {name} must be a finite number, got {value!r}")
    if value < low or (not inclusive and value == low):
        raise ValueError(f"host policy: {name} must be {'>=' if inclusive else '>'} {low}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class HostPolicy:
    window: float = 60.0
    min_flows: int = 10
    isolate_share: float = 0.8
    release_share: float = 0.2
    lateness: float = 30.0
    max_advance: float = 3600.0
    rebase_after: int = 100
    hold: float | None = None

    def __post_init__(self) -> None:
        _finite("window", self.window, 0.0, inclusive=False)
        _finite("lateness", self.lateness, 0.0)
        _finite("max_advance", self.max_advance, 0.0, inclusive=False)
        if self.hold is not None:
            _finite("hold", self.hold, 0.0, inclusive=False)
        for name in ("min_flows", "rebase_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"host policy: {name} must be an integer >= 1, got {value!r}")
        _finite("isolate_share", self.isolate_share, 0.0)
        _finite("release_share", self.release_share, 0.0)
        if not 0.0 <= self.release_share < self.isolate_share <= 1.0:
            raise ValueError(f"host policy: need 0 <= release_share < isolate_share <= 1, got release_share "
                             f"{self.release_share} and isolate_share {self.isolate_share}")  # fmt: skip


@dataclass(frozen=True)
class HostVerdict:
    host: str
    action: str  # "isolate" or "release"
    time: float  # the watermark when the verdict was taken (always finite)
    flows: int
    malicious: int
    rule: str = "share"  # isolate: share | reassert; release: share | hold | explicit
    model_version: str = ""  # the bundle whose verdicts led to it (set by the verdict service)

    def as_dict(self) -> dict:
        data = {"host": self.host, "action": self.action, "time": self.time, "flows": self.flows,
                "malicious": self.malicious, "share": round(self.malicious / max(self.flows, 1), 4),
                "rule": self.rule}  # fmt: skip
        if self.model_version:
            data["model_version"] = self.model_version
        return data


class HostTracker:
    """Per-host windows of (time, malicious) on the stream's watermark; see the module docstring."""

    def __init__(self, policy: HostPolicy | None = None) -> None:
        self.policy = policy or HostPolicy()
        self.watermark: float | None = None
        self.windows: dict[str, deque[tuple[float, bool]]] = {}
        self.malicious: dict[str, int] = {}
        self.isolated: dict[str, float] = {}  # host -> watermark at its isolation
        self._asserted: dict[str, float] = {}  # host -> watermark of its latest isolate verdict
        self._ahead: list[float] = []  # the current run of records beyond the bound
        self._counts: Counter = Counter()

    def counts(self) -> dict[str, int]:
        """Records seen, scored, counted late, and set aside (``non_finite``, ``ahead``), and watermark rebases."""
        return {key: int(self._counts.get(key, 0)) for key in
                ("records", "scored", "late", "set_aside_non_finite", "set_aside_ahead", "rebased")}  # fmt: skip

    def observe(self, host: str, time: float, malicious: bool) -> list[HostVerdict]:
        """Score one flow verdict of ``host`` at ``time``; returns the host verdicts it triggers."""
        self._counts["records"] += 1
        moment = self._place(time)
        if moment is None:
            return []
        self._counts["scored"] += 1
        verdicts = self._held()
        window = self.windows.setdefault(host, deque())
        window.append((moment, bool(malicious)))
        self.malicious[host] = self.malicious.get(host, 0) + int(bool(malicious))
        self._drop_old(host)
        verdicts.extend(self._judge(host))
        return verdicts

    def release(self, host: str) -> HostVerdict | None:
        """Release ``host`` explicitly (an operator's decision); None if it was not isolated."""
        if host not in self.isolated:
            return None
        return self._release(host, "explicit")

    # ---- time --------------------------------------------------------------------------------------------
    def _place(self, time: object) -> float | None:
        """The time a record counts at, or None when it is set aside; advances the watermark."""
        if isinstance(time, bool) or not isinstance(time, (int, float)) or not math.isfinite(time):
            self._counts["set_aside_non_finite"] += 1
            return None
        time = float(time)
        policy = self.policy
        if self.watermark is None:
            self.watermark = time
            return time
        if time > self.watermark + policy.max_advance:
            self._counts["set_aside_ahead"] += 1
            if self._ahead and abs(time - min(self._ahead)) > policy.max_advance:
                self._ahead = []  # not one coherent jump: start a new run
            self._ahead.append(time)
            if len(self._ahead) >= policy.rebase_after:
                self.watermark = min(self._ahead)
                self._ahead = []
                self._counts["rebased"] += 1
            return None
        self._ahead = []
        if time > self.watermark:
            self.watermark = time
        elif time < self.watermark - policy.lateness:
            self._counts["late"] += 1
            return self.watermark - policy.lateness
        return time

    # ---- decisions -----------------------------------------------------------------------------------------
    def _judge(self, host: str) -> list[HostVerdict]:
        flows, bad = len(self.windows[host]), self.malicious[host]
        if flows < self.policy.min_flows:
            return []
        share = bad / flows
        now = self.watermark
        if share >= self.policy.isolate_share:
            if host not in self.isolated:
                self.isolated[host] = now
                self._asserted[host] = now
                return [HostVerdict(host, "isolate", now, flows, bad, "share")]
            if now - self._asserted[host] >= self.policy.window:
                self._asserted[host] = now
                return [HostVerdict(host, "isolate", now, flows, bad, "reassert")]
        elif host in self.isolated and share <= self.policy.release_share:
            return [self._release(host, "share")]
        return []

    def _held(self) -> list[HostVerdict]:
        """Release the hosts whose ``hold`` has passed on the watermark."""
        hold = self.policy.hold
        if hold is None or not self.isolated:
            return []
        due = sorted(h for h, since in self.isolated.items() if self.watermark - since >= hold)
        return [self._release(host, "hold") for host in due]

    def _release(self, host: str, rule: str) -> HostVerdict:
        del self.isolated[host]
        self._asserted.pop(host, None)
        window = self.windows.get(host, deque())
        verdict = HostVerdict(host, "release", self.watermark, len(window), self.malicious.get(host, 0), rule)
        if rule != "share":  # a fresh start: isolating again takes min_flows new flows
            window.clear()
            self.malicious[host] = 0
        return verdict

    def _drop_old(self, host: str) -> None:
        window = self.windows[host]
        while window and self.watermark - window[0][0] > self.policy.window:
            _, was_bad = window.popleft()
            self.malicious[host] -= int(was_bad)
