"""Checks of a client's training reply against the broadcast model, before any screening or aggregation.

A reply that fails is rejected with a reason and never reaches an aggregator (Flower's own consistency checks
would otherwise stop the ServerApp). Works on Flower records and numpy arrays only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
from flwr.app import Message


def metric_keys(reply: Message) -> frozenset[str]:
    records = list(reply.content.metric_records.values()) if not reply.has_error() else []
    return frozenset(records[0].keys()) if len(records) == 1 else frozenset()


def expected_metric_keys(replies: list[Message]) -> frozenset[str]:
    """The metric keys most replies carry (the consistent majority)."""
    counts = Counter(metric_keys(r) for r in replies if not r.has_error())
    return counts.most_common(1)[0][0] if counts else frozenset()


def check_train_reply(reply: Message, reference: Mapping[str, np.ndarray], expected_keys: frozenset[str],
                      weighted_by_key: str = "num-examples") -> str | None:  # fmt: skip
    """None if the reply can be aggregated, else the reason it cannot."""
    if reply.has_error():
        return f"error reply: {reply.error.reason}"
    content = reply.content
    if len(content.array_records) != 1:
        return f"expected one ArrayRecord, got {len(content.array_records)}"
    if len(content.metric_records) != 1:
        return f"expected one MetricRecord, got {len(content.metric_records)}"
    metrics = next(iter(content.metric_records.values()))
    if weighted_by_key not in metrics:
        return f"metrics lack {weighted_by_key!r}"
    weight = metrics[weighted_by_key]
    if isinstance(weight, list) or not np.isfinite(float(weight)) or float(weight) <= 0:
        return f"{weighted_by_key} must be one positive number, got {weight!r}"
    if frozenset(metrics.keys()) != expected_keys:
        return f"inconsistent metrics: keys {sorted(metrics.keys())} differ from {sorted(expected_keys)}"
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if not all(np.isfinite(float(v)) for v in values):
            return f"metric {key!r} is not finite"
    arrays = next(iter(content.array_records.values()))
    missing = sorted(set(reference) - set(arrays.keys()))
    extra = sorted(set(arrays.keys()) - set(reference))
    if missing:
        return f"missing arrays: {', '.join(missing[:5])}"
    if extra:
        return f"unexpected arrays: {', '.join(extra[:5])}"
    for name, expected in reference.items():
        try:
            got = arrays[name].numpy()
        except Exception as exc:  # a corrupt buffer must not stop the server
            return f"array {name!r} cannot be decoded: {exc}"
        if got.shape != expected.shape:
            return f"array {name!r} has shape {got.shape}, expected {expected.shape}"
        if got.dtype != expected.dtype:
            return f"array {name!r} has dtype {got.dtype}, expected {expected.dtype}"
        if not np.all(np.isfinite(got)):
            return f"array {name!r} holds NaN or inf"
    return None
