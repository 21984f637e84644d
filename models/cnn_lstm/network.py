"""CNN-LSTM flow classifier.

The preprocessed feature vector (batch, n_features) is read as a one-channel
sequence: Conv1d -> (BatchNorm) -> ReLU -> MaxPool1d gives n_features // pool steps
with ``conv_channels`` values each, an LSTM reads them, and a readout of its outputs
(``last`` step, or ``mean``/``max`` over the steps) goes through dropout -> Linear -> ReLU -> Linear(1) to a logit.

Export and DP constraints honoured here:
- fixed sequence length, plain ``nn.LSTM`` (batch_first), no packed sequences and no
  data-dependent control flow in ``forward`` (litert-torch unrolls the LSTM);
- the LSTM is the direct attribute ``lstm`` so opacus can swap it for ``DPLSTM``
  (same state-dict keys);
- ``batch_norm`` defaults to False: opacus does not support BatchNorm (its validator
  swaps it for GroupNorm, which changes the state-dict keys) and BatchNorm statistics
  are a poor fit for non-IID federated clients.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from models.base import Detector, as_features, as_labels
from models.training import TrainHistory, predict_logits, train_torch_classifier

__all__ = ["CNNLSTM", "CNNLSTMDetector"]

log = logging.getLogger(__name__)


READOUTS = ("last", "mean", "max")


class CNNLSTM(nn.Module):
    """Conv1d + LSTM binary classifier over a tabular feature vector; outputs logits (batch,)."""

    def __init__(
        self,
        n_features: int,
        conv_channels: int = 32,
        kernel_size: int = 3,
        pool: int = 2,
        batch_norm: bool = False,
        lstm_hidden: int = 64,
        lstm_layers: int = 1,
        dropout: float = 0.3,
        dense: int = 32,
        readout: str = "last",
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if pool < 1 or n_features // pool < 1:
            raise ValueError(f"pool={pool} leaves no sequence steps for n_features={n_features}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        self.n_features = n_features
        self.seq_len = n_features // pool
        self.conv = nn.Conv1d(1, conv_channels, kernel_size, padding=kernel_size // 2)
        self.norm: nn.Module = nn.BatchNorm1d(conv_channels) if batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.pool = nn.MaxPool1d(pool)
        self.lstm = nn.LSTM(
            input_size=conv_channels,
            hidden_size=lstm_hidden,
            num_layers=lstm_layers,
            batch_first=True,
        )
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(lstm_hidden, dense)
        self.fc_act = nn.ReLU()
        self.out = nn.Linear(dense, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, n_features) float -> logits (batch,)."""
        h = x.unsqueeze(1)                        # (B, 1, F)
        h = self.pool(self.act(self.norm(self.conv(h))))  # (B, C, F // pool)
        h = h.transpose(1, 2)                     # (B, T, C)
        seq, _ = self.lstm(h)                     # (B, T, H)
        if self.readout == "max":                 # fixed at construction: no data-dependent flow
            summary = seq.amax(dim=1)
        elif self.readout == "mean":
            summary = seq.mean(dim=1)
        else:
            summary = seq[:, -1, :]               # last step of the top layer
        z = self.fc_act(self.fc1(self.dropout(summary)))
        return self.out(z).squeeze(-1)


_ARCH_DEFAULTS: dict[str, Any] = dict(
    conv_channels=32, kernel_size=3, pool=2, batch_norm=False,
    lstm_hidden=64, lstm_layers=1, dropout=0.3, dense=32, readout="last",
)
_TRAIN_DEFAULTS: dict[str, Any] = dict(
    epochs=30, batch_size=64, lr=1e-3, patience=5, weight_decay=0.0, lr_decay_patience=0, val_fraction=0.1, progress=True,
)


class CNNLSTMDetector(Detector):
    """Detector wrapper around :class:`CNNLSTM` with early-stopped Adam training.

    Parameters: every ``CNNLSTM`` size (conv_channels, kernel_size, pool, batch_norm,
    lstm_hidden, lstm_layers, dropout, dense) and the training settings epochs,
    batch_size, lr, patience, weight_decay, val_fraction (used only when ``fit`` gets no
    validation set) and progress. Fitted attributes: ``model_``, ``history_``.
    """

    name = "cnn_lstm"

    def __init__(self, seed: int = 0, **params: Any) -> None:
        unknown = set(params) - set(_ARCH_DEFAULTS) - set(_TRAIN_DEFAULTS)
        if unknown:
            valid = sorted({**_ARCH_DEFAULTS, **_TRAIN_DEFAULTS})
            raise ValueError(f"unknown cnn_lstm parameter(s) {sorted(unknown)}; valid: {valid}")
        self.seed = seed
        self.params = {**_ARCH_DEFAULTS, **_TRAIN_DEFAULTS, **params}
        self.model_: CNNLSTM | None = None
        self.history_: TrainHistory | None = None

    def build_model(self, n_features: int) -> CNNLSTM:
        """A fresh, untrained network for ``n_features`` inputs (uses the current torch RNG)."""
        return CNNLSTM(n_features, **{k: self.params[k] for k in _ARCH_DEFAULTS})

    def fit(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> "CNNLSTMDetector":
        X = as_features(X_train)
        y = as_labels(y_train, len(X))
        if X_val is None:
            X, X_val, y, y_val = _carve_validation(X, y, self.params["val_fraction"], self.seed)
            log.info("cnn_lstm: carved %d validation rows from %d training rows", len(X_val), len(X) + len(X_val))
        elif y_val is None:
            raise ValueError("X_val given without y_val")
        X_val = as_features(X_val)
        y_val = as_labels(y_val, len(X_val))
        torch.manual_seed(self.seed)
        self.model_ = self.build_model(X.shape[1])
        p = self.params
        self.history_ = train_torch_classifier(
            self.model_, X, y, X_val, y_val,
            epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], patience=p["patience"],
            lr_decay_patience=p["lr_decay_patience"],
            seed=self.seed, weight_decay=p["weight_decay"], progress=p["progress"],
        )
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("cnn_lstm: call fit() before predict_proba()")
        X = as_features(X)
        if X.shape[1] != self.model_.n_features:
            raise ValueError(f"cnn_lstm was fitted on {self.model_.n_features} features, X has {X.shape[1]}")
        logits = predict_logits(self.model_, X)
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    def n_bytes(self) -> int:
        if self.model_ is None:
            raise RuntimeError("cnn_lstm: call fit() before n_bytes()")
        buf = io.BytesIO()
        torch.save(self.model_.state_dict(), buf)
        return buf.getbuffer().nbytes


def _carve_validation(
    X: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of (X, y) into train/validation; stratified when both classes allow it."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    if len(X) < 2:
        raise ValueError(f"need at least 2 training rows to carve a validation split, got {len(X)}")
    counts = np.bincount(y, minlength=2)
    n_val = max(1, int(round(fraction * len(X))))
    stratify = y if counts.min() >= 2 and n_val >= 2 else None
    if stratify is None:
        log.warning("cnn_lstm: validation split not stratified (class counts %s)", counts.tolist())
    X_tr, X_va, y_tr, y_va = train_test_split(
        X, y, test_size=n_val, random_state=seed, stratify=stratify
    )
    return X_tr, X_va, y_tr, y_va
