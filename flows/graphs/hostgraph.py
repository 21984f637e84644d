"""The host graph of one time window, as numpy arrays (no torch: the gateway builds the same object)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOST_GRAPHS = "host_graphs"  #: the name of this input form (a model family's ``gateway_input``, a detector's input)

#: node features, computed from the window's traffic only (never from an address), each as log1p(value)
NODE_FEATURES = (
    "out_flows",         # flows the host originates (self loops included)
    "in_flows",          # flows it receives
    "out_peers",         # distinct hosts it contacts
    "in_peers",          # distinct hosts that contact it
    "out_dst_ports",     # distinct destination ports it contacts
    "in_dst_ports",      # distinct ports on which it is contacted (the services it offers)
    "out_src_ports",     # distinct source ports it uses
    "self_flows",        # flows from the host to itself
    "bytes_sent",        # bytes it sends: originator bytes of its flows + responder bytes of flows to it
    "bytes_received",
    "packets_sent",
    "packets_received",
)  # fmt: skip


@dataclass
class HostGraph:
    """One directed graph of one window: nodes are hosts, edges are flows (source host -> destination host).

    ``edge_attr`` holds the fitted pipeline's encoded rows of the window's flows, in the edges' order (time order);
    ``node_attr`` the :data:`NODE_FEATURES`. ``edge_label`` is each flow's label; a host is malicious
    (``node_label`` 1) when it originates an attack flow in the window. ``hosts`` are the nodes' addresses,
    metadata only (never a feature); nodes are numbered by first appearance in the window, so the numbering does not
    depend on the addresses either. ``flow_rows`` are the flows' positions in the source table.
    """

    window: int
    start: float
    end: float
    site: str
    n_nodes: int
    edge_index: np.ndarray  # int64 (2, E)
    edge_attr: np.ndarray  # float32 (E, F)
    node_attr: np.ndarray  # float32 (N, G)
    edge_label: np.ndarray  # int64 (E,)
    node_label: np.ndarray  # int64 (N,)
    hosts: np.ndarray  # object (N,) addresses
    flow_rows: np.ndarray  # int64 (E,)

    def __post_init__(self) -> None:
        n, e = int(self.n_nodes), int(self.edge_index.shape[1]) if self.edge_index.ndim == 2 else -1
        checks = [
            (self.edge_index.dtype == np.int64 and self.edge_index.shape == (2, e), "edge_index must be int64 (2, E)"),
            (self.edge_attr.dtype == np.float32 and self.edge_attr.ndim == 2 and len(self.edge_attr) == e,
             "edge_attr must be float32 (E, F)"),
            (self.node_attr.dtype == np.float32 and self.node_attr.shape == (n, len(NODE_FEATURES)),
             f"node_attr must be float32 (N, {len(NODE_FEATURES)})"),
            (self.edge_label.dtype == np.int64 and self.edge_label.shape == (e,), "edge_label must be int64 (E,)"),
            (self.node_label.dtype == np.int64 and self.node_label.shape == (n,), "node_label must be int64 (N,)"),
            (self.hosts.shape == (n,), "hosts must hold one address per node"),
            (self.flow_rows.dtype == np.int64 and self.flow_rows.shape == (e,), "flow_rows must be int64 (E,)"),
            (e == 0 or (self.edge_index.min() >= 0 and self.edge_index.max() < n), "edge_index out of range"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(f"host graph of window {self.window}: {message}")

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def n_edge_features(self) -> int:
        return int(self.edge_attr.shape[1])

    def same_as(self, other: "HostGraph", *, with_hosts: bool = True) -> bool:
        """True when both graphs hold equal arrays and metadata (``with_hosts=False``: the addresses aside)."""
        arrays = ("edge_index", "edge_attr", "node_attr", "edge_label", "node_label", "flow_rows")
        meta = (self.window, self.start, self.end, self.site, self.n_nodes)
        return (meta == (other.window, other.start, other.end, other.site, other.n_nodes)
                and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)
                and (not with_hosts or np.array_equal(self.hosts, other.hosts)))  # fmt: skip


def host_scores_from_flows(graphs: list[HostGraph], flow_scores: np.ndarray) -> np.ndarray:
    """Per node (graphs concatenated), the highest score of the flows it originates (0 for a host that originates
    none): a flow classifier's host verdicts. ``flow_scores`` follow the graphs' edges, concatenated."""
    flow_scores = np.asarray(flow_scores, dtype=np.float64).reshape(-1)
    total = sum(g.n_edges for g in graphs)
    if len(flow_scores) != total:
        raise ValueError(f"expected {total} flow scores (the graphs' edges), got {len(flow_scores)}")
    out, offset = [], 0
    for g in graphs:
        scores = np.zeros(g.n_nodes, dtype=np.float64)
        np.maximum.at(scores, g.edge_index[0], flow_scores[offset:offset + g.n_edges])
        out.append(scores)
        offset += g.n_edges
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)
