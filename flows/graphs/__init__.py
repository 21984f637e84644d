"""Host graphs: one directed graph per time window, hosts as nodes, flows as edges (issue 15).

This package's core (settings, hostgraph, build, splits) imports the standard library and numpy only, so the
gateway builds its windows' graphs with the same code; :mod:`flows.graphs.from_table` adapts a pandas
:class:`flows.table.FlowTable` and is not imported here.
"""

from flows.graphs.build import FlowArrays, assign_windows, build_host_graphs, canonical_hosts, node_features
from flows.graphs.hostgraph import HOST_GRAPHS, NODE_FEATURES, HostGraph, host_scores_from_flows
from flows.graphs.settings import WINDOW_KINDS, GraphSettings
from flows.graphs.splits import (
    WindowSplit,
    chronological_split,
    leave_hosts_out,
    leave_one_site_out,
    select,
    window_keys,
)

__all__ = [
    "HOST_GRAPHS", "NODE_FEATURES", "WINDOW_KINDS", "FlowArrays", "GraphSettings", "HostGraph", "WindowSplit",
    "assign_windows", "build_host_graphs", "canonical_hosts", "chronological_split", "host_scores_from_flows",
    "leave_hosts_out", "leave_one_site_out", "node_features", "select", "window_keys",
]  # fmt: skip
