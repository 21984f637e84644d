"""Decode clients' feature-statistics replies (format: ``fl_client.statistics``) and fit the pipeline state."""

from __future__ import annotations

from typing import Iterable

from flwr.app import RecordDict

from flows.pipeline import PipelineConfig, merge_statistics, state_from_statistics
from flows.pipeline_state import PipelineState


class StatisticsError(ValueError):
    """A statistics reply that is malformed or disagrees with the others about the features."""


def statistics_from_records(content: RecordDict) -> tuple[dict, list[str], list[str]]:
    """(statistics dict as :func:`flows.pipeline.feature_statistics` returns it, numeric, categorical)."""
    try:
        stats, features = content["stats"], content["features"]
        values, counts = content["category-values"], content["category-counts"]
        numeric, categorical = [str(c) for c in features["numeric"]], [str(c) for c in features["categorical"]]
        categories = {}
        for column in categorical:
            if len(values[column]) != len(counts[column]):
                raise StatisticsError(f"column {column!r}: {len(values[column])} values but "
                                      f"{len(counts[column])} counts")  # fmt: skip
            categories[column] = {str(v): int(c) for v, c in zip(values[column], counts[column])}
        result = {"n": int(stats["n"]), "sum": [float(x) for x in stats["sum"]],
                  "sumsq": [float(x) for x in stats["sumsq"]], "categories": categories}  # fmt: skip
    except KeyError as exc:
        raise StatisticsError(f"statistics reply lacks {exc}") from exc
    if len(result["sum"]) != len(numeric) or len(result["sumsq"]) != len(numeric):
        raise StatisticsError(f"statistics reply: {len(numeric)} numeric features but {len(result['sum'])} sums")
    return result, numeric, categorical


def node_rank(content: RecordDict) -> int | None:
    """The partition id a simulated client reports in its query reply (``"node"`` record); None on a gateway."""
    if "node" not in content:
        return None
    value = int(content["node"].get("partition-id", -1))
    return value if value >= 0 else None


def fit_pipeline_state(replies: Iterable[RecordDict], config: PipelineConfig, source: str = "") -> PipelineState:
    """Merge the clients' statistics and fit the pipeline state; all clients must report the same features."""
    shards, features = [], None
    for content in replies:
        stats, numeric, categorical = statistics_from_records(content)
        if features is None:
            features = (numeric, categorical)
        elif (numeric, categorical) != features:
            raise StatisticsError(f"clients disagree about the features: {features} vs {(numeric, categorical)}")
        shards.append(stats)
    if features is None:
        raise StatisticsError("no statistics replies to merge")
    return state_from_statistics(merge_statistics(shards), features[0], features[1], config, source=source)
