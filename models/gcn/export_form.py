"""The host-graph network in a fixed-shape form for LiteRT, with the trained weights of a :class:`HostGraphNet`.

Why by hand: GCNConv's ``gcn_norm`` (self loops added where missing, degrees by ``scatter``) and MessagePassing's
``scatter`` aggregation have data-dependent shapes, which litert-torch cannot lower to a fixed graph. Here the
graph structure arrives as inputs computed with numpy on the gateway (:mod:`gateway.graph_inputs`), padded to a
node capacity N and an edge capacity E, and the LiteRT graph holds only matmuls, gathers and element-wise ops:

* ``gcn``: the normalised adjacency ``D^-1/2 (A + I) D^-1/2`` as a dense (N, N) input; each layer is
  ``adj @ (h W) + b``, GCNConv's propagation (A counts the flows both ways, self-loop flows replaced by one self
  loop per host, exactly what ``add_remaining_self_loops`` does);
* ``egraphsage``: the mean aggregations as incidence matrices (N, E) with ``1 / degree`` entries (``m_in[v, e]``
  for flows e into v, ``m_out[u, e]`` for flows out of u); messages are computed per flow from the gathered
  endpoint embeddings;
* both: the flow head reads the endpoint embeddings gathered by the int32 ``src`` / ``dst`` inputs.

Padded nodes have zero features and no adjacency or incidence entries, so they change no real node; padded flows
have zero incidence columns, and the runtime drops their outputs. The output is one vector: E flow logits, then N
host logits. Inputs, in order: ``x (N, 12), edge_attr (E, F), src (E,), dst (E,)`` then ``adj (N, N)`` (gcn) or
``m_in (N, E), m_out (N, E)`` (egraphsage).
"""

from __future__ import annotations

import torch
from torch import nn

from models.gcn.network import HostGraphNet

__all__ = ["STRUCTURE", "DenseHostGraphNet", "input_names", "sample_inputs"]

#: what each variant's export form aggregates over (the bundle's ``graph.structure``, built by the gateway)
STRUCTURE = {"gcn": "normalised_adjacency", "egraphsage": "mean_incidence"}


def input_names(variant: str) -> tuple[str, ...]:
    """The export form's inputs, in order."""
    structure = ("adj",) if variant == "gcn" else ("m_in", "m_out")
    return ("x", "edge_attr", "src", "dst", *structure)


def sample_inputs(variant: str, n_features: int, n_node_features: int, nodes: int,
                  edges: int) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Zero inputs of the fixed shapes (what litert-torch traces)."""
    base = (torch.zeros(nodes, n_node_features), torch.zeros(edges, n_features),
            torch.zeros(edges, dtype=torch.int32), torch.zeros(edges, dtype=torch.int32))  # fmt: skip
    if variant == "gcn":
        return (*base, torch.zeros(nodes, nodes))
    return (*base, torch.zeros(nodes, edges), torch.zeros(nodes, edges))


class DenseHostGraphNet(nn.Module):
    """Same function as the given :class:`HostGraphNet` in eval mode (dropout is the identity), on padded inputs."""

    def __init__(self, model: HostGraphNet) -> None:
        super().__init__()
        self.variant = model.variant
        self.node_in, self.edge_head, self.node_head = model.node_in, model.edge_head, model.node_head
        self.n_features, self.n_node_features = model.n_features, model.n_node_features
        if self.variant == "gcn":
            self.weights = nn.ModuleList()  # GCNConv's lin (no bias) and its bias, applied after propagation
            self.biases = nn.ParameterList()
            for conv in model.convs:
                lin = nn.Linear(conv.lin.in_channels, conv.lin.out_channels, bias=False)
                with torch.no_grad():
                    lin.weight.copy_(conv.lin.weight)
                self.weights.append(lin)
                self.biases.append(nn.Parameter(conv.bias.detach().clone()))
        else:
            self.convs = model.convs
        self.eval()

    def _embed_gcn(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        for lin, bias in zip(self.weights, self.biases):
            h = h + torch.relu(adj @ lin(h) + bias)
        return h

    def _embed_sage(self, h: torch.Tensor, edge_attr: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                    m_in: torch.Tensor, m_out: torch.Tensor) -> torch.Tensor:  # fmt: skip
        for conv in self.convs:
            h_src, h_dst = torch.index_select(h, 0, src), torch.index_select(h, 0, dst)
            incoming = m_in @ torch.relu(conv.message_in(torch.cat([h_src, edge_attr], dim=-1)))
            outgoing = m_out @ torch.relu(conv.message_out(torch.cat([h_dst, edge_attr], dim=-1)))
            h = h + torch.relu(conv.update_lin(torch.cat([h, incoming, outgoing], dim=-1)))
        return h

    def forward(self, x: torch.Tensor, edge_attr: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                *structure: torch.Tensor) -> torch.Tensor:  # fmt: skip
        h = torch.relu(self.node_in(x))
        if self.variant == "gcn":
            h = self._embed_gcn(h, structure[0])
        else:
            h = self._embed_sage(h, edge_attr, src, dst, structure[0], structure[1])
        pair = torch.cat([torch.index_select(h, 0, src), torch.index_select(h, 0, dst), edge_attr], dim=-1)
        return torch.cat([self.edge_head(pair).squeeze(-1), self.node_head(h).squeeze(-1)])
