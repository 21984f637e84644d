"""PNG plots of run results (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def plot_confusion_matrices(matrices: dict[str, list[list[int]]], path: Path, title: str) -> Path:
    """One panel per model: counts and row-normalised shading, rows = true class."""
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.4), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items()):
        counts = np.asarray(matrix)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, f"{value}\n{shares[i, j]:.1%}", ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black", fontsize=9)  # fmt: skip
        ax.set_xticks([0, 1], ["benign", "malicious"])
        ax.set_yticks([0, 1], ["benign", "malicious"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str) -> Path:
    """ROC curves: model -> (y_true, scores, auc)."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for name, (y_true, scores, auc) in curves.items():
        fpr, tpr, _ = roc_curve(y_true, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
