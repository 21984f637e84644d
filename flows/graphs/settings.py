"""How flows are cut into host-graph windows: the one place these settings and their defaults are written."""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_KINDS = ("flows", "seconds")


@dataclass(frozen=True)
class GraphSettings:
    """Windowing of a flow table into host graphs (standard library only: the gateway reads it too).

    * ``window="flows"``: after sorting by start time, every ``flows`` consecutive flows form one window (the last
      window of a table may hold fewer);
    * ``window="seconds"``: slots of ``seconds`` aligned at multiples of ``seconds`` since the epoch (slot
      ``floor(t / seconds)``), so that a stream and a file cut the same windows;
    * windows with fewer than ``min_flows`` flows are dropped and counted in the build report.

    Self loops (a flow whose source and destination are the same host) are kept as edges: every flow gets a verdict.
    Repeated flows between the same pair of hosts are parallel edges.
    """

    window: str = "flows"
    flows: int = 500
    seconds: float = 60.0
    min_flows: int = 1

    def __post_init__(self) -> None:
        if self.window not in WINDOW_KINDS:
            raise ValueError(f"graph window must be one of {WINDOW_KINDS}, got {self.window!r}")
        if isinstance(self.flows, bool) or not isinstance(self.flows, int) or self.flows < 1:
            raise ValueError(f"graph flows per window must be a positive integer, got {self.flows!r}")
        if not (isinstance(self.seconds, (int, float)) and self.seconds > 0):
            raise ValueError(f"graph window seconds must be > 0, got {self.seconds!r}")
        if isinstance(self.min_flows, bool) or not isinstance(self.min_flows, int) or self.min_flows < 1:
            raise ValueError(f"graph min_flows must be a positive integer, got {self.min_flows!r}")
