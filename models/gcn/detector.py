"""The host-graph network as a centralized :class:`models.base.Detector`: early-stopped training on windows."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import torch

from flows.graphs import HOST_GRAPHS, HostGraph, chronological_split, select, window_keys
from models.base import Detector, as_labels
from models.family import param_fields, resolve_params
from models.gcn.family import edge_labels
from models.gcn.network import HostGraphNet
from models.gcn.params import GCNParams, GCNTraining
from models.gcn.training import fit_early_stopped, predict
from models.training import TrainHistory

__all__ = ["GCNDetector"]

log = logging.getLogger(__name__)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


class GCNDetector(Detector):
    """Flow and host classifier over host graphs: ``X`` is a list of :class:`flows.graphs.HostGraph`, ``y`` the
    flows' labels in edge order; :meth:`predict_proba` gives one probability per flow (edge order),
    :meth:`predict_host_proba` one per host (nodes, windows concatenated).

    Parameters: every field of :class:`GCNParams` and of :class:`GCNTraining`. Fitted: ``model_``, ``history_``."""

    name = "gcn"
    input_kind = HOST_GRAPHS

    def __init__(self, seed: int = 0, **params: Any) -> None:
        arch, train = set(param_fields(GCNParams)), set(param_fields(GCNTraining))
        unknown = set(params) - arch - train
        if unknown:
            raise ValueError(f"unknown gcn parameter(s) {sorted(unknown)}; valid: {sorted(arch | train)}")
        self.seed = seed
        self.arch = resolve_params(GCNParams, {k: v for k, v in params.items() if k in arch}, "gcn")
        self.training = GCNTraining(**resolve_params(GCNTraining, {k: v for k, v in params.items() if k in train},
                                                     "gcn"))  # fmt: skip
        self.params = {**self.arch, **vars(self.training)}
        self.model_: HostGraphNet | None = None
        self.history_: TrainHistory | None = None

    def fit(self, X_train: list[HostGraph], y_train: np.ndarray, X_val: list[HostGraph] | None = None,
            y_val: np.ndarray | None = None) -> "GCNDetector":  # fmt: skip
        train = list(X_train)
        if not train:
            raise ValueError("gcn: no training windows")
        if not np.array_equal(as_labels(y_train), edge_labels(train)):
            raise ValueError("gcn: y_train must be the training graphs' flow labels in edge order")
        if X_val is None:
            starts, sites = window_keys(train)
            split = chronological_split(starts, 0.0, self.training.val_fraction, sites)
            train, val = select(train, split.train), select(train, split.val)
            log.info("gcn: the latest %d of %d training windows validate", len(val), len(train) + len(val))
        else:
            val = list(X_val)
        torch.manual_seed(self.seed)
        self.model_ = HostGraphNet(train[0].n_edge_features, **self.arch)
        self.history_ = fit_early_stopped(self.model_, train, val, self.training, self.seed)
        return self

    def _predict(self, X: list[HostGraph]) -> tuple[np.ndarray, np.ndarray]:
        if self.model_ is None:
            raise RuntimeError("gcn: call fit() before predicting")
        widths = {g.n_edge_features for g in X}
        if widths - {self.model_.n_features}:
            raise ValueError(f"gcn was fitted on {self.model_.n_features} flow features, the graphs have {widths}")
        return predict(self.model_, list(X))

    def predict_proba(self, X: list[HostGraph]) -> np.ndarray:
        return _sigmoid(self._predict(X)[0])

    def predict_host_proba(self, X: list[HostGraph]) -> np.ndarray:
        return _sigmoid(self._predict(X)[1])

    def n_bytes(self) -> int:
        if self.model_ is None:
            raise RuntimeError("gcn: call fit() before n_bytes()")
        buf = io.BytesIO()
        torch.save(self.model_.state_dict(), buf)
        return buf.getbuffer().nbytes
