"""Common interface for all flow classifiers (baselines and neural networks)."""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

__all__ = ["Detector", "as_features", "as_labels"]


def as_features(X: Any) -> np.ndarray:
    """Return ``X`` as a 2-D C-contiguous float32 array, or raise ValueError."""
    arr = np.ascontiguousarray(X, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected X of shape (n_samples, n_features), got shape {arr.shape}")
    return arr


def as_labels(y: Any, n: int | None = None) -> np.ndarray:
    """Return ``y`` as a 1-D int64 array of 0/1 labels, or raise ValueError."""
    arr = np.asarray(y).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"expected {n} labels, got {arr.shape[0]}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"labels must be 0/1, found values such as {bad.tolist()}")
    return arr.astype(np.int64)


class Detector(ABC):
    """A binary flow classifier: class 1 = malicious.

    ``X`` is a float32 array of shape (n, d), already preprocessed (scaled / one-hot);
    ``y`` holds int labels 0/1. Nothing is learned in ``__init__``.
    """

    name: str = "detector"
    #: what ``fit`` and ``predict_proba`` read: "flow_rows" (a float32 matrix of encoded rows) or "host_graphs"
    #: (a list of :class:`flows.graphs.HostGraph`, one probability per edge; such a detector may add
    #: ``predict_host_proba``, one probability per node)
    input_kind: str = "flow_rows"

    @abstractmethod
    def fit(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> "Detector":
        """Train on (X_train, y_train); X_val/y_val may be used for early stopping."""

    @abstractmethod
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of class 1 (malicious) per row, shape (n,)."""

    def predict(self, X: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Hard 0/1 labels: 1 where ``predict_proba(X) >= threshold``."""
        return (self.predict_proba(X) >= threshold).astype(np.int64)

    def n_bytes(self) -> int:
        """Size of the serialized fitted model in bytes (pickle by default)."""
        return len(pickle.dumps(self._model_object(), protocol=pickle.HIGHEST_PROTOCOL))

    def _model_object(self) -> Any:
        """The object whose serialized size ``n_bytes`` reports (override as needed)."""
        model = getattr(self, "model_", None)
        if model is None:
            raise RuntimeError(f"{self.name}: call fit() before n_bytes()")
        return model

    def __repr__(self) -> str:
        params = getattr(self, "params", {})
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
