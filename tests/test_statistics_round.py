"""The statistics round (issue 14): no client's counts, sums or category lists are trusted as they are; one client
claiming 1e9 records or absurd sums cannot skew the scaler every other client trains with; the self-reported
partition id ranks nodes only in simulation."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fl_server.statistics import (LOG_BOUND, StatisticsError, StatisticsScreening, fit_pipeline_state, node_rank,
                                  node_ranks, screen_statistics)  # fmt: skip
from flows.pipeline import PipelineSettings, merge_statistics, state_from_statistics

NUMERIC = ["dur", "sbytes", "dbytes"]
CATEGORICAL = ["proto"]


def shard(rng: np.random.Generator, n: int, center: float = 2.0) -> dict:
    values = rng.normal(center, 1.0, size=(n, len(NUMERIC)))
    protos = rng.choice(["tcp", "udp", "icmp"], size=n, p=[0.6, 0.3, 0.1])
    kinds, counts = np.unique(protos, return_counts=True)
    return {"n": n, "sum": values.sum(0).tolist(), "sumsq": (values**2).sum(0).tolist(),
            "categories": {"proto": {str(k): int(c) for k, c in zip(kinds, counts)}}}  # fmt: skip


def records(stats: dict, numeric=NUMERIC, categorical=CATEGORICAL, partition_id: int = -1) -> RecordDict:
    """The wire format of fl_client.statistics.statistics_records."""
    values = {c: sorted(stats["categories"][c]) for c in categorical}
    return RecordDict({
        "stats": MetricRecord({"n": stats["n"], "sum": list(stats["sum"]), "sumsq": list(stats["sumsq"])}),
        "features": ConfigRecord({"numeric": list(numeric), "categorical": list(categorical)}),
        "category-values": ConfigRecord(values),
        "category-counts": MetricRecord({c: [stats["categories"][c][v] for v in values[c]] for c in categorical}),
        "node": ConfigRecord({"partition-id": partition_id}),
    })  # fmt: skip


def honest(n_clients: int = 6, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [shard(rng, int(rng.integers(150, 300))) for _ in range(n_clients)]


def plain_state(shards: list[dict], settings: PipelineSettings):
    return state_from_statistics(merge_statistics(shards), NUMERIC, CATEGORICAL, settings)


SETTINGS = PipelineSettings(log_transform=True, min_category_count=1)


def test_honest_replies_give_exactly_the_plain_merge():
    shards = honest()
    state = fit_pipeline_state([records(s) for s in shards], SETTINGS)
    reference = plain_state(shards, SETTINGS)
    assert state.mean == reference.mean and state.std == reference.std and state.vocabularies == reference.vocabularies
    assert state.info["statistics_screening"] == {"replies": 6, "accepted": 6, "flagged": []}


def test_a_client_claiming_1e9_records_of_its_own_distribution_is_capped_not_obeyed():
    """A consistent shard (its mean 10 standard deviations away) blown up to 1e9 records: unscreened it sets
    the scaler's mean; screened it counts as 6 x the median client and, beyond max_deviation, is left out."""
    shards = honest()
    liar = shard(np.random.default_rng(9), 200, center=12.0)
    huge = {**liar, "n": 10**9, "sum": [x * 5e6 for x in liar["sum"]], "sumsq": [x * 5e6 for x in liar["sumsq"]],
            "categories": {"proto": {v: c * 5_000_000 for v, c in liar["categories"]["proto"].items()}}}  # fmt: skip
    unscreened = plain_state([*shards, huge], SETTINGS)
    assert np.allclose(unscreened.mean, 12.0, atol=0.1)  # the defect: one client moved the scaler
    state = fit_pipeline_state([records(s) for s in [*shards, huge]], SETTINGS)
    np.testing.assert_allclose(state.mean, plain_state(shards, SETTINGS).mean)
    flagged = state.info["statistics_screening"]["flagged"]
    assert [f["reply"] for f in flagged] == [6] and flagged[0]["verdict"] == "reject"
    assert any("capped" in r for r in flagged[0]["reasons"]) and "standard deviations" in flagged[0]["reasons"][0]


def test_a_liar_within_max_deviation_moves_the_mean_by_at_most_its_capped_share_of_its_deviation():
    shards = honest()
    liar = shard(np.random.default_rng(9), 200, center=7.0)  # 5 standard deviations: within max_deviation = 6
    huge = {**liar, "n": 10**9, "sum": [x * 5e6 for x in liar["sum"]], "sumsq": [x * 5e6 for x in liar["sumsq"]],
            "categories": {"proto": {v: c * 5_000_000 for v, c in liar["categories"]["proto"].items()}}}  # fmt: skip
    merged, _, _, verdicts = screen_statistics([records(s) for s in [*shards, huge]], log_transform=True)
    share = verdicts[6].weight * 10**9 / merged["n"]
    honest_mean = np.asarray(plain_state(shards, SETTINGS).mean)
    shift = np.asarray(merged["sum"]) / merged["n"] - honest_mean
    assert verdicts[6].accepted and 0.4 < share < 0.6  # 6 x the median of 7 claims against 6 honest clients
    assert np.all(np.abs(shift) <= share * 5.2)


def test_a_huge_claim_with_an_ordinary_distribution_only_loses_its_weight():
    shards = honest()
    ordinary = shard(np.random.default_rng(10), 200)
    factor = 5_000_000
    huge = {"n": 200 * factor, "sum": [x * factor for x in ordinary["sum"]],
            "sumsq": [x * factor for x in ordinary["sumsq"]],
            "categories": {"proto": {v: c * factor for v, c in ordinary["categories"]["proto"].items()}}}  # fmt: skip
    merged, _, _, verdicts = screen_statistics([records(s) for s in [*shards, huge]], log_transform=True)
    median = float(np.median([s["n"] for s in [*shards, huge]]))
    assert verdicts[6].accepted and verdicts[6].weight == pytest.approx(6 * median / (200 * factor))
    assert merged["n"] == pytest.approx(sum(s["n"] for s in shards) + 6 * median)


@pytest.mark.parametrize("log_transform", [True, False])
def test_absurd_sums_are_left_out(log_transform):
    shards = honest()
    absurd = dict(shards[0])
    absurd["sum"] = [1e12, *shards[0]["sum"][1:]]
    absurd["sumsq"] = [1e24 / shards[0]["n"] * 2, *shards[0]["sumsq"][1:]]
    settings = PipelineSettings(log_transform=log_transform, min_category_count=1)
    state = fit_pipeline_state([records(s) for s in [absurd, *shards[1:]]], settings)
    np.testing.assert_allclose(state.mean, plain_state(shards[1:], settings).mean)
    reason = state.info["statistics_screening"]["flagged"][0]["reasons"][0]
    assert ("no log-transformed float64" in reason) if log_transform else ("standard deviations" in reason)


def test_two_colluders_sending_one_crafted_reply_do_not_vouch_for_each_other():
    shards = honest(8)
    crafted = shard(np.random.default_rng(11), 250, center=40.0)
    state = fit_pipeline_state([records(s) for s in [*shards, crafted, crafted]], SETTINGS)
    np.testing.assert_allclose(state.mean, plain_state(shards, SETTINGS).mean)
    assert [f["reply"] for f in state.info["statistics_screening"]["flagged"]] == [8, 9]


def _with(stats: dict, **changes) -> dict:
    return {**stats, **changes}


@pytest.mark.parametrize("change, reason", [
    (dict(n=-5), "n = -5 records"),
    (dict(n=2.5), "n must be a whole number"),
    (dict(n=10**13), "expected 0..1000000000000"),
    (dict(sum=[float("nan"), 0.0, 0.0]), "sum of 'dur' is not finite"),
    (dict(sumsq=[float("inf"), 1.0, 1.0]), "sumsq of 'dur' is not finite"),
    (dict(sumsq=[-1.0, 1.0, 1.0]), "sumsq of 'dur' is negative"),
    (dict(sumsq=[0.0, 1e9, 1e9]), "sumsq 0 < sum^2/n"),
    (dict(sum=[1.0, 2.0]), "3 numeric features but 2 sums"),
    (dict(categories={"proto": {"tcp": 1, "udp": 2}}), "category counts sum to 3"),
    (dict(categories={"proto": {"tcp": -1, "udp": 500}}), "negative category count"),
    (dict(categories={"proto": {"x" * 300: 200}}), "longer than 256 characters"),
])  # fmt: skip
def test_inconsistent_replies_are_left_out_with_their_reason(change, reason):
    shards = honest()
    bad = _with(shards[0], **change)
    if "categories" not in change:
        bad["categories"] = {"proto": {"tcp": bad["n"]}} if isinstance(bad["n"], int) and bad["n"] >= 0 else \
            shards[0]["categories"]  # fmt: skip
    merged, _, _, verdicts = screen_statistics([records(s) for s in [bad, *shards[1:]]], log_transform=True)
    assert not verdicts[0].accepted and reason in verdicts[0].reasons[0], verdicts[0].reasons
    assert all(v.accepted for v in verdicts[1:])
    assert merged["n"] == sum(s["n"] for s in shards[1:])


def test_a_minority_reporting_other_features_is_left_out_and_no_majority_is_an_error():
    shards = honest()
    other = records(shards[0], numeric=["dur", "sbytes", "spkts"])
    _, numeric, _, verdicts = screen_statistics([other, *(records(s) for s in shards[1:])], log_transform=True)
    assert numeric == NUMERIC and not verdicts[0].accepted and "features differ" in verdicts[0].reasons[0]
    with pytest.raises(StatisticsError, match="no strict majority"):
        screen_statistics([other, records(shards[1])], log_transform=True)


def test_nothing_usable_is_an_error_naming_the_reasons():
    with pytest.raises(StatisticsError, match="no usable statistics reply: statistics reply lacks"):
        fit_pipeline_state([RecordDict({}), RecordDict({"stats": MetricRecord({"n": 1})})], SETTINGS)


def test_the_partition_id_is_trusted_only_in_simulation():
    contents = {101: records(honest(1)[0], partition_id=3), 102: records(honest(1)[0], partition_id=-1)}
    assert node_rank(contents[101]) == 3 and node_rank(contents[101], trust_partition_id=False) is None
    assert node_ranks(contents, simulation=True) == {101: 3}
    assert node_ranks(contents, simulation=False) == {}
    twins = {101: records(honest(1)[0], partition_id=3), 102: records(honest(1)[0], partition_id=3)}
    with pytest.raises(StatisticsError, match="same partition id"):
        node_ranks(twins, simulation=True)
    with pytest.raises(StatisticsError, match="outside 0..2"):
        node_ranks(contents, simulation=True, num_partitions=3)


def test_screening_settings_are_checked():
    for bad in (dict(max_weight_ratio=0.5), dict(max_deviation=0.0), dict(max_spread_ratio=float("nan")),
                dict(min_clients=2)):  # fmt: skip
        with pytest.raises(ValueError):
            StatisticsScreening(**bad)
    assert LOG_BOUND == pytest.approx(709.78, abs=0.01)


def _plain_merge(replies, numeric, categorical, settings):
    return state_from_statistics(merge_statistics(
        [{"n": int(r["stats"]["n"]), "sum": list(r["stats"]["sum"]), "sumsq": list(r["stats"]["sumsq"]),
          "categories": {c: dict(zip(r["category-values"][c], r["category-counts"][c])) for c in categorical}}
         for r in replies]), numeric, categorical, settings)  # fmt: skip


@pytest.mark.parametrize("alpha, n_clients, log_transform", [(0.1, 10, True), (0.1, 10, False), (0.5, 10, True),
                                                             (0.5, 20, False)])  # fmt: skip
def test_honest_clients_of_real_partitions_are_never_flagged(unsw_table, alpha, n_clients, log_transform):
    """Dirichlet partitions of UNSW-NB15: every honest client passes, so the scaler equals the plain merge."""
    from fl_client.statistics import statistics_records
    from flows.partitioning import partition

    parts = partition(unsw_table, "dirichlet", n_clients, seed=1, alpha=alpha)
    replies = [statistics_records(unsw_table.subset(p), log_transform=log_transform) for p in parts]
    settings = PipelineSettings(log_transform=log_transform)
    state = fit_pipeline_state(replies, settings)
    assert state.info["statistics_screening"]["flagged"] == []
    plain = _plain_merge(replies, state.numeric, state.categorical, settings)
    assert state.mean == plain.mean and state.std == plain.std and state.vocabularies == plain.vocabularies


def test_very_skewed_honest_partitions_lose_weight_to_the_cap_but_no_client(unsw_table):
    """Dirichlet 0.1 over 20 clients: the largest client holds 22 x the median's records; the cap trims the
    clients beyond 6 x the median and leaves every client in."""
    from fl_client.statistics import statistics_records
    from flows.partitioning import partition

    parts = partition(unsw_table, "dirichlet", 20, seed=1, alpha=0.1)
    replies = [statistics_records(unsw_table.subset(p), log_transform=True) for p in parts]
    _, _, _, verdicts = screen_statistics(replies, log_transform=True)
    sizes = np.array([len(p) for p in parts])
    assert all(v.accepted for v in verdicts)
    assert [v.index for v in verdicts if v.weight < 1] == list(np.flatnonzero(sizes > 6 * np.median(sizes)))


class QueryGrid:
    """The statistics query's side of a Grid: node -> its reply content, an Error, or None (no reply)."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers

    def send_and_receive(self, messages, timeout):
        from flwr.app import Message

        for message in messages:
            answer = self.answers[message.metadata.dst_node_id]
            if answer is not None:
                yield Message(answer, reply_to=message)


def test_a_node_answering_the_statistics_query_with_an_error_is_left_out_not_fatal(task_identity):
    """One failing node (its data unreadable) used to end the whole run before any training."""
    from flwr.app import Error

    from fl_server.nodes import query_pipeline_state

    shards = honest(4)
    answers = {11: records(shards[0], partition_id=0), 12: records(shards[1], partition_id=1),
               13: Error(code=0, reason="FlowDataError: /data/part3.csv: empty file"), 14: None}  # fmt: skip
    state, ranks = query_pipeline_state(QueryGrid(answers), [11, 12, 13, 14], SETTINGS, timeout=5, min_replies=2)
    reference = plain_state(shards[:2], SETTINGS)
    assert state.mean == reference.mean and state.std == reference.std
    assert ranks == {11: 0, 12: 1}
    failed = state.info["statistics_query"]["failed"]
    assert len(failed) == 2 and "node 13: FlowDataError" in failed[0] and "node 14: no reply" in failed[1]
    with pytest.raises(RuntimeError, match="2 usable replies from 4 nodes, fewer than the 3 needed; node 13"):
        query_pipeline_state(QueryGrid(answers), [11, 12, 13, 14], SETTINGS, timeout=5, min_replies=3)
