"""A host-graph bundle's models on the LiteRT interpreter (ai-edge-litert + numpy): one window's graph -> the
attack probability of each of its flows and each of its hosts.

A bundle holds one model per capacity (``edge_capacity`` flows, ``node_capacity`` hosts); a graph goes to the
smallest model that holds both its flows and its hosts, padded (:mod:`gateway.graph_inputs`); padded outputs are
dropped. A graph larger than the largest model is the caller's to cut (:meth:`GraphModel.fits`).
"""

from __future__ import annotations

import numpy as np

from flows.graphs.hostgraph import NODE_FEATURES, HostGraph
from gateway.bundle import Bundle, BundleError
from gateway.graph_inputs import INPUTS, model_inputs


class _GraphRunner:
    """One interpreter for one (node capacity, edge capacity)."""

    def __init__(self, model: bytes, nodes: int, edges: int, structure: str, n_features: int,
                 num_threads: int, where: str) -> None:  # fmt: skip
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=model, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.output = self.interpreter.get_output_details()[0]
        self.nodes, self.edges, self.structure = nodes, edges, structure
        shapes = [(nodes, nodes)] if structure == "normalised_adjacency" else [(nodes, edges), (nodes, edges)]
        expected = [(nodes, len(NODE_FEATURES)), (edges, n_features), (edges,), (edges,), *shapes]
        got = [tuple(int(d) for d in detail["shape"]) for detail in self.inputs]
        if got != expected or tuple(int(d) for d in self.output["shape"]) != (edges + nodes,):
            raise BundleError(f"{where}: the model's inputs {got} are not the {structure} inputs "
                              f"{list(INPUTS[structure])} of shapes {expected}")  # fmt: skip
        if any(d["dtype"] not in (np.float32, np.int32) for d in self.inputs) or self.output["dtype"] != np.float32:
            raise BundleError(f"{where}: a host-graph model takes float32/int32 inputs and gives float32 logits")

    def logits(self, graph: HostGraph) -> tuple[np.ndarray, np.ndarray]:
        """(flow logits (E,), host logits (N,)) of ``graph``."""
        for detail, value in zip(self.inputs, model_inputs(graph, self.structure, self.nodes, self.edges)):
            self.interpreter.set_tensor(detail["index"], value)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        return out[: graph.n_edges].copy(), out[self.edges : self.edges + graph.n_nodes].copy()


class GraphModel:
    """Probabilities of attack for the flows and the hosts of host graphs, with the bundle's threshold."""

    def __init__(self, bundle: Bundle, variant: str | None = None, num_threads: int = 1) -> None:
        if bundle.gateway_input != "host_graphs":
            raise BundleError(f"{bundle.path}: GraphModel scores host graphs; this bundle's gateway input is "
                              f"{bundle.gateway_input!r}")  # fmt: skip
        graph = bundle.manifest["graph"]
        if list(graph["node_features"]) != list(NODE_FEATURES):
            raise BundleError(f"{bundle.path}: 'graph.node_features' are not the node features this gateway "
                              f"computes ({', '.join(NODE_FEATURES)})")  # fmt: skip
        self.structure = str(graph["structure"])
        if list(graph["inputs"]) != list(INPUTS[self.structure]):
            raise BundleError(f"{bundle.path}: 'graph.inputs' must be {list(INPUTS[self.structure])} for a "
                              f"{self.structure} model, got {graph['inputs']}")  # fmt: skip
        self.bundle = bundle
        self.variant = variant or bundle.manifest["default_model"]
        n_features = int(bundle.manifest["features"]["n_features"])
        self.runners: list[_GraphRunner] = []
        for size in bundle.batch_sizes:
            entry = bundle.model_entry(self.variant, size)
            self.runners.append(_GraphRunner(bundle.model_content(self.variant, size), int(entry["node_capacity"]),
                                             int(entry["edge_capacity"]), self.structure, n_features, num_threads,
                                             str(bundle.path / entry["file"])))  # fmt: skip
        self.runners.sort(key=lambda r: (r.edges, r.nodes))
        self.threshold = bundle.threshold
        self.max_edges = max(r.edges for r in self.runners)
        self.max_nodes = max(r.nodes for r in self.runners)

    def fits(self, graph: HostGraph) -> bool:
        """Whether some model holds ``graph``'s flows and hosts."""
        return any(graph.n_edges <= r.edges and graph.n_nodes <= r.nodes for r in self.runners)

    def logits(self, graph: HostGraph) -> tuple[np.ndarray, np.ndarray]:
        """(flow logits, host logits) of ``graph`` from the smallest model that holds it."""
        for runner in self.runners:
            if graph.n_edges <= runner.edges and graph.n_nodes <= runner.nodes:
                return runner.logits(graph)
        raise ValueError(f"window {graph.window}: {graph.n_nodes} hosts and {graph.n_edges} flows fit no model "
                         f"(largest: {self.max_nodes} hosts, {self.max_edges} flows)")  # fmt: skip

    def probabilities(self, graph: HostGraph) -> tuple[np.ndarray, np.ndarray]:
        """(flow probabilities, host probabilities) of ``graph``."""
        edges, nodes = self.logits(graph)
        return _sigmoid(edges), _sigmoid(nodes)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow for large |z| (float32)."""
    return np.exp(-np.logaddexp(0.0, -logits.astype(np.float64))).astype(np.float32)
