"""Shared implementation for families that read one encoded row per flow (``gateway_input == "flow_rows"``).

Examples are the pipeline's encoded rows (float32, ``(n, n_features)``) and the flows' labels; the network maps
a batch of rows to one logit per row. Local training is plain federated local SGD: exactly ``epochs`` epochs
of Adam + BCEWithLogitsLoss from the weights the model holds, nothing restored afterwards (what FedAvg assumes;
:func:`models.training.train_torch_classifier` is the centralized, early-stopped loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flows.table import LABEL
from models.evaluation import bce_with_logits
from models.family import ModelFamily
from models.training import predict_logits, train_one_epoch

if TYPE_CHECKING:
    from flows.pipeline_state import PipelineState
    from flows.table import FlowTable

__all__ = ["FLOW_ROWS", "FlowRowFamily"]

FLOW_ROWS = "flow_rows"


class FlowRowFamily(ModelFamily):
    """A family whose network reads encoded flow rows; subclasses implement ``build`` and may override
    :meth:`export_form` (the module that litert-torch converts)."""

    gateway_input = FLOW_ROWS

    def batches(self, table: "FlowTable", pipeline: "PipelineState", graph=None) -> tuple[np.ndarray, np.ndarray]:
        """One encoded row per flow (``graph`` does not apply to flow rows)."""
        X = np.ascontiguousarray(pipeline.transform(table.frame), dtype=np.float32)
        return X, table.frame[LABEL].to_numpy(dtype=np.int64)

    def train_local(self, model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
                    lr: float, seed: int, proximal_mu: float = 0.0) -> float:  # fmt: skip
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
        loss_fn = proximal_loss(model, proximal_mu) if proximal_mu > 0 else nn.BCEWithLogitsLoss()
        loss_mean = float("nan")
        for _ in range(epochs):
            loss_mean = train_one_epoch(model, loader, optimizer, loss_fn)
        return loss_mean

    def evaluate_local(self, model: nn.Module, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        logits = predict_logits(model, X)
        y = np.asarray(y).reshape(-1)
        if len(y) == 0:
            raise ValueError("no evaluation rows")
        return bce_with_logits(logits, y), float(np.mean((logits >= 0).astype(np.int64) == y))

    def predict_logits(self, model: nn.Module, X: np.ndarray) -> np.ndarray:
        return predict_logits(model, X)

    def export_form(self, model: nn.Module) -> nn.Module:
        """The module converted to LiteRT: the model itself unless the family writes an equivalent form."""
        return model.eval()

    def export_tflite(self, model: nn.Module, batch_size: int) -> bytes:
        import litert_torch

        n_features = int(getattr(model, "n_features"))
        sample = (torch.zeros(batch_size, n_features),)
        return litert_torch.convert(self.export_form(model.eval()), sample).model_content()


def proximal_loss(model: nn.Module, mu: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """BCE-with-logits plus FedProx's proximal term (Li et al., MLSys 2020) around the model's current
    (broadcast) weights."""
    anchor = [p.detach().clone() for p in model.parameters()]
    bce = nn.BCEWithLogitsLoss()

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        drift = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
        return bce(logits, target) + 0.5 * mu * drift

    return loss
