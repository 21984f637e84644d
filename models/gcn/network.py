"""The host-graph network: node embeddings by message passing, a flow (edge) head and a host (node) head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch_geometric.nn import GCNConv

from flows.graphs import NODE_FEATURES
from models.family import resolve_params
from models.gcn.layers import EdgeSAGEConv
from models.gcn.params import GCNParams

__all__ = ["HostGraphNet"]


def _head(n_in: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class HostGraphNet(nn.Module):
    """(flow logits (E,), host logits (N,)) of a (batched) host graph.

    ``n_features`` is the number of encoded flow features (the edge attributes); ``params`` are fields of
    :class:`GCNParams` (the rest take its defaults); ``self.params`` holds every field."""

    def __init__(self, n_features: int, **params: Any) -> None:
        super().__init__()
        self.params = resolve_params(GCNParams, params, "gcn")
        p = GCNParams(**self.params)
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        self.n_features, self.n_node_features, self.variant = int(n_features), len(NODE_FEATURES), p.variant
        self.node_in = nn.Linear(self.n_node_features, p.hidden)
        if p.variant == "gcn":
            self.convs = nn.ModuleList(GCNConv(p.hidden, p.hidden) for _ in range(p.layers))
        else:
            self.convs = nn.ModuleList(EdgeSAGEConv(p.hidden, self.n_features, p.hidden) for _ in range(p.layers))
        self.dropout = nn.Dropout(p.dropout)
        self.edge_head = _head(2 * p.hidden + self.n_features, p.head_hidden, p.dropout)
        self.node_head = _head(p.hidden, p.head_hidden, p.dropout)

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        """Host embeddings (N, hidden)."""
        h = torch.relu(self.node_in(x))
        both_ways = torch.cat([edge_index, edge_index.flip(0)], dim=1)  # GCN: a flow links both hosts
        for conv in self.convs:  # residual: a host keeps its own traffic beside its neighbourhood's
            out = conv(h, both_ways) if self.variant == "gcn" else conv(h, edge_index, edge_attr)
            h = h + self.dropout(torch.relu(out))
        return h

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        h = self.embed(x, edge_index, edge_attr)
        pair = torch.cat([h[edge_index[0]], h[edge_index[1]], edge_attr], dim=-1)
        return self.edge_head(pair).squeeze(-1), self.node_head(h).squeeze(-1)
