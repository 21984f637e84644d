"""Batching host graphs into one disjoint graph, the two-headed loss, local epochs and early-stopped training."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from flows.graphs import HostGraph
from models.gcn.params import GCNParams, GCNTraining
from models.training import TrainHistory

__all__ = ["GraphBatch", "collate", "fit_early_stopped", "graph_loss", "predict", "train_epochs"]

log = logging.getLogger(__name__)
PREDICT_WINDOWS = 64  # windows per forward pass when predicting


@dataclass
class GraphBatch:
    """Several windows as one graph with disjoint node sets (node ids offset window by window)."""

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    edge_label: torch.Tensor
    node_label: torch.Tensor


def collate(graphs: Sequence[HostGraph]) -> GraphBatch:
    if not graphs:
        raise ValueError("no host graphs to batch")
    offsets = np.cumsum([0] + [g.n_nodes for g in graphs[:-1]])
    return GraphBatch(
        x=torch.from_numpy(np.concatenate([g.node_attr for g in graphs])),
        edge_index=torch.from_numpy(np.concatenate([g.edge_index + o for g, o in zip(graphs, offsets)], axis=1)),
        edge_attr=torch.from_numpy(np.concatenate([g.edge_attr for g in graphs])),
        edge_label=torch.from_numpy(np.concatenate([g.edge_label for g in graphs]).astype(np.float32)),
        node_label=torch.from_numpy(np.concatenate([g.node_label for g in graphs]).astype(np.float32)),
    )  # fmt: skip


def graph_loss(model: nn.Module, batch: GraphBatch) -> torch.Tensor:
    """``edge_loss_weight * BCE(flows) + node_loss_weight * BCE(hosts)`` (the weights of ``model.params``)."""
    p = GCNParams(**model.params)
    edge_logits, node_logits = model(batch.x, batch.edge_index, batch.edge_attr)
    bce = nn.functional.binary_cross_entropy_with_logits
    loss = p.node_loss_weight * bce(node_logits, batch.node_label)
    if len(batch.edge_label):
        loss = loss + p.edge_loss_weight * bce(edge_logits, batch.edge_label)
    return loss


def _one_epoch(model: nn.Module, graphs: Sequence[HostGraph], optimizer: torch.optim.Optimizer, batch_windows: int,
               generator: torch.Generator, extra: Callable[[], torch.Tensor] | None) -> float:  # fmt: skip
    model.train()
    order = torch.randperm(len(graphs), generator=generator).tolist()
    total, seen = 0.0, 0
    for start in range(0, len(order), batch_windows):
        batch = collate([graphs[i] for i in order[start:start + batch_windows]])
        optimizer.zero_grad(set_to_none=True)
        loss = graph_loss(model, batch)
        if extra is not None:
            loss = loss + extra()
        loss.backward()
        optimizer.step()
        n = int(batch.edge_attr.shape[0]) or 1
        total, seen = total + float(loss.detach()) * n, seen + n
    return total / max(seen, 1)


def train_epochs(model: nn.Module, graphs: Sequence[HostGraph], *, epochs: int, batch_windows: int, lr: float,
                 seed: int, proximal_mu: float = 0.0, weight_decay: float = 0.0) -> float:  # fmt: skip
    """Exactly ``epochs`` epochs of Adam from the model's weights (federated local training); the last epoch's mean
    loss per flow. ``proximal_mu > 0`` adds FedProx's ``mu/2 * ||w - w_start||^2``."""
    if epochs < 1:
        raise ValueError(f"local-epochs must be >= 1, got {epochs}")
    if not graphs:
        raise ValueError("no training windows on this client")
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    extra = None
    if proximal_mu > 0:
        anchor = [p.detach().clone() for p in model.parameters()]

        def extra() -> torch.Tensor:
            return 0.5 * proximal_mu * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))

    loss = float("nan")
    for _ in range(epochs):
        loss = _one_epoch(model, graphs, optimizer, batch_windows, generator, extra)
    return loss


def predict(model: nn.Module, graphs: Sequence[HostGraph]) -> tuple[np.ndarray, np.ndarray]:
    """(flow logits, host logits), float32, the graphs' edges and nodes concatenated (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    edges, nodes = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    try:
        with torch.no_grad():
            for start in range(0, len(graphs), PREDICT_WINDOWS):
                batch = collate(graphs[start:start + PREDICT_WINDOWS])
                edge_logits, node_logits = model(batch.x, batch.edge_index, batch.edge_attr)
                edges.append(edge_logits.numpy().astype(np.float32))
                nodes.append(node_logits.numpy().astype(np.float32))
    finally:
        model.train(was_training)
    return np.concatenate(edges), np.concatenate(nodes)


def _bce(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, logits.astype(np.float64)) - labels * logits)) if len(labels) else 0.0


def validation_loss(model: nn.Module, graphs: Sequence[HostGraph]) -> tuple[float, float]:
    """(the training objective on ``graphs``, flow accuracy at logit 0)."""
    p = GCNParams(**model.params)
    edge_logits, node_logits = predict(model, graphs)
    edge_labels = np.concatenate([g.edge_label for g in graphs])
    node_labels = np.concatenate([g.node_label for g in graphs])
    loss = p.edge_loss_weight * _bce(edge_logits, edge_labels) + p.node_loss_weight * _bce(node_logits, node_labels)
    accuracy = float(np.mean((edge_logits >= 0) == edge_labels)) if len(edge_labels) else float("nan")
    return loss, accuracy


def fit_early_stopped(model: nn.Module, train: Sequence[HostGraph], val: Sequence[HostGraph], settings: GCNTraining,
                      seed: int) -> TrainHistory:  # fmt: skip
    """Adam with early stopping on the validation windows' loss; the best epoch's weights are restored."""
    if not train or not val:
        raise ValueError(f"empty data: {len(train)} training windows, {len(val)} validation windows")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history, best, best_state, bad = TrainHistory(), float("inf"), copy.deepcopy(model.state_dict()), 0
    started = time.perf_counter()
    bar = tqdm(range(settings.epochs), desc="train", unit="epoch", disable=not settings.progress, leave=False)
    for epoch in bar:
        history.train_loss.append(_one_epoch(model, train, optimizer, settings.batch_windows, generator, None))
        val_loss, val_accuracy = validation_loss(model, val)
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_accuracy)
        if val_loss < best:
            best, history.best_epoch, bad, best_state = val_loss, epoch, 0, copy.deepcopy(model.state_dict())
        else:
            bad += 1
        bar.set_postfix(train_loss=f"{history.train_loss[-1]:.4f}", val_loss=f"{val_loss:.4f}")
        if bad >= settings.patience:
            history.stopped_early = epoch + 1 < settings.epochs
            break
    bar.close()
    model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - started
    log.info("trained %d epoch(s) in %.1f s; best epoch %d (val_loss=%.4f)%s", history.epochs_run, history.seconds,
             history.best_epoch + 1, best, ", stopped early" if history.stopped_early else "")  # fmt: skip
    return history
