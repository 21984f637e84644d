"""Evaluation protocols: how a flow table becomes train/test matrices.

* ``paper``: stratified random 80/20 split, pipeline fitted on the training rows, SMOTE (optional) on the
  training rows only.
* ``clean``: exact duplicates (same features and label) removed *before* the split, so no test row has a copy
  in training; TTL-derived features (sttl, dttl, ct_state_ttl) optionally dropped. Otherwise as ``paper``.
* ``paper_smote_first``: the seed paper's order, kept only to measure the inflation: pipeline fitted and SMOTE
  applied to all rows, then the split, so the test set holds synthetic points derived from training rows and
  vice versa. Everything it produces is marked ``leaky``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split

from flows.oversampling import smote
from flows.pipeline import FeaturePipeline, PipelineConfig
from flows.pipeline_state import PipelineState
from flows.table import ATTACK_CAT, LABEL, FlowTable

log = logging.getLogger(__name__)

PROTOCOLS = ("paper", "clean", "paper_smote_first")
TTL_FEATURES = ["sttl", "dttl", "ct_state_ttl"]
DUPLICATE_KEYS = ("features_and_label", "record")


@dataclass
class ProtocolConfig:
    """Mirrors the Hydra group ``protocol``."""

    name: str = "paper"
    test_size: float = 0.2
    drop_ttl: bool = False
    smote: bool = False
    duplicate_key: str = "features_and_label"  # or "record": features, label and attack_cat all equal

    def __post_init__(self) -> None:
        if self.duplicate_key not in DUPLICATE_KEYS:
            raise ValueError(f"protocol.duplicate_key must be one of {DUPLICATE_KEYS}, got {self.duplicate_key!r}")
        if self.name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.name!r}: expected one of {', '.join(PROTOCOLS)}")
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"protocol.test_size must be between 0 and 1, got {self.test_size}")

    @property
    def leaky(self) -> bool:
        return self.name == "paper_smote_first"


@dataclass
class PreparedData:
    """Train/test matrices of one protocol run, with the fitted pipeline and provenance counts."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    pipeline: PipelineState
    protocol: str
    leaky: bool
    test_families: np.ndarray
    info: dict = field(default_factory=dict)


def remove_duplicates(table: FlowTable, key: str = "features_and_label") -> tuple[FlowTable, int]:
    """Drop exact duplicates, keeping the first occurrence.

    ``features_and_label`` (default) treats rows with equal features and label as copies even when their
    attack_cat differs: for a binary detector they are the same example. ``record`` also compares attack_cat.
    """
    columns = [*table.features, LABEL] + ([ATTACK_CAT] if key == "record" else [])
    duplicated = table.frame.duplicated(subset=columns).to_numpy()
    return table.subset(np.flatnonzero(~duplicated)), int(duplicated.sum())


def stratified_split(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of row positions into (train, test), both sorted."""
    train, test = train_test_split(np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def stratified_subsample(table: FlowTable, n_records: int, seed: int) -> FlowTable:
    """A seeded sample of ``n_records`` rows with the label shares of ``table`` (for quick runs and tests)."""
    if n_records >= len(table):
        return table
    if n_records < 10:
        raise ValueError(f"subsample must be at least 10 records, got {n_records}")
    keep, _ = train_test_split(np.arange(len(table)), train_size=n_records, stratify=table.frame[LABEL],
                               random_state=seed)  # fmt: skip
    return table.subset(np.sort(keep))


def working_table(table: FlowTable, config: ProtocolConfig) -> tuple[FlowTable, dict]:
    """The table a protocol splits: duplicates removed for ``clean``, TTL features dropped if asked."""
    info: dict = {"records_in": len(table)}
    if config.name == "clean":
        table, removed = remove_duplicates(table, config.duplicate_key)
        info["duplicates_removed"] = removed
    if config.drop_ttl:
        table = table.drop_features(TTL_FEATURES)
        info["dropped_features"] = list(TTL_FEATURES)
    return table, info


def prepare_split(
    table: FlowTable,
    train_index: np.ndarray,
    test_index: np.ndarray,
    *,
    pipeline_config: PipelineConfig,
    use_smote: bool,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, PipelineState, int]:
    """Fit the pipeline on the training rows, transform both sides, oversample the training side only."""
    if np.intersect1d(train_index, test_index).size:
        raise ValueError("train and test rows overlap")
    train, test = table.subset(train_index), table.subset(test_index)
    pipeline = FeaturePipeline(pipeline_config, seed=seed).fit(train)
    X_train, X_test = pipeline.transform(train.frame), pipeline.transform(test.frame)
    y_train = train.frame[LABEL].to_numpy(dtype=np.int64)
    y_test = test.frame[LABEL].to_numpy(dtype=np.int64)
    n_synthetic = 0
    if use_smote:
        X_train, y_train, n_synthetic = smote(X_train, y_train, seed)
    return X_train, y_train, X_test, y_test, pipeline.state_, n_synthetic


def prepare(
    table: FlowTable, config: ProtocolConfig, pipeline_config: PipelineConfig | None = None, seed: int = 0
) -> PreparedData:
    """Run protocol ``config`` on ``table``: the matrices a centralized model trains and is tested on."""
    pipeline_config = pipeline_config or PipelineConfig()
    table, info = working_table(table, config)
    labels = table.frame[LABEL].to_numpy()
    if config.leaky:
        return _prepare_smote_first(table, config, pipeline_config, seed, info)
    train_index, test_index = stratified_split(labels, config.test_size, seed)
    X_train, y_train, X_test, y_test, state, n_synthetic = prepare_split(
        table, train_index, test_index, pipeline_config=pipeline_config, use_smote=config.smote, seed=seed
    )
    info.update(train_records=len(train_index), test_records=len(test_index), synthetic_train_rows=n_synthetic,
                features_out=state.n_outputs)  # fmt: skip
    families = table.frame[ATTACK_CAT].to_numpy()[test_index]
    return PreparedData(X_train, y_train, X_test, y_test, state, config.name, False, families, info)


def _prepare_smote_first(
    table: FlowTable, config: ProtocolConfig, pipeline_config: PipelineConfig, seed: int, info: dict
) -> PreparedData:
    """LEAKY on purpose: the seed paper's oversample-then-split order."""
    log.warning("protocol paper_smote_first is LEAKY: SMOTE runs before the split (only to measure inflation)")
    pipeline = FeaturePipeline(pipeline_config, seed=seed).fit(table)
    X_all = pipeline.transform(table.frame)
    y_all = table.frame[LABEL].to_numpy(dtype=np.int64)
    X_res, y_res, n_synthetic = smote(X_all, y_all, seed)
    families = np.concatenate([table.frame[ATTACK_CAT].to_numpy(), np.full(n_synthetic, "<synthetic>", object)])
    train_index, test_index = stratified_split(y_res, config.test_size, seed)
    synthetic_in_test = int((test_index >= len(X_all)).sum())
    info.update(train_records=len(train_index), test_records=len(test_index), synthetic_rows=n_synthetic,
                synthetic_rows_in_test=synthetic_in_test, features_out=pipeline.state_.n_outputs,
                leaky="SMOTE and pipeline fitted before the split")  # fmt: skip
    return PreparedData(X_res[train_index], y_res[train_index], X_res[test_index], y_res[test_index],
                        pipeline.state_, config.name, True, families[test_index], info)  # fmt: skip
