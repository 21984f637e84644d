"""Host graphs from flow arrays (standard library + numpy only: the gateway calls this same code).

One path for training and the gateway: :func:`assign_windows` cuts time-sorted flows into windows
(:class:`flows.graphs.settings.GraphSettings`), :func:`build_host_graphs` makes one :class:`HostGraph` per window.
Addresses only group flows by host: node numbers follow first appearance in the window and node features count
traffic, so remapping every address (a bijection) changes nothing but ``HostGraph.hosts``.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

import numpy as np

from flows.graphs.hostgraph import NODE_FEATURES, HostGraph
from flows.graphs.settings import GraphSettings

log = logging.getLogger(__name__)

__all__ = ["TRAFFIC_COLUMNS", "FlowArrays", "assign_windows", "build_host_graphs", "canonical_hosts"]

#: per traffic aggregate of :class:`FlowArrays`, the normalised columns that may hold it (UNSW-NB15, Zeek)
TRAFFIC_COLUMNS = {
    "bytes_out": ("sbytes", "orig_bytes"),
    "bytes_in": ("dbytes", "resp_bytes"),
    "packets_out": ("spkts", "orig_pkts"),
    "packets_in": ("dpkts", "resp_pkts"),
}

_MISSING = {"", "-", "nan", "none", "<na>"}


@dataclass
class FlowArrays:
    """One entry per flow, in the source table's order. Ports are -1 where unknown; bytes and packets are the
    originator's (``*_out``) and the responder's (``*_in``)."""

    src: np.ndarray  # addresses (str); "" or None = missing (the flow is skipped and counted)
    dst: np.ndarray
    times: np.ndarray  # float64 start times (seconds); non-finite = missing
    labels: np.ndarray  # int64 0/1
    src_port: np.ndarray | None = None
    dst_port: np.ndarray | None = None
    bytes_out: np.ndarray | None = None
    bytes_in: np.ndarray | None = None
    packets_out: np.ndarray | None = None
    packets_in: np.ndarray | None = None
    site: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.times)
        self.src, self.dst = canonical_hosts(self.src), canonical_hosts(self.dst)
        self.times = np.asarray(self.times, dtype=np.float64)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        for name in ("src_port", "dst_port"):
            value = getattr(self, name)
            setattr(self, name, np.full(n, -1, np.int64) if value is None else np.asarray(value, dtype=np.int64))
        for name in ("bytes_out", "bytes_in", "packets_out", "packets_in"):
            value = getattr(self, name)
            setattr(self, name, np.zeros(n) if value is None else np.nan_to_num(np.asarray(value, np.float64)))
        for name in ("src", "dst", "labels", "src_port", "dst_port", "bytes_out", "bytes_in", "packets_out",
                     "packets_in"):  # fmt: skip
            if len(getattr(self, name)) != n:
                raise ValueError(f"flow arrays: {name} has {len(getattr(self, name))} entries, times has {n}")

    def __len__(self) -> int:
        return len(self.times)

    @property
    def valid(self) -> np.ndarray:
        """Flows that can be placed: both addresses and a finite time."""
        return (self.src != "") & (self.dst != "") & np.isfinite(self.times)


def _canonical(value: object) -> str:
    text = "" if value is None else str(value).strip()
    if text.lower() in _MISSING:
        return ""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0] if ":" in text else text)
    except ValueError:
        return text.lower()  # not an IP literal (a name): grouped by its text
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def canonical_hosts(values) -> np.ndarray:
    """Addresses in one canonical form (IPv6 compressed and lower-case, IPv4-mapped IPv6 as IPv4, zone ids
    dropped); missing ones as "". Parsed once per distinct value."""
    values = np.asarray(values, dtype=object).reshape(-1)
    if len(values) == 0:
        return values.astype(object)
    keys = np.array(["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values], dtype=object)
    unique, inverse = np.unique(keys, return_inverse=True)
    return np.array([_canonical(u) for u in unique], dtype=object)[inverse]


def assign_windows(times: np.ndarray, valid: np.ndarray, settings: GraphSettings) -> tuple[np.ndarray, dict]:
    """(window per flow, report): the window number of every flow in the input order, -1 for flows that cannot be
    placed (no address or time) and for flows of windows below ``min_flows``. Window numbers increase with time."""
    times = np.asarray(times, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    window = np.full(len(times), -1, dtype=np.int64)
    order = np.flatnonzero(valid)[np.argsort(times[valid], kind="stable")]
    if settings.window == "flows":
        window[order] = np.arange(len(order), dtype=np.int64) // settings.flows
    else:
        window[order] = np.floor(times[order] / float(settings.seconds)).astype(np.int64)
    ids, counts = np.unique(window[order], return_counts=True)
    small = ids[counts < settings.min_flows]
    if len(small):
        window[np.isin(window, small)] = -1
    report = {"flows": int(len(times)), "unplaced_flows": int((~valid).sum()), "windows": int(len(ids) - len(small)),
              "windows_below_min_flows": int(len(small)),
              "flows_in_small_windows": int(counts[counts < settings.min_flows].sum())}  # fmt: skip
    return window, report


def build_host_graphs(arrays: FlowArrays, edge_attr: np.ndarray, settings: GraphSettings | None = None,
                      *, windows: np.ndarray | None = None) -> tuple[list[HostGraph], dict]:  # fmt: skip
    """One :class:`HostGraph` per window of ``arrays`` (in time order) and a report of the counts (flows, windows,
    flows that could not be placed, windows dropped). ``edge_attr``: the encoded rows of the flows (input order).
    ``windows`` (optional) is :func:`assign_windows`' output, to skip computing it again."""
    settings = settings or GraphSettings()
    edge_attr = np.ascontiguousarray(edge_attr, dtype=np.float32)
    if edge_attr.ndim != 2 or len(edge_attr) != len(arrays):
        raise ValueError(f"edge_attr must be ({len(arrays)}, F) for {len(arrays)} flows, got {edge_attr.shape}")
    report: dict = {}
    if windows is None:
        windows, report = assign_windows(arrays.times, arrays.valid, settings)
    placed = np.flatnonzero(windows >= 0)
    rows = placed[np.lexsort((arrays.times[placed], windows[placed]))]  # by window, then time (stable)
    addresses, host_ids = np.unique(np.concatenate([arrays.src[rows], arrays.dst[rows]]), return_inverse=True)
    src_ids, dst_ids = host_ids[: len(rows)], host_ids[len(rows):]
    cuts = np.flatnonzero(np.diff(windows[rows])) + 1
    graphs = [_window_graph(arrays, edge_attr, settings, rows[a:b], src_ids[a:b], dst_ids[a:b], addresses,
                            int(windows[rows[a]]))
              for a, b in zip([0, *cuts], [*cuts, len(rows)])] if len(rows) else []  # fmt: skip
    report = {**report, "graphs": len(graphs), "edges": int(len(rows))}
    if report.get("unplaced_flows") or report.get("windows_below_min_flows"):
        log.info("host graphs: %d flows without an address or time, %d windows below min_flows (%d flows) skipped",
                 report.get("unplaced_flows", 0), report.get("windows_below_min_flows", 0),
                 report.get("flows_in_small_windows", 0))  # fmt: skip
    return graphs, report


def _local_ids(src_ids: np.ndarray, dst_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(local source ids, local destination ids, global id per node): nodes numbered by first appearance."""
    both = np.empty(2 * len(src_ids), dtype=np.int64)
    both[0::2], both[1::2] = src_ids, dst_ids
    unique, first, inverse = np.unique(both, return_index=True, return_inverse=True)
    by_appearance = np.argsort(first, kind="stable")
    rank = np.empty_like(by_appearance)
    rank[by_appearance] = np.arange(len(by_appearance))
    local = rank[inverse]
    return local[0::2], local[1::2], unique[by_appearance]


def _distinct_per_node(node: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
    """Distinct ``value``s (>= 0) per ``node``."""
    keep = value >= 0
    if not keep.any():
        return np.zeros(n, dtype=np.int64)
    pairs = np.unique(node[keep] * (int(value[keep].max()) + 1) + value[keep])
    return np.bincount(pairs // (int(value[keep].max()) + 1), minlength=n)


def node_features(src: np.ndarray, dst: np.ndarray, n: int, arrays: FlowArrays, rows: np.ndarray) -> np.ndarray:
    """The :data:`NODE_FEATURES` (log1p) of ``n`` hosts from the flows ``rows`` (local ids ``src``, ``dst``)."""
    sent_out, sent_in = arrays.bytes_out[rows], arrays.bytes_in[rows]
    pk_out, pk_in = arrays.packets_out[rows], arrays.packets_in[rows]

    def add(ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.bincount(ids, weights=weights, minlength=n)

    columns = {
        "out_flows": np.bincount(src, minlength=n),
        "in_flows": np.bincount(dst, minlength=n),
        "out_peers": _distinct_per_node(src, dst, n),
        "in_peers": _distinct_per_node(dst, src, n),
        "out_dst_ports": _distinct_per_node(src, arrays.dst_port[rows], n),
        "in_dst_ports": _distinct_per_node(dst, arrays.dst_port[rows], n),
        "out_src_ports": _distinct_per_node(src, arrays.src_port[rows], n),
        "self_flows": np.bincount(src[src == dst], minlength=n),
        "bytes_sent": add(src, sent_out) + add(dst, sent_in),
        "bytes_received": add(dst, sent_out) + add(src, sent_in),
        "packets_sent": add(src, pk_out) + add(dst, pk_in),
        "packets_received": add(dst, pk_out) + add(src, pk_in),
    }
    values = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in NODE_FEATURES])
    return np.log1p(np.maximum(values, 0.0)).astype(np.float32)


def _window_graph(arrays: FlowArrays, edge_attr: np.ndarray, settings: GraphSettings, rows: np.ndarray,
                  src_ids: np.ndarray, dst_ids: np.ndarray, addresses: np.ndarray,
                  window: int) -> HostGraph:  # fmt: skip
    src, dst, nodes = _local_ids(src_ids, dst_ids)
    n = len(nodes)
    labels = arrays.labels[rows]
    times = arrays.times[rows]
    if settings.window == "seconds":
        start, end = window * float(settings.seconds), (window + 1) * float(settings.seconds)
    else:
        start, end = float(times.min()), float(times.max())
    return HostGraph(
        window=window, start=start, end=end, site=arrays.site, n_nodes=n,
        edge_index=np.stack([src, dst]).astype(np.int64), edge_attr=edge_attr[rows],
        node_attr=node_features(src, dst, n, arrays, rows), edge_label=labels.astype(np.int64),
        node_label=(np.bincount(src, weights=labels, minlength=n) > 0).astype(np.int64),
        hosts=addresses[nodes].astype(object), flow_rows=rows.astype(np.int64),
    )  # fmt: skip
