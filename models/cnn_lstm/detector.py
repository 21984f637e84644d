"""The CNN-LSTM as a centralized :class:`models.base.Detector`: early-stopped Adam training on encoded rows."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from models.base import Detector, as_features, as_labels
from models.cnn_lstm.network import CNNLSTM
from models.cnn_lstm.params import CNNLSTMParams
from models.family import param_fields, resolve_params
from models.training import TrainHistory, predict_logits, train_torch_classifier

__all__ = ["CNNLSTMDetector"]

log = logging.getLogger(__name__)

_TRAIN_DEFAULTS: dict[str, Any] = dict(
    epochs=30, batch_size=64, lr=1e-3, patience=5, weight_decay=0.0, lr_decay_patience=0, val_fraction=0.1, progress=True,
)


class CNNLSTMDetector(Detector):
    """Detector wrapper around :class:`CNNLSTM` with early-stopped Adam training.

    Parameters: every field of :class:`CNNLSTMParams` and the training settings epochs, batch_size, lr,
    patience, weight_decay, lr_decay_patience, val_fraction (used only when ``fit`` gets no validation set) and
    progress. Fitted attributes: ``model_``, ``history_``.
    """

    name = "cnn_lstm"

    def __init__(self, seed: int = 0, **params: Any) -> None:
        arch_names = set(param_fields(CNNLSTMParams))
        unknown = set(params) - arch_names - set(_TRAIN_DEFAULTS)
        if unknown:
            valid = sorted(arch_names | set(_TRAIN_DEFAULTS))
            raise ValueError(f"unknown cnn_lstm parameter(s) {sorted(unknown)}; valid: {valid}")
        self.seed = seed
        self.arch = {k: v for k, v in params.items() if k in arch_names}
        self.params = {**resolve_params(CNNLSTMParams, self.arch, "cnn_lstm"), **_TRAIN_DEFAULTS,
                       **{k: v for k, v in params.items() if k not in arch_names}}  # fmt: skip
        self.model_: CNNLSTM | None = None
        self.history_: TrainHistory | None = None

    def build_model(self, n_features: int) -> CNNLSTM:
        """A fresh, untrained network for ``n_features`` inputs (uses the current torch RNG)."""
        return CNNLSTM(n_features, **self.arch)

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
