"""Training replies -> checked, flattened update vectors (reply weights - broadcast weights), and back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.app.message import make_message

from strategies.reply_checks import check_train_reply, expected_metric_keys
from strategies.screening import Decision


def flatten(arrays: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.concatenate([arrays[n].reshape(-1).astype(np.float64) for n in names]) if names else np.zeros(0)


def unflatten(vector: np.ndarray, reference: dict[str, np.ndarray], names: list[str]) -> ArrayRecord:
    out, start = {}, 0
    for name in names:
        shape, dtype = reference[name].shape, reference[name].dtype
        size = int(np.prod(shape))
        out[name] = Array(vector[start : start + size].reshape(shape).astype(dtype))
        start += size
    return ArrayRecord(out)


def reply_arrays(reply: Message) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in next(iter(reply.content.array_records.values())).items()}


@dataclass
class UpdateBatch:
    """The well-formed replies of a round with their clients and update vectors; the malformed ones rejected."""

    base: np.ndarray  # the broadcast global weights, flattened
    names: list[str]
    replies: list[Message] = field(default_factory=list)
    clients: list[int] = field(default_factory=list)
    deltas: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    rejected: list[Decision] = field(default_factory=list)


def collect_updates(replies: list[Message], global_arrays: dict[str, np.ndarray], client_id: Callable[[Message], int],
                    weighted_by_key: str = "num-examples") -> UpdateBatch:  # fmt: skip
    """Check every reply (:mod:`strategies.reply_checks`) and flatten the good ones into update vectors."""
    names = sorted(global_arrays)
    batch = UpdateBatch(base=flatten(global_arrays, names), names=names)
    expected = expected_metric_keys(replies)
    rows = []
    for reply in replies:
        reason = check_train_reply(reply, global_arrays, expected, weighted_by_key)
        if reason:
            batch.rejected.append(Decision(client=client_id(reply), accepted=False, reasons=[reason]))
            continue
        batch.replies.append(reply)
        batch.clients.append(client_id(reply))
        rows.append(flatten(reply_arrays(reply), names) - batch.base)
    batch.deltas = np.stack(rows) if rows else np.zeros((0, len(batch.base)))
    return batch


def claimed_weights(replies: list[Message], weighted_by_key: str = "num-examples") -> np.ndarray:
    """The weight each (well-formed) reply claims for itself, in the replies' order."""
    return np.array([float(next(iter(r.content.metric_records.values()))[weighted_by_key]) for r in replies])


def with_weights(reply: Message, arrays: ArrayRecord, weight: tuple[str, float] | None = None) -> Message:
    """A copy of ``reply`` carrying ``arrays`` instead of its own (metadata kept; metrics kept, except the
    metric ``weight[0]``, which becomes ``weight[1]`` when ``weight`` is given)."""
    metric_key, metrics = next(iter(reply.content.metric_records.items()))
    if weight is not None:  # a plain float: a numpy float would promote a float32 aggregate to float64
        metrics = MetricRecord({**dict(metrics), weight[0]: float(weight[1])})
    return make_message(metadata=reply.metadata, content=RecordDict({"arrays": arrays, metric_key: metrics}))


def cap_reply_weights(replies: list[Message], ratio: float | None,
                      weighted_by_key: str = "num-examples") -> list[Message]:  # fmt: skip
    """``replies`` with every claimed weight capped at ``ratio`` x the median claim (:func:`cap_weights`).

    Only replies with one MetricRecord whose ``weighted_by_key`` is one finite positive number take part; the
    others pass unchanged (the strategy's own checks deal with them)."""
    from strategies.weights import cap_weights

    usable = []
    for index, reply in enumerate(replies):
        if reply.has_error() or len(reply.content.metric_records) != 1:
            continue
        value = next(iter(reply.content.metric_records.values())).get(weighted_by_key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
            usable.append((index, float(value)))
    if not usable:
        return list(replies)
    capped = cap_weights(np.array([claim for _, claim in usable]), ratio)
    out = list(replies)
    for (index, claim), weight in zip(usable, capped):
        if weight < claim:
            reply = replies[index]
            content = RecordDict(dict(reply.content.items()))
            key, metrics = next(iter(reply.content.metric_records.items()))
            content[key] = MetricRecord({**dict(metrics), weighted_by_key: float(weight)})
            out[index] = make_message(metadata=reply.metadata, content=content)
    return out
