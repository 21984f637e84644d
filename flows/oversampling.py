"""SMOTE (imblearn) on an encoded training matrix; the only place the project oversamples."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def smote(X: np.ndarray, y: np.ndarray, seed: int, k_neighbors: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """Balance the classes of (X, y) with SMOTE; returns the new X, y and the number of synthetic rows.

    Synthetic rows are appended after the originals (imblearn keeps the input order), which the leakage tests
    rely on. Call it on training data only.
    """
    from imblearn.over_sampling import SMOTE

    counts = np.bincount(y.astype(np.int64), minlength=2)
    if counts.min() == counts.max():
        return X, y, 0
    if counts.min() == 0:
        log.warning("SMOTE skipped: only one class present (counts %s)", counts.tolist())
        return X, y, 0
    k = min(k_neighbors, int(counts[counts > 0].min()) - 1)
    if k < 1:
        log.warning("SMOTE skipped: the minority class has fewer than 2 records")
        return X, y, 0
    X_res, y_res = SMOTE(k_neighbors=k, random_state=seed).fit_resample(X, y)
    n_synthetic = len(X_res) - len(X)
    log.info("SMOTE added %d synthetic rows (class counts %s -> %s)", n_synthetic, counts.tolist(),
             np.bincount(y_res, minlength=2).tolist())  # fmt: skip
    return X_res.astype(np.float32), y_res.astype(np.int64), n_synthetic
