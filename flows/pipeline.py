"""Fitting the feature pipeline on training data (sklearn estimator habits: nothing learned in __init__).

Fitting goes through sufficient statistics (per numeric feature: count, sum, sum of squares after the log
transform; per categorical feature: value counts), so the same code fits centrally and from statistics merged
across federated clients. Optional recursive feature elimination (sklearn RFE with a random forest) picks
``select_features`` of the original features; a selected categorical keeps its whole one-hot block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from flows.pipeline_state import PipelineState, signed_log1p
from flows.table import LABEL, FlowTable

log = logging.getLogger(__name__)


@dataclass
class PipelineSettings:
    """What a pipeline fitted from statistics uses (the federated run's ``pipeline`` section)."""

    log_transform: bool = True  # signed log1p before standardising (heavy-tailed byte/packet counts)
    min_category_count: int = 100  # rarer categories share the <unknown> bucket (smaller input, same signal)
    nonfinite: str = "error"  # error | impute (training mean)


@dataclass
class PipelineConfig(PipelineSettings):
    """How to fit the pipeline on records (centralized runs): the settings plus feature selection."""

    select_features: int | None = None  # RFE with a random forest down to this many original features; None = off
    rfe_sample: int = 20_000  # rows (stratified) the RFE forest sees; RFE refits the forest many times
    rfe_trees: int = 50
    rfe_step: int = 1


def feature_statistics(frame: pd.DataFrame, numeric: list[str], categorical: list[str], log_transform: bool) -> dict:
    """Sufficient statistics of one data shard: what a client may share instead of its records."""
    values = frame[numeric].to_numpy(dtype=np.float64)
    if log_transform:
        values = signed_log1p(values)
    return {
        "n": int(len(frame)),
        "sum": values.sum(axis=0).tolist(),
        "sumsq": (values**2).sum(axis=0).tolist(),
        "categories": {c: {str(k): int(v) for k, v in frame[c].astype(str).value_counts().items()} for c in categorical},
    }


def merge_statistics(shards: Iterable[dict], weights: Sequence[float] | None = None) -> dict:
    """Sum the statistics of several shards (order does not matter up to float rounding).

    With ``weights``, shard i counts as ``weights[i]`` times itself (its count, sums and category counts scaled:
    its mean and variance unchanged, its share of the merge smaller); the screened federated merge
    (``fl_server.statistics``) uses it to bound a client's weight."""
    shards = list(shards)
    if not shards:
        raise ValueError("merge_statistics needs at least one shard")
    if weights is None:
        factors: list[float] | None = None
    else:
        factors = [float(w) for w in weights]
        if len(factors) != len(shards) or not all(np.isfinite(f) and f >= 0 for f in factors):
            raise ValueError(f"merge_statistics: expected {len(shards)} finite weights >= 0, got {weights!r}")

    def scaled(i: int, value):
        return value if factors is None else value * factors[i]

    merged = {
        "n": sum(scaled(i, s["n"]) for i, s in enumerate(shards)),
        "sum": np.sum([np.asarray(scaled(i, np.asarray(s["sum"], dtype=np.float64))) for i, s in enumerate(shards)],
                      axis=0).tolist(),
        "sumsq": np.sum([np.asarray(scaled(i, np.asarray(s["sumsq"], dtype=np.float64)))
                         for i, s in enumerate(shards)], axis=0).tolist(),
        "categories": {},
    }  # fmt: skip
    for i, shard in enumerate(shards):
        for column, counts in shard["categories"].items():
            target = merged["categories"].setdefault(column, {})
            for value, count in counts.items():
                target[value] = target.get(value, 0) + scaled(i, count)
    return merged


def state_from_statistics(
    stats: dict, numeric: list[str], categorical: list[str], config: PipelineConfig, source: str = ""
) -> PipelineState:
    """A pipeline state (no feature selection yet) from merged statistics."""
    n = stats["n"]
    if n < 1:
        raise ValueError("cannot fit the feature pipeline on zero records")
    mean = np.asarray(stats["sum"], dtype=np.float64) / n
    var = np.maximum(np.asarray(stats["sumsq"], dtype=np.float64) / n - mean**2, 0.0)
    std = np.sqrt(var)
    std[std < 1e-12] = 1.0  # a constant feature stays 0 after scaling
    min_count = max(1, int(config.min_category_count))
    vocabularies = {
        c: sorted(v for v, count in stats["categories"].get(c, {}).items() if count >= min_count) for c in categorical
    }
    return PipelineState(
        numeric=list(numeric),
        categorical=list(categorical),
        mean=mean.tolist(),
        std=std.tolist(),
        vocabularies=vocabularies,
        log_transform=config.log_transform,
        nonfinite=config.nonfinite,
        source=source,
        info={"fitted_on_records": int(n)},
    )


class FeaturePipeline:
    """Encoding, scaling and optional RFE, fitted on training rows only."""

    def __init__(self, config: PipelineConfig | None = None, seed: int = 0) -> None:
        self.config = config or PipelineConfig()
        self.seed = seed

    def fit(self, table: FlowTable) -> "FeaturePipeline":
        """Learn vocabularies, scaling statistics and (if configured) the selected features from ``table``."""
        stats = feature_statistics(table.frame, table.numeric_features, table.categorical_features,
                                   self.config.log_transform)  # fmt: skip
        state = state_from_statistics(stats, table.numeric_features, table.categorical_features, self.config,
                                      source=table.source)  # fmt: skip
        if self.config.select_features:
            state.selected = select_features_rfe(state, table, self.config, self.seed)
        self.state_ = state
        return self

    @classmethod
    def from_state(cls, state: PipelineState) -> "FeaturePipeline":
        pipeline = cls(PipelineConfig(log_transform=state.log_transform, nonfinite=state.nonfinite))
        pipeline.state_ = state
        return pipeline

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "state_"):
            raise RuntimeError("FeaturePipeline is not fitted: call fit() first")
        return self.state_.transform(frame)

    def fit_transform(self, table: FlowTable) -> np.ndarray:
        return self.fit(table).transform(table.frame)

    @property
    def output_names(self) -> list[str]:
        return self.state_.output_names


def ordinal_matrix(state: PipelineState, frame: pd.DataFrame) -> np.ndarray:
    """Scaled numeric features and integer category codes: one column per original feature (for RFE)."""
    numeric = state.scale(frame[state.numeric].to_numpy(dtype=np.float64), list(range(len(state.numeric))))
    codes = []
    for column in state.categorical:
        lookup = {v: i for i, v in enumerate(state.vocabularies[column])}
        codes.append(frame[column].astype(str).map(lookup).fillna(len(lookup)).to_numpy(dtype=np.float64))
    return np.column_stack([numeric, *codes]) if codes else numeric


def select_features_rfe(state: PipelineState, table: FlowTable, config: PipelineConfig, seed: int) -> list[str]:
    """Recursive feature elimination with a random forest over the original features (sklearn RFE)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_selection import RFE
    from sklearn.model_selection import train_test_split

    names = [*state.numeric, *state.categorical]
    k = int(config.select_features)
    if not 0 < k <= len(names):
        raise ValueError(f"select_features must be between 1 and {len(names)} features, got {k}")
    frame = table.frame
    labels = frame[LABEL].to_numpy()
    if len(frame) > config.rfe_sample:
        keep, _ = train_test_split(np.arange(len(frame)), train_size=config.rfe_sample, stratify=labels,
                                   random_state=seed)  # fmt: skip
        frame, labels = frame.iloc[np.sort(keep)], labels[np.sort(keep)]
    forest = RandomForestClassifier(n_estimators=config.rfe_trees, random_state=seed, n_jobs=-1)
    selector = RFE(forest, n_features_to_select=k, step=config.rfe_step)
    log.info("RFE: %d -> %d features on %d rows", len(names), k, len(frame))
    selector.fit(ordinal_matrix(state, frame), labels)
    return [name for name, keep in zip(names, selector.support_) if keep]
