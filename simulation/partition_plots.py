"""Per-client class histograms of a partition: a PNG (matplotlib, Agg backend) and a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flows.partitioning import client_distances, mean_tv_distance  # noqa: E402


def class_order(histogram: dict) -> list[str]:
    """Classes in first-seen order over the clients (class_histogram already lists them most frequent first)."""
    order: dict[str, None] = {}
    for counts in histogram.values():
        order.update(dict.fromkeys(map(str, counts)))
    return list(order)


def class_colours(classes: list[str]) -> dict[str, tuple]:
    """One fixed colour per class position (tab10, then tab20 for more classes)."""
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    return {c: cmap(i % cmap.N) for i, c in enumerate(classes)}


def plot_class_histogram(histogram: dict, path: str | Path, title: str) -> Path:
    """Stacked horizontal bars per client: row counts (left) and class shares (right); one legend."""
    path = Path(path)
    clients = list(histogram)
    classes = class_order(histogram)
    colours = class_colours(classes)
    counts = np.array([[histogram[k].get(c, 0) for c in classes] for k in clients], dtype=np.float64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    height = min(max(2.6, 0.8 + 0.26 * len(clients)), 40.0)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, height), sharey=True)
    y = np.arange(len(clients))
    for ax, values, label in ((axes[0], counts, "rows"), (axes[1], shares, "share of client's rows")):
        left = np.zeros(len(clients))
        for j, name in enumerate(classes):
            ax.barh(y, values[:, j], left=left, color=colours[name], label=name, height=0.8)
            left += values[:, j]
        ax.set_xlabel(label)
    axes[1].set_xlim(0, 1)
    axes[0].set_yticks(y, [f"client {k}" for k in clients], fontsize=8 if len(clients) <= 40 else 5)
    axes[0].set_ylim(len(clients) - 0.5, -0.5)  # client 0 on top, no empty margins
    axes[1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="class")
    fig.suptitle(f"{title} (mean TV distance to pooled: {mean_tv_distance(histogram):.3f})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_partition_report(
    histogram: dict, out_dir: str | Path, title: str, *, stem: str = "partition", extra: dict | None = None
) -> dict[str, Path]:
    """Write ``<stem>_histogram.json`` (histogram, sizes, skew, ``extra`` such as the config) and the PNG."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        **(extra or {}),
        "sizes": {k: int(sum(v.values())) for k, v in histogram.items()},
        "mean_tv_distance": mean_tv_distance(histogram),
        "tv_distance": client_distances(histogram),
        "histogram": histogram,
    }
    json_path = out_dir / f"{stem}_histogram.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    png_path = plot_class_histogram(histogram, out_dir / f"{stem}_histogram.png", title)
    return {"json": json_path, "png": png_path}
