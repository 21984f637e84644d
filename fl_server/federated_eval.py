"""Federated evaluation: the global model judged on the clients' own validation rows, aggregated by examples.

Each client's evaluate reply (:mod:`fl_client.app`) carries ``num-examples``, ``eval_loss``, ``eval_accuracy`` and
the confusion counts ``eval_tp``/``eval_fp``/``eval_fn``/``eval_tn`` of its validation rows at the pipeline's
threshold. Loss and accuracy are averaged weighted by examples; precision, recall and F1 come from the summed
counts (a micro average, so a client with few rows weighs what its rows weigh). This is the only judgement of the
global model in a deployment whose server holds no data (``deploy.central_eval=none``).
"""

from __future__ import annotations

import math

PREFIX = "fed_"
COUNTS = ("eval_tp", "eval_fp", "eval_fn", "eval_tn")
REPORTED = tuple(PREFIX + k for k in ("loss", "accuracy", "precision", "recall", "f1"))


def _number(row: dict, key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def federated_metrics(rows: list[dict]) -> dict:
    """``fed_*`` metrics of one round's evaluate replies (rows of ``strategy.client_evaluate[round]``); replies
    with an error, no examples or non-finite values are left out and counted in ``fed_clients_failed``."""
    usable = []
    for row in rows:
        examples, loss, accuracy = (_number(row, k) for k in ("num-examples", "eval_loss", "eval_accuracy"))
        if "error" in row or examples is None or examples <= 0 or loss is None or accuracy is None:
            continue
        usable.append((examples, loss, accuracy, row))
    out: dict = {f"{PREFIX}clients": len(usable), f"{PREFIX}clients_failed": len(rows) - len(usable)}
    total = sum(u[0] for u in usable)
    out[f"{PREFIX}examples"] = int(total)
    if not usable:
        return out
    out[f"{PREFIX}loss"] = sum(e * loss for e, loss, _, _ in usable) / total
    out[f"{PREFIX}accuracy"] = sum(e * acc for e, _, acc, _ in usable) / total
    counted = [row for *_, row in usable if all(_number(row, k) is not None for k in COUNTS)]
    if len(counted) == len(usable):
        tp, fp, fn, tn = (sum(_number(row, k) for row in counted) for k in COUNTS)  # type: ignore[misc]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.update({f"{PREFIX}precision": precision, f"{PREFIX}recall": recall, f"{PREFIX}f1": f1,
                    f"{PREFIX}positives": int(tp + fn)})  # fmt: skip
    return out
