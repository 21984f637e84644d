"""The host-graph family's registry entry: one window's host graph in, a logit per flow and per host out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from flows.graphs import HOST_GRAPHS, GraphSettings, HostGraph
from models.family import ModelFamily
from models.gcn.params import GCNParams

if TYPE_CHECKING:
    from torch import nn

    from flows.pipeline_state import PipelineState
    from flows.table import FlowTable

__all__ = ["FAMILY", "GCNFamily"]


def edge_labels(graphs: Sequence[HostGraph]) -> np.ndarray:
    return np.concatenate([g.edge_label for g in graphs]) if graphs else np.zeros(0, np.int64)


class GCNFamily(ModelFamily):
    """GCN and E-GraphSAGE networks over per-window host graphs (:class:`models.gcn.network.HostGraphNet`).

    Examples are windows: ``X`` is a list of :class:`flows.graphs.HostGraph`, ``y`` the flows' labels in edge order
    (windows concatenated), and every per-example output (``predict_logits``, ``evaluate_local``) is per flow.
    ``batch_size`` in local training counts windows."""

    name = "gcn"
    gateway_input = HOST_GRAPHS
    params_type = GCNParams
    modules = ("models.gcn",)  # the package: params, layers, network, training, detector, family
    dp_sgd_refusal = ("per-flow DP-SGD does not bound a host's influence on graph data: a host's flows share its "
                      "node, it appears in many windows, and message passing mixes its neighbours' features into "
                      "every example, so one flow's epsilon says nothing about a host; node-level DP is not "
                      "implemented, use privacy=central (client-level DP) or privacy=none")  # fmt: skip

    def build(self, n_features: int, params: Mapping) -> "nn.Module":
        from models.gcn.network import HostGraphNet

        return HostGraphNet(int(n_features), **dict(params))

    def batches(self, table: "FlowTable", pipeline: "PipelineState",
                graph: GraphSettings | None = None) -> tuple[list[HostGraph], np.ndarray]:  # fmt: skip
        """The host graphs of ``table``'s windows (``graph``: the windowing, defaults when None) and their
        flows' labels; a table without addresses raises :class:`flows.errors.FlowDataError`."""
        from flows.graphs.from_table import graphs_from_table

        graphs, _ = graphs_from_table(table, pipeline, graph)
        return graphs, edge_labels(graphs)

    def train_local(self, model: "nn.Module", X: list[HostGraph], y: np.ndarray, *, epochs: int, batch_size: int,
                    lr: float, seed: int, proximal_mu: float = 0.0) -> float:  # fmt: skip
        from models.gcn.training import train_epochs

        _check_labels(X, y)
        return train_epochs(model, X, epochs=epochs, batch_windows=batch_size, lr=lr, seed=seed,
                            proximal_mu=proximal_mu)  # fmt: skip

    def evaluate_local(self, model: "nn.Module", X: list[HostGraph], y: np.ndarray) -> tuple[float, float]:
        from models.evaluation import bce_with_logits

        _check_labels(X, y)
        if len(y) == 0:
            raise ValueError("no evaluation flows")
        logits = self.predict_logits(model, X)
        return bce_with_logits(logits, y), float(np.mean((logits >= 0).astype(np.int64) == y))

    def predict_logits(self, model: "nn.Module", X: list[HostGraph]) -> np.ndarray:
        """Flow logits in edge order (windows concatenated): ``flow_rows`` of the graphs map them to table rows."""
        from models.gcn.training import predict

        return predict(model, X)[0] if X else np.zeros(0, np.float32)

    def predict_host_logits(self, model: "nn.Module", X: list[HostGraph]) -> np.ndarray:
        """Host logits, the graphs' nodes concatenated."""
        from models.gcn.training import predict

        return predict(model, X)[1] if X else np.zeros(0, np.float32)

    def export_tflite(self, model: "nn.Module", batch_size: int, node_capacity: int | None = None) -> bytes:
        """The fp32 .tflite of ``model``'s fixed-shape form (:class:`models.gcn.export_form.DenseHostGraphNet`)
        for one window of at most ``batch_size`` flows (the edge capacity) and ``node_capacity`` hosts (default:
        ``batch_size``); its inputs are :func:`models.gcn.export_form.input_names`, one output of E flow logits
        then N host logits."""
        import litert_torch

        from models.gcn.export_form import DenseHostGraphNet, sample_inputs

        edges = int(batch_size)
        nodes = edges if node_capacity is None else int(node_capacity)
        if edges < 1 or nodes < 1:
            raise ValueError(f"gcn export: capacities must be >= 1, got {nodes} hosts and {edges} flows")
        form = DenseHostGraphNet(model.eval())
        sample = sample_inputs(form.variant, form.n_features, form.n_node_features, nodes, edges)
        return litert_torch.convert(form, sample).model_content()

    def graph_structure(self, params: Mapping) -> str:
        """What the exported form of a model of ``params`` aggregates over (the bundle's ``graph.structure``:
        ``normalised_adjacency`` or ``mean_incidence``), which the gateway computes with numpy."""
        from models.gcn.export_form import STRUCTURE

        return STRUCTURE[self.resolve(params)["variant"]]

    def detector_class(self) -> type:
        from models.gcn.detector import GCNDetector

        return GCNDetector


def _check_labels(X: list[HostGraph], y: np.ndarray) -> None:
    expected = sum(g.n_edges for g in X)
    if len(np.asarray(y).reshape(-1)) != expected:
        raise ValueError(f"expected {expected} flow labels (the graphs' edges), got {len(np.asarray(y).reshape(-1))}")


FAMILY = GCNFamily()
