"""Fuzz tests (issue 14): the reply checks and the statistics merge answer any input with a verdict or the
project's own error, never another exception. Hypothesis with a fixed seed, derandomised under CI=true, a
bounded number of examples."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import IN_CI
from flwr.app import Array, ArrayRecord, ConfigRecord, Metadata, MetricRecord, RecordDict
from flwr.app.message import make_message
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from fl_server.statistics import StatisticsError, node_rank, screen_statistics
from strategies.reply_checks import check_train_reply, expected_metric_keys
from strategies.updates import collect_updates

pytestmark = pytest.mark.usefixtures("task_identity")
FUZZ = settings(max_examples=150, deadline=None, derandomize=IN_CI, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
REFERENCE = {"a": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}
KEYS = st.sampled_from(["a", "b", "c", "num-examples", "train_loss", "n", "sum", "sumsq", "stats", "features",
                        "category-values", "category-counts", "node", "proto", "partition-id", ""])  # fmt: skip
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 5e-324, 0.0]))
INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
NUMBERS = st.one_of(INTS, FLOATS)
METRIC_VALUES = st.one_of(NUMBERS, st.lists(INTS, max_size=5), st.lists(FLOATS, max_size=5))
CONFIG_VALUES = st.one_of(NUMBERS, st.text(max_size=20), st.booleans(), st.lists(st.text(max_size=10), max_size=5),
                          st.lists(INTS, max_size=5))  # fmt: skip


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    values = draw(st.lists(FLOATS, min_size=1, max_size=4))
    with np.errstate(all="ignore"):
        return np.resize(np.asarray(values, dtype=np.float64), shape).astype(dtype)


@st.composite
def records(draw):
    kind = draw(st.sampled_from(["array", "metric", "config"]))
    keys = draw(st.lists(KEYS, max_size=4, unique=True))
    if kind == "array":
        return ArrayRecord({k: Array(draw(arrays())) for k in keys})
    if kind == "metric":
        return MetricRecord({k: draw(METRIC_VALUES) for k in keys})
    return ConfigRecord({k: draw(CONFIG_VALUES) for k in keys})


def contents() -> st.SearchStrategy[RecordDict]:
    return st.dictionaries(KEYS, records(), max_size=5).map(RecordDict)


def _message(node: int, content: RecordDict):
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="x",
                        group_id="1", created_at=time.time(), ttl=60.0, message_type="train")  # fmt: skip
    return make_message(metadata=metadata, content=content)


def _good(node: int) -> RecordDict:
    return RecordDict({"arrays": ArrayRecord({k: Array(v + node) for k, v in REFERENCE.items()}),
                       "metrics": MetricRecord({"num-examples": 10, "train_loss": 0.1})})  # fmt: skip


@seed(14)
@FUZZ
@given(st.lists(contents(), min_size=1, max_size=4))
def test_reply_checks_answer_any_content_with_a_reason_or_none(fuzzed):
    replies = [_message(i + 1, c) for i, c in enumerate(fuzzed)] + [_message(100 + i, _good(i)) for i in range(2)]
    expected = expected_metric_keys(replies)
    for reply in replies:
        reason = check_train_reply(reply, REFERENCE, expected)
        assert reason is None or isinstance(reason, str)
    batch = collect_updates(replies, REFERENCE, lambda r: int(r.metadata.src_node_id))
    assert len(batch.replies) + len(batch.rejected) == len(replies)
    assert np.all(np.isfinite(batch.deltas))


@st.composite
def statistics_contents(draw) -> RecordDict:
    """Mostly well-formed statistics replies with fuzzed values, and now and then any content at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(contents())
    numeric = draw(st.lists(st.sampled_from(["dur", "sbytes", "dbytes", "rate"]), max_size=3, unique=True))
    categorical = draw(st.lists(st.sampled_from(["proto", "service"]), max_size=2, unique=True))
    n = draw(st.one_of(st.integers(-5, 10**13), FLOATS))
    values = {c: draw(st.lists(st.text(max_size=8), max_size=4)) for c in categorical}
    counts = {c: draw(st.lists(draw(st.sampled_from([st.integers(-3, 10**6), FLOATS])), min_size=len(values[c]),
                                max_size=len(values[c]) + draw(st.integers(0, 1)))) for c in categorical}  # fmt: skip
    size = len(numeric) + draw(st.integers(-1, 1)) if numeric else 0
    return RecordDict({
        "stats": MetricRecord({"n": n, "sum": draw(st.lists(FLOATS, min_size=max(size, 0), max_size=max(size, 0))),
                               "sumsq": draw(st.lists(FLOATS, min_size=len(numeric), max_size=len(numeric)))}),
        "features": ConfigRecord({"numeric": numeric, "categorical": categorical}),
        "category-values": ConfigRecord(values),
        "category-counts": MetricRecord({c: v for c, v in counts.items() if v}),
        "node": ConfigRecord({"partition-id": draw(st.one_of(INTS, st.text(max_size=3)))}),
    })  # fmt: skip


def _honest(rng: np.random.Generator) -> RecordDict:
    n = int(rng.integers(50, 200))
    x = rng.normal(2.0, 1.0, size=(n, 2))
    tcp = int(rng.integers(0, n + 1))
    return RecordDict({
        "stats": MetricRecord({"n": n, "sum": x.sum(0).tolist(), "sumsq": (x**2).sum(0).tolist()}),
        "features": ConfigRecord({"numeric": ["dur", "sbytes"], "categorical": ["proto"]}),
        "category-values": ConfigRecord({"proto": ["tcp", "udp"]}),
        "category-counts": MetricRecord({"proto": [tcp, n - tcp]}),
    })  # fmt: skip


@seed(1414)
@FUZZ
@given(st.lists(statistics_contents(), min_size=1, max_size=4), st.integers(0, 4), st.booleans())
def test_the_statistics_merge_answers_any_reply_with_a_verdict_or_a_statistics_error(fuzzed, n_honest, log):
    rng = np.random.default_rng(len(fuzzed) * 7 + n_honest)
    replies = [_honest(rng) for _ in range(n_honest)] + fuzzed
    for content in replies:
        rank = node_rank(content)
        assert rank is None or (isinstance(rank, int) and rank >= 0)
    try:
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # unhandled: a silent inf/NaN in the scaler
            merged, numeric, _, verdicts = screen_statistics(replies, log_transform=log)
    except StatisticsError:
        return
    assert len(verdicts) == len(replies)
    assert merged["n"] > 0 and np.all(np.isfinite(merged["sum"])) and np.all(np.isfinite(merged["sumsq"]))
    assert len(merged["sum"]) == len(numeric)
