"""Records -> host-graph windows on a stream, built by :mod:`flows.graphs` (the builder training uses; numpy only).

Each batch of records is normalised once (:mod:`flows.normalise`, as :mod:`gateway.encode` does): its encoded
rows, addresses, times, ports and the traffic counts the node features read (bytes and packets each way, the
columns :data:`flows.graphs.build.TRAFFIC_COLUMNS` names) all come from that one normalised batch.

**When a window closes.** The stream's watermark is the latest flow time seen. With ``window="seconds"`` a slot
``floor(t / seconds)`` closes once the watermark passes its end by ``lateness`` seconds; with ``window="flows"``
the ``flows`` earliest buffered flows (sorted by time, then arrival) close once the watermark passes the last of
them by ``lateness``. The end of the input closes everything (the last ``flows`` window may be short, as in
training). A source whose disorder stays within ``lateness`` (raw UNSW-NB15: 60 s) cuts exactly the training
windows. A flow later than that is counted ``late``: in ``flows`` windows it joins the next window, in
``seconds`` windows its slot is scored again as a graph of the late flows alone.

Windows below ``min_flows`` flows are dropped as in training (their flows counted, not scored), and flows without
both addresses or a finite time cannot be placed (counted). ``flow_rows`` of a window's graph are the flows'
positions among the records the stream accepted (the table's rows, for a file without malformed lines).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from flows.graphs.build import TRAFFIC_COLUMNS, FlowArrays, build_host_graphs
from flows.graphs.hostgraph import HostGraph
from flows.graphs.settings import GraphSettings
from gateway.encode import layout_runs, normalise_run
from gateway.sources import Record

_ARRAYS = ("times", "src", "dst", "labels", "src_port", "dst_port", "bytes_out", "bytes_in", "packets_out",
           "packets_in", "seq")  # fmt: skip


@dataclass
class Flows:
    """Accepted flows as parallel arrays (``seq``: position among the accepted records), encoded rows, records."""

    columns: dict[str, np.ndarray]
    rows: np.ndarray
    records: list[Record]

    def __len__(self) -> int:
        return len(self.records)

    def take(self, index: np.ndarray) -> "Flows":
        return Flows({k: v[index] for k, v in self.columns.items()}, self.rows[index],
                     [self.records[int(i)] for i in index])  # fmt: skip

    @staticmethod
    def join(parts: Sequence["Flows"], n_features: int) -> "Flows":
        parts = [p for p in parts if len(p)]
        if not parts:
            columns = {k: np.zeros(0, dtype=object if k in ("src", "dst") else np.float64) for k in _ARRAYS}
            return Flows(columns, np.zeros((0, n_features), np.float32), [])
        return Flows({k: np.concatenate([p.columns[k] for p in parts]) for k in _ARRAYS},
                     np.vstack([p.rows for p in parts]), [r for p in parts for r in p.records])  # fmt: skip


def encode_flows(records: Sequence[Record], pipeline, malformed: Counter, first_seq: int) -> Flows:
    """Normalise and encode ``records`` (runs of one layout), keeping what the graph builder reads; malformed
    records are counted and dropped as in :func:`gateway.encode.encode_batch`."""
    parts = []
    for run in layout_runs(records):
        part = _encode_run(run, pipeline, malformed, first_seq)
        first_seq += len(part)
        parts.append(part)
    return Flows.join(parts, pipeline.n_outputs)


def _encode_run(records: list[Record], pipeline, malformed: Counter, first_seq: int) -> Flows:
    run = normalise_run(records, pipeline, malformed)  # also fills in each record's endpoints, time and label
    kept, n = run.batch, run.batch.n
    labels = run.labels.astype(np.int64)
    if kept.src_ip is None or kept.start_time is None:
        src = dst = np.full(n, "", dtype=object)
        times = np.full(n, np.nan)
    else:
        src, dst, times = kept.src_ip.astype(object), kept.dst_ip.astype(object), kept.start_time.astype(np.float64)

    def port(values) -> np.ndarray:
        return np.full(n, -1, np.int64) if values is None else np.where(np.isnan(values), -1, values).astype(np.int64)

    columns = {"times": times, "src": src, "dst": dst, "labels": labels, "src_port": port(kept.src_port),
               "dst_port": port(kept.dst_port), "seq": np.arange(first_seq, first_seq + n, dtype=np.int64)}
    for name, candidates in TRAFFIC_COLUMNS.items():
        found = next((c for c in candidates if c in kept.numeric), None)
        columns[name] = np.zeros(n) if found is None else np.nan_to_num(kept.numeric[found].astype(np.float64))
    return Flows(columns, run.rows, run.records)


@dataclass
class Window:
    """A closed window: its number and its flows in arrival order."""

    number: int
    flows: Flows


@dataclass
class WindowCutter:
    """Buffers accepted flows and closes windows by the rules of the module docstring."""

    settings: GraphSettings
    lateness: float
    n_features: int
    pending: Flows | None = None
    watermark: float = -math.inf
    next_number: int = 0  # flows windows: the number of the next window
    closed_until: float = -math.inf  # the latest time a closed window reached
    counts: Counter = field(default_factory=Counter)

    def add(self, flows: Flows) -> tuple[list[Window], Flows]:
        """(the windows ``flows`` closes, the flows that cannot be placed)."""
        valid = (flows.columns["src"] != "") & (flows.columns["dst"] != "") & np.isfinite(flows.columns["times"])
        unplaced = flows.take(np.flatnonzero(~valid))
        flows = flows.take(np.flatnonzero(valid))
        self.counts["unplaced"] += len(unplaced)
        if len(flows):
            times = flows.columns["times"]
            self.counts["late"] += int((times < self.closed_until).sum())
            self.watermark = max(self.watermark, float(times.max()))
        self.pending = Flows.join([self.pending, flows] if self.pending is not None else [flows], self.n_features)
        return self._close(final=False), unplaced

    def finish(self) -> list[Window]:
        """Every window still open (the end of the input)."""
        return self._close(final=True) if self.pending is not None else []

    def _close(self, final: bool) -> list[Window]:
        pending, out = self.pending, []
        if not len(pending):
            return out
        times, seq = pending.columns["times"], pending.columns["seq"]
        if self.settings.window == "seconds":
            width = float(self.settings.seconds)
            slots = np.floor(times / width).astype(np.int64)
            done = np.ones(len(slots), bool) if final else (slots + 1) * width + self.lateness <= self.watermark
            for slot in np.unique(slots[done]):
                out.append(Window(int(slot), pending.take(np.flatnonzero(slots == slot))))
            keep = np.flatnonzero(~done)
        else:
            order = np.lexsort((seq, times))
            size, start = self.settings.flows, 0
            while len(order) - start >= size or (final and start < len(order)):
                chunk = order[start : start + size]
                if not final and self.watermark < times[chunk[-1]] + self.lateness:
                    break
                out.append(Window(self.next_number, pending.take(np.sort(chunk))))
                self.next_number += 1
                start += len(chunk)
            keep = np.sort(order[start:])
        for window in out:
            self.closed_until = max(self.closed_until, float(window.flows.columns["times"].max()))
        self.pending = pending.take(keep)
        return out


def window_graphs(window: Window, settings: GraphSettings, site: str, max_nodes: int, max_edges: int,
                  counts: Counter) -> list[HostGraph]:  # fmt: skip
    """The host graph of a closed window (``flow_rows``: the flows' ``seq``), cut into consecutive parts in time
    order when it holds more flows or hosts than the largest model (``counts``: split windows, parts); an empty
    list when the window has fewer than ``min_flows`` flows (counted)."""
    flows = window.flows
    if len(flows) < settings.min_flows:
        counts["windows_below_min_flows"] += 1
        counts["flows_in_small_windows"] += len(flows)
        return []
    graph = _graph(flows, window.number, settings, site)
    if graph.n_edges <= max_edges and graph.n_nodes <= max_nodes:
        return [graph]
    counts["split_windows"] += 1
    order = np.lexsort((flows.columns["seq"], flows.columns["times"]))
    parts, pieces = [order], []
    while parts:
        part = parts.pop(0)
        piece = _graph(flows.take(np.sort(part)), window.number, settings, site)
        if (piece.n_edges <= max_edges and piece.n_nodes <= max_nodes) or len(part) == 1:
            pieces.append(piece)
        else:
            half = (len(part) + 1) // 2 if len(part) <= max_edges else max_edges
            parts[:0] = [part[:half], part[half:]]
    counts["parts"] += len(pieces)
    return pieces


def _graph(flows: Flows, number: int, settings: GraphSettings, site: str) -> HostGraph:
    c = flows.columns
    arrays = FlowArrays(src=c["src"], dst=c["dst"], times=c["times"], labels=c["labels"], src_port=c["src_port"],
                        dst_port=c["dst_port"], bytes_out=c["bytes_out"], bytes_in=c["bytes_in"],
                        packets_out=c["packets_out"], packets_in=c["packets_in"], site=site)  # fmt: skip
    graphs, _ = build_host_graphs(arrays, flows.rows, settings, windows=np.full(len(flows), number, np.int64))
    graph = graphs[0]
    return replace(graph, flow_rows=c["seq"][graph.flow_rows].astype(np.int64))
