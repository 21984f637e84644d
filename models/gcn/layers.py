"""An E-GraphSAGE layer (Lo et al., "E-GraphSAGE: A Graph Neural Network based Intrusion Detection System for
IoT", NOMS 2022) on torch-geometric's MessagePassing: flow features travel in the messages.

The paper aggregates, for each node, the features of its edges (and in later layers the neighbours' embeddings)
and concatenates the result with the node's own embedding. Flows are directed and a host's role depends on both
what it sends and what it receives, so this layer aggregates incoming and outgoing flows separately (two mean
aggregations with their own message weights) before the update.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import MessagePassing

__all__ = ["EdgeSAGEConv"]


class EdgeSAGEConv(MessagePassing):
    """``h_v' = W_u [h_v, mean_in(m), mean_out(m)]`` with ``m = relu(W_m [h_u, e_uv])`` over v's flows."""

    def __init__(self, in_channels: int, edge_channels: int, out_channels: int) -> None:
        super().__init__(aggr="mean")
        self.message_in = nn.Linear(in_channels + edge_channels, out_channels)
        self.message_out = nn.Linear(in_channels + edge_channels, out_channels)
        self.update_lin = nn.Linear(in_channels + 2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        incoming = self.propagate(edge_index, x=x, edge_attr=edge_attr, lin=self.message_in)
        outgoing = self.propagate(edge_index.flip(0), x=x, edge_attr=edge_attr, lin=self.message_out)
        return self.update_lin(torch.cat([x, incoming, outgoing], dim=-1))

    def message(self, x_j: torch.Tensor, edge_attr: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
        return torch.relu(lin(torch.cat([x_j, edge_attr], dim=-1)))
