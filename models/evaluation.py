"""Binary detection metrics shared by the centralized benchmark and the federated server."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score


def detection_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, ROC AUC and the confusion matrix [[tn, fp], [fn, tp]]."""
    y_true = np.asarray(y_true).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    y_pred = (scores >= threshold).astype(np.int64)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, scores)) if both_classes else float("nan"),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        "threshold": float(threshold),
        "n": int(len(y_true)),
    }


def bce_with_logits(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Mean binary cross-entropy of logits, computed stably in numpy (log(1 + e^z) - y z)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    return float(np.mean(np.logaddexp(0.0, logits) - y_true * logits))
