"""Local training and evaluation of the CNN-LSTM on one client's matrices (local SGD; FedProx's proximal term).

Unlike :func:`models.training.train_torch_classifier` there is no early stopping and no restoring of the best
epoch: a federated client trains exactly ``epochs`` epochs from the broadcast weights and sends what it ends
with, which is what FedAvg assumes.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.cnn_lstm import CNNLSTM
from models.evaluation import bce_with_logits
from models.training import predict_logits, train_one_epoch


def build_model(model_config: Mapping) -> CNNLSTM:
    """The global model's architecture as broadcast by the server: ``{"n_features": ..., CNNLSTM kwargs}``."""
    return CNNLSTM(**dict(model_config))


def round_lr(run_config: Mapping, server_round: int) -> float:
    """The clients' learning rate in ``server_round``: ``lr * lr-decay ** (round - 1)`` (same on every client)."""
    decay = float(run_config.get("lr-decay", 1.0))
    return float(run_config.get("lr", 1e-3)) * decay ** max(server_round - 1, 0)


def train_local(
    model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float, seed: int,
    proximal_mu: float = 0.0,
) -> float:
    """Adam + BCEWithLogitsLoss for ``epochs`` epochs; returns the mean training loss of the last epoch.

    ``proximal_mu > 0`` adds FedProx's term ``mu/2 * ||w - w_global||^2`` (Li et al., MLSys 2020), with
    ``w_global`` the weights the model starts from (the broadcast global model); the loss returned includes it.
    """
    if epochs < 1:
        raise ValueError(f"local-epochs must be >= 1, got {epochs}")
    if len(X) == 0:
        raise ValueError("no training rows on this client")
    torch.manual_seed(seed)  # dropout
    X_t = torch.tensor(np.asarray(X, dtype=np.float32))  # copies: the inputs may be read-only views
    y_t = torch.tensor(np.asarray(y), dtype=torch.float32).reshape(-1)
    loader = DataLoader(TensorDataset(X_t, y_t), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = _proximal_loss(model, proximal_mu) if proximal_mu > 0 else nn.BCEWithLogitsLoss()
    loss_mean = float("nan")
    for _ in range(epochs):
        loss_mean = train_one_epoch(model, loader, optimizer, loss_fn)
    return loss_mean


def _proximal_loss(model: nn.Module, mu: float):
    """BCE-with-logits plus FedProx's proximal term around the model's current (global) weights."""
    anchor = [p.detach().clone() for p in model.parameters()]
    bce = nn.BCEWithLogitsLoss()

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        drift = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
        return bce(logits, target) + 0.5 * mu * drift

    return loss


def evaluate_local(model: nn.Module, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean BCE loss, accuracy at logit 0) of ``model`` on (X, y)."""
    logits = predict_logits(model, X)
    y = np.asarray(y).reshape(-1)
    loss = bce_with_logits(logits, y)
    accuracy = float(np.mean((logits >= 0).astype(np.int64) == y))
    return loss, accuracy
