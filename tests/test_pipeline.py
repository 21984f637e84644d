"""Feature pipeline (fit on training rows, JSON round trip) and the leakage guarantees of the protocols."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flows.pipeline import FeaturePipeline, PipelineConfig, feature_statistics, merge_statistics
from flows.pipeline_state import SCHEMA_VERSION, UNKNOWN, PipelineState, PipelineStateError
from flows.protocols import ProtocolConfig, prepare, prepare_split, stratified_split, working_table
from flows.table import LABEL, FlowTable


@pytest.fixture(scope="module")
def sample(unsw_table) -> FlowTable:
    """A seeded 8,000-row sample of the real partition (fast, still realistic)."""
    rng = np.random.default_rng(0)
    return unsw_table.subset(np.sort(rng.choice(len(unsw_table), 8000, replace=False)))


def test_json_round_trip_gives_identical_transform(unsw_table):
    pipeline = FeaturePipeline(PipelineConfig()).fit(unsw_table)
    text = pipeline.state_.to_json()
    restored = PipelineState.from_json(text)
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    a, b = pipeline.transform(unsw_table.frame), restored.transform(unsw_table.frame)
    assert a.dtype == np.float32 and a.shape == (82_332, restored.n_outputs)
    assert np.array_equal(a, b)
    # a mapping of plain lists works too (what a gateway has without pandas)
    records = {c: unsw_table.frame[c].head(50).tolist() for c in restored.input_columns}
    assert np.array_equal(restored.transform(records), a[:50])


def test_json_round_trip_with_feature_selection(sample):
    pipeline = FeaturePipeline(PipelineConfig(select_features=20, rfe_trees=10, rfe_step=4)).fit(sample)
    state = pipeline.state_
    assert len(state.selected) == 20 and set(state.selected) <= set(sample.features)
    restored = PipelineState.from_json(state.to_json())
    assert restored.selected == state.selected
    assert np.array_equal(restored.transform(sample.frame), pipeline.transform(sample.frame))
    assert restored.n_outputs < FeaturePipeline().fit(sample).state_.n_outputs


def test_unknown_category_goes_to_unknown_bucket(sample):
    state = FeaturePipeline().fit(sample).state_
    frame = sample.frame.head(3).copy()
    frame["proto"] = ["tcp", "never-seen", "udp"]
    X = state.transform(frame)
    names = state.output_names
    unknown_col = names.index(f"proto={UNKNOWN}")
    assert X[:, unknown_col].tolist() == [0.0, 1.0, 0.0]
    assert X[0, names.index("proto=tcp")] == 1.0
    assert X[:, [i for i, n in enumerate(names) if n.startswith("proto=")]].sum(axis=1).tolist() == [1, 1, 1]


def test_nonfinite_policies(sample):
    state = FeaturePipeline().fit(sample).state_
    frame = sample.frame.head(2).copy()
    frame.loc[1, "dur"] = np.inf
    with pytest.raises(PipelineStateError, match="non-finite value in column 'dur' at row 1"):
        state.transform(frame)
    state.nonfinite = "impute"
    X = state.transform(frame)
    assert np.isfinite(X).all() and X[1, state.output_names.index("dur")] == 0.0


def test_unknown_schema_version_and_missing_column_are_refused(sample):
    data = FeaturePipeline().fit(sample).state_.to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(PipelineStateError, match="schema version 2 is not supported"):
        PipelineState.from_dict(data)
    state = FeaturePipeline().fit(sample).state_
    with pytest.raises(PipelineStateError, match="lacks column 'sbytes'"):
        state.transform(sample.frame.drop(columns=["sbytes"]))


def test_fitted_on_training_rows_only(sample):
    config = ProtocolConfig(name="paper")
    table, _ = working_table(sample, config)
    train, test = stratified_split(table.frame[LABEL].to_numpy(), 0.2, seed=3)
    *_, state, _ = prepare_split(table, train, test, pipeline_config=PipelineConfig(), use_smote=False, seed=3)
    expected = FeaturePipeline().fit(table.subset(train)).state_
    assert state.mean == expected.mean and state.info["fitted_on_records"] == len(train)
    assert state.mean != FeaturePipeline().fit(table).state_.mean


def test_merged_shard_statistics_equal_the_whole(sample):
    numeric, categorical = sample.numeric_features, sample.categorical_features
    shards = np.array_split(np.arange(len(sample)), 4)
    merged = merge_statistics(feature_statistics(sample.frame.iloc[i], numeric, categorical, True) for i in shards)
    whole = feature_statistics(sample.frame, numeric, categorical, True)
    assert merged["n"] == whole["n"] and merged["categories"] == whole["categories"]
    assert np.allclose(merged["sum"], whole["sum"]) and np.allclose(merged["sumsq"], whole["sumsq"])


def with_sentinel(table: FlowTable, rows: np.ndarray) -> FlowTable:
    """A copy of ``table`` with a numeric feature that is 1e6 on ``rows`` and 0 elsewhere."""
    frame = table.frame.copy()
    sentinel = np.zeros(len(frame))
    sentinel[rows] = 1e6
    frame["sentinel"] = sentinel
    return FlowTable(frame, [*table.numeric_features, "sentinel"], table.categorical_features, table.source,
                     table.path)  # fmt: skip


@pytest.mark.parametrize("protocol", ["paper", "clean"])
def test_no_test_row_or_synthetic_point_from_one_reaches_training(sample, protocol):
    """Mark every test row; no training row, original or SMOTE-made, may carry any of the mark."""
    config = ProtocolConfig(name=protocol, smote=True)
    table, _ = working_table(sample, config)
    train, test = stratified_split(table.frame[LABEL].to_numpy(), config.test_size, seed=0)
    marked = with_sentinel(table, test)
    X_train, y_train, X_test, _, state, n_synthetic = prepare_split(
        marked, train, test, pipeline_config=PipelineConfig(), use_smote=True, seed=0
    )
    column = state.output_names.index("sentinel")
    assert n_synthetic > 0 and len(X_train) == len(train) + n_synthetic
    assert np.all(X_train[:, column] == 0.0)  # nothing of a test row in training
    assert np.all(X_test[:, column] > 0.0)  # the mark is visible where it belongs
    # and the same check does catch a leak: oversampling before the split puts marked points into training
    leaky = with_sentinel(table, test)
    X_all = FeaturePipeline().fit(leaky).transform(leaky.frame)
    from flows.oversampling import smote

    X_res, y_res, _ = smote(X_all, leaky.frame[LABEL].to_numpy(), seed=0)
    res_train, _ = stratified_split(y_res, 0.2, seed=0)
    unmarked = X_all[train, column].min()  # what a row without the mark encodes to
    assert np.any(X_res[res_train, column] > unmarked)


def test_clean_protocol_has_no_duplicate_across_the_split(sample):
    doubled = sample.subset(np.r_[np.arange(len(sample)), np.arange(500)])  # plant 500 exact copies
    config = ProtocolConfig(name="clean")
    table, info = working_table(doubled, config)
    assert info["duplicates_removed"] >= 500
    train, test = stratified_split(table.frame[LABEL].to_numpy(), 0.2, seed=0)
    key = [*table.features, LABEL]
    overlap = pd.merge(table.frame.iloc[train][key], table.frame.iloc[test][key], how="inner", on=key)
    assert len(overlap) == 0
    paper_table, _ = working_table(doubled, ProtocolConfig(name="paper"))
    assert len(paper_table) == len(doubled)


def test_drop_ttl_removes_ttl_features(sample):
    table, info = working_table(sample, ProtocolConfig(name="clean", drop_ttl=True))
    assert not {"sttl", "dttl", "ct_state_ttl"} & set(table.features)
    assert info["dropped_features"] == ["sttl", "dttl", "ct_state_ttl"]


def test_smote_first_is_labelled_leaky(sample):
    data = prepare(sample, ProtocolConfig(name="paper_smote_first", smote=True), seed=0)
    assert data.leaky and data.protocol == "paper_smote_first"
    assert data.info["synthetic_rows_in_test"] > 0 and "<synthetic>" in set(data.test_families)
    clean = prepare(sample, ProtocolConfig(name="clean", smote=True), seed=0)
    assert not clean.leaky and "<synthetic>" not in set(clean.test_families)


def test_protocol_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown protocol 'random'"):
        ProtocolConfig(name="random")
    with pytest.raises(ValueError, match="test_size must be between 0 and 1"):
        ProtocolConfig(test_size=1.5)


def test_duplicate_keys(sample):
    from flows.protocols import remove_duplicates

    twins = sample.subset([0, 0, 1])
    twins.frame.loc[1, "attack_cat"] = "Relabelled"  # same features and label, other family
    assert remove_duplicates(twins)[1] == 1
    assert remove_duplicates(twins, "record")[1] == 0
    with pytest.raises(ValueError, match="duplicate_key must be one of"):
        ProtocolConfig(name="clean", duplicate_key="rows")
