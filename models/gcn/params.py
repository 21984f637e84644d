"""The host-graph networks' parameters and their training settings: the only place their defaults are written."""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("gcn", "egraphsage")


@dataclass(frozen=True)
class GCNParams:
    """Architecture of :class:`models.gcn.network.HostGraphNet` (the number of encoded flow features, the edges'
    attributes, comes from the pipeline; the node features are :data:`flows.graphs.NODE_FEATURES`).

    ``variant``: ``gcn`` (GCNConv over the hosts, both directions of every flow; edge features enter the flow head
    only) or ``egraphsage`` (E-GraphSAGE after Lo et al., NOMS 2022: each message is the neighbour's embedding with
    the flow's encoded features, mean-aggregated separately over incoming and outgoing flows). ``layers`` message
    passing layers of ``hidden`` units; the flow head reads both endpoints' embeddings and the flow's features, the
    host head one embedding, each through ``head_hidden`` units. The loss is
    ``edge_loss_weight * BCE(flows) + node_loss_weight * BCE(hosts)``.
    """

    variant: str = "gcn"
    hidden: int = 64
    layers: int = 2
    head_hidden: int = 64
    dropout: float = 0.1
    edge_loss_weight: float = 1.0
    node_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("hidden", "layers", "head_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.edge_loss_weight < 0 or self.node_loss_weight < 0 or self.edge_loss_weight + self.node_loss_weight == 0:
            raise ValueError("edge_loss_weight and node_loss_weight must be >= 0, and not both 0")


@dataclass(frozen=True)
class GCNTraining:
    """Centralized training (:class:`models.gcn.detector.GCNDetector`): Adam for up to ``epochs`` epochs over the
    training windows in batches of ``batch_windows`` windows, early stopping when the validation windows' loss has
    not improved for ``patience`` epochs (the best epoch's weights are restored). ``val_fraction``: the share of the
    latest training windows held out for validation when ``fit`` gets none."""

    epochs: int = 100
    lr: float = 0.01
    patience: int = 10
    batch_windows: int = 8
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1 or self.batch_windows < 1:
            raise ValueError("epochs, patience and batch_windows must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
