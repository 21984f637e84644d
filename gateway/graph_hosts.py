"""Host verdicts of a host-graph model: the host head's probability per (window, host) -> isolate / release
(standard library + numpy only), in the spirit of :mod:`gateway.hosts`.

A window **counts** for a host when the host originates at least ``min_flows`` of its flows. A host is
**isolated** when the host head flags it (probability at or above the bundle's threshold) in a window that counts;
while it stays flagged the isolation is re-asserted at most every ``reassert`` seconds of stream time. An
isolated host is **released** only

* by hysteresis: ``release_windows`` consecutive counting windows in which it is not flagged;
* after ``hold`` seconds of stream time since its isolation, when ``hold`` is set; or
* explicitly (:meth:`GraphHostTracker.release`).

Silence never releases a host (a window where it sends fewer than ``min_flows`` flows, or none, changes nothing),
and neither does a single record: a counting window needs ``min_flows`` of its flows. Stream time is the latest
window end seen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from flows.graphs.hostgraph import HostGraph
from gateway.hosts import HostVerdict


@dataclass(frozen=True)
class GraphHostPolicy:
    min_flows: int = 10
    release_windows: int = 3
    reassert: float = 60.0
    hold: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_flows", "release_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"graph host policy: {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.reassert, (int, float)) and self.reassert > 0):
            raise ValueError(f"graph host policy: reassert must be > 0 seconds, got {self.reassert!r}")
        if self.hold is not None and not (isinstance(self.hold, (int, float)) and self.hold > 0):
            raise ValueError(f"graph host policy: hold must be > 0 seconds, got {self.hold!r}")


class GraphHostTracker:
    """Per-host state across windows; see the module docstring."""

    def __init__(self, policy: GraphHostPolicy | None = None) -> None:
        self.policy = policy or GraphHostPolicy()
        self.now: float | None = None
        self.isolated: dict[str, float] = {}  # host -> stream time of its isolation
        self._asserted: dict[str, float] = {}
        self._clear: Counter = Counter()  # isolated host -> consecutive counting windows not flagged
        self._counts: Counter = Counter()

    def counts(self) -> dict[str, int]:
        """Host judgements: counting windows, flagged ones, and (window, host) pairs below ``min_flows``."""
        return {key: int(self._counts.get(key, 0)) for key in ("judged", "flagged", "below_min_flows")}

    def observe(self, graph: HostGraph, host_probs: np.ndarray, flow_flags: np.ndarray,
                threshold: float) -> list[HostVerdict]:  # fmt: skip
        """The host verdicts of one scored window (``flow_flags``: its flows' verdicts, in edge order)."""
        end = float(graph.end)
        self.now = end if self.now is None else max(self.now, end)
        verdicts = self._held()
        src = graph.edge_index[0]
        sent = np.bincount(src, minlength=graph.n_nodes)
        bad = np.bincount(src, weights=np.asarray(flow_flags, dtype=np.float64), minlength=graph.n_nodes)
        for node in range(graph.n_nodes):
            host, flows = str(graph.hosts[node]), int(sent[node])
            if flows < self.policy.min_flows:
                self._counts["below_min_flows"] += int(flows > 0)
                continue
            self._counts["judged"] += 1
            flagged = bool(host_probs[node] >= threshold)
            malicious = int(bad[node])
            if flagged:
                self._counts["flagged"] += 1
                self._clear.pop(host, None)
                if host not in self.isolated:
                    self.isolated[host] = self._asserted[host] = self.now
                    verdicts.append(HostVerdict(host, "isolate", self.now, flows, malicious, "host_head"))
                elif self.now - self._asserted[host] >= self.policy.reassert:
                    self._asserted[host] = self.now
                    verdicts.append(HostVerdict(host, "isolate", self.now, flows, malicious, "reassert"))
            elif host in self.isolated:
                self._clear[host] += 1
                if self._clear[host] >= self.policy.release_windows:
                    verdicts.append(self._release(host, "windows", flows, malicious))
        return verdicts

    def release(self, host: str) -> HostVerdict | None:
        """Release ``host`` explicitly; None if it was not isolated."""
        return self._release(host, "explicit", 0, 0) if host in self.isolated else None

    def _held(self) -> list[HostVerdict]:
        hold = self.policy.hold
        if hold is None:
            return []
        due = sorted(h for h, since in self.isolated.items() if self.now - since >= hold)
        return [self._release(host, "hold", 0, 0) for host in due]

    def _release(self, host: str, rule: str, flows: int, malicious: int) -> HostVerdict:
        del self.isolated[host]
        self._asserted.pop(host, None)
        self._clear.pop(host, None)
        return HostVerdict(host, "release", self.now if self.now is not None else 0.0, flows, malicious, rule)
