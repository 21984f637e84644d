"""A host graph -> the fixed-shape inputs of an exported host-graph model (numpy only).

A host-graph family's exported form takes the graph structure as inputs: what graph convolution and the
mean aggregation compute with scatter ops at training time is computed here with numpy, padded to the model's
node capacity N and edge capacity E. Inputs, in the model's order: ``x (N, 12)``, ``edge_attr (E, F)``,
``src (E,)``, ``dst (E,)`` (int32), then the structure the model aggregates over (its ``graph.structure`` in the
manifest): ``adj (N, N)`` for ``normalised_adjacency`` (graph convolution) or ``m_in, m_out (N, E)`` for
``mean_incidence`` (mean aggregation over each host's incoming and outgoing flows).
"""

from __future__ import annotations

import numpy as np

from flows.graphs.hostgraph import HostGraph

#: the exported models' inputs per graph structure, in order (the export form's input names; a test checks them)
INPUTS = {"normalised_adjacency": ("x", "edge_attr", "src", "dst", "adj"),
          "mean_incidence": ("x", "edge_attr", "src", "dst", "m_in", "m_out")}  # fmt: skip
STRUCTURES = tuple(INPUTS)


def normalised_adjacency(src: np.ndarray, dst: np.ndarray, n: int, capacity: int) -> np.ndarray:
    """``D^-1/2 (A + I) D^-1/2`` padded to (capacity, capacity): A counts every flow between two different hosts
    in both directions (parallel flows add up); every host has one self loop of weight 1, whatever its
    self-loop flows (GCNConv's ``add_remaining_self_loops`` on unweighted edges)."""
    adj = np.zeros((capacity, capacity), dtype=np.float64)
    other = src != dst
    np.add.at(adj, (dst[other], src[other]), 1.0)
    np.add.at(adj, (src[other], dst[other]), 1.0)
    nodes = np.arange(n)
    adj[nodes, nodes] = 1.0
    degree = adj.sum(axis=1)
    scale = np.zeros(capacity, dtype=np.float64)
    scale[:n] = 1.0 / np.sqrt(degree[:n])
    return (adj * scale[:, None] * scale[None, :]).astype(np.float32)


def mean_incidence(target: np.ndarray, n_edges: int, nodes: int, edges: int) -> np.ndarray:
    """(nodes, edges) with ``1 / degree(v)`` at ``[v, e]`` for each flow e whose ``target`` is v: a matmul with it
    is the mean over each host's flows (0 for a host without any)."""
    degree = np.bincount(target, minlength=nodes).astype(np.float64)
    incidence = np.zeros((nodes, edges), dtype=np.float32)
    incidence[target, np.arange(n_edges)] = (1.0 / degree[target]).astype(np.float32)
    return incidence


def model_inputs(graph: HostGraph, structure: str, nodes: int, edges: int) -> list[np.ndarray]:
    """The padded inputs of ``graph`` for a model of ``structure`` and ``nodes`` x ``edges`` capacity, in the
    model's order."""
    if structure not in STRUCTURES:
        raise ValueError(f"host-graph structure must be one of {STRUCTURES}, got {structure!r}")
    n, e = graph.n_nodes, graph.n_edges
    if n > nodes or e > edges:
        raise ValueError(f"window {graph.window}: {n} hosts and {e} flows do not fit a model of {nodes} hosts and "
                         f"{edges} flows")  # fmt: skip
    x = np.zeros((nodes, graph.node_attr.shape[1]), dtype=np.float32)
    x[:n] = graph.node_attr
    edge_attr = np.zeros((edges, graph.edge_attr.shape[1]), dtype=np.float32)
    edge_attr[:e] = graph.edge_attr
    src, dst = np.zeros(edges, dtype=np.int32), np.zeros(edges, dtype=np.int32)
    src[:e], dst[:e] = graph.edge_index[0], graph.edge_index[1]
    inputs = [x, edge_attr, src, dst]
    if structure == "normalised_adjacency":
        inputs.append(normalised_adjacency(graph.edge_index[0], graph.edge_index[1], n, nodes))
    else:
        inputs.append(mean_incidence(graph.edge_index[1], e, nodes, edges))
        inputs.append(mean_incidence(graph.edge_index[0], e, nodes, edges))
    return inputs
