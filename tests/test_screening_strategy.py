"""The screening wrapper over Flower strategies (issue 4, point 1): malformed replies are rejected with the
right reason and never stop the server; an all-rejected round keeps the previous model; sign-flipped updates
are kept out of the aggregate."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import FakeGrid
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Metadata, MetricRecord, RecordDict
from flwr.app.message import make_message

from strategies.registry import build_strategy
from strategies.screening_strategy import ScreeningStrategy

SHAPES = {"a": (20, 10), "b": (10,)}


pytestmark = pytest.mark.usefixtures("task_identity")


def _metadata(node: int) -> Metadata:
    return Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="x",
                    group_id="1", created_at=time.time(), ttl=60.0, message_type="train")  # fmt: skip


def reply(node: int, arrays: dict, metrics: dict | None = None, content: RecordDict | None = None):
    if content is None:
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                              "metrics": MetricRecord(metrics or {"num-examples": 100, "train_loss": 0.5})})  # fmt: skip
    return make_message(metadata=_metadata(node), content=content)


def setup(n: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    nodes = [1000 + i for i in range(n)]
    inner = build_strategy("fedavg", {}, n_nodes=n, node_ranks={node: i for i, node in enumerate(nodes)})
    strategy = ScreeningStrategy(inner)
    glob = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in glob.items()}), ConfigRecord(), FakeGrid(nodes))
    direction = {k: rng.normal(size=s).astype(np.float32) * 0.1 for k, s in SHAPES.items()}
    benign = [{k: glob[k] + direction[k] * rng.uniform(0.8, 1.2) + 0.01 * rng.normal(size=s).astype(np.float32)
               for k, s in SHAPES.items()} for _ in range(n)]  # fmt: skip
    return strategy, nodes, glob, direction, benign


def test_sign_flipped_updates_are_kept_out_and_the_decisions_recorded():
    strategy, nodes, glob, direction, benign = setup()
    updates = list(benign)
    for i in (7, 8, 9):
        updates[i] = {k: glob[k] - 5 * (benign[i][k] - glob[k]) for k in SHAPES}
    arrays, _ = strategy.aggregate_train(1, [reply(n, u) for n, u in zip(nodes, updates)])
    step = arrays["a"].numpy() - glob["a"]
    cos = float(np.sum(step * direction["a"]) / np.linalg.norm(step) / np.linalg.norm(direction["a"]))
    assert cos > 0.95
    verdicts = {d["client"]: d["verdict"] for d in strategy.decisions[1]}
    assert [c for c, v in verdicts.items() if v == "reject"] == [7, 8, 9]
    assert len(strategy.client_train[1]) == 10  # every reply's metrics are kept, rejected ones too

    plain = build_strategy("fedavg", {}, n_nodes=10)
    plain.configure_train(1, ArrayRecord({k: Array(v) for k, v in glob.items()}), ConfigRecord(), FakeGrid(nodes))
    plain_arrays, _ = plain.aggregate_train(1, [reply(n, u) for n, u in zip(nodes, updates)])
    plain_step = plain_arrays["a"].numpy() - glob["a"]
    assert float(np.sum(plain_step * direction["a"])) < 0  # FedAvg is dragged backwards


def _malformed(glob, node):
    bad_shape = {**glob, "a": np.zeros((3, 3), np.float32)}
    bad_dtype = {**glob, "b": glob["b"].astype(np.float64)}
    with_nan = {**glob, "b": np.full(10, np.nan, np.float32)}
    missing = {"a": glob["a"]}
    extra = {**glob, "c": np.zeros(2, np.float32)}
    return [
        (reply(node, bad_shape), "has shape (3, 3), expected (20, 10)"),
        (reply(node, bad_dtype), "has dtype float64, expected float32"),
        (reply(node, with_nan), "holds NaN or inf"),
        (reply(node, missing), "missing arrays: b"),
        (reply(node, extra), "unexpected arrays: c"),
        (reply(node, glob, {"num-examples": 0, "train_loss": 0.5}), "num-examples must be one positive number"),
        (reply(node, glob, {"train_loss": 0.5, "other": 1.0}), "metrics lack 'num-examples'"),
        (reply(node, glob, {"num-examples": 100, "something": 0.5}), "inconsistent metrics"),
        (reply(node, glob, {"num-examples": 100, "train_loss": float("inf")}), "metric 'train_loss' is not finite"),
        (reply(node, glob, content=RecordDict({"metrics": MetricRecord({"num-examples": 1, "train_loss": 0.1})})),
         "expected one ArrayRecord, got 0"),
        (make_message(metadata=_metadata(node), error=Error(code=1, reason="client crashed")), "error reply: client crashed"),
    ]  # fmt: skip


def test_malformed_replies_are_rejected_with_the_right_reason():
    strategy, nodes, glob, _, benign = setup()
    for bad, reason in _malformed(glob, nodes[0]):
        replies = [bad] + [reply(n, u) for n, u in zip(nodes[1:], benign[1:])]
        arrays, _ = strategy.aggregate_train(1, replies)
        assert arrays is not None
        decision = next(d for d in strategy.decisions[1] if d["client"] == 0)
        assert decision["verdict"] == "reject" and reason in decision["reasons"][0], (reason, decision)
        others = [d for d in strategy.decisions[1] if d["client"] != 0]
        assert all(d["verdict"] == "accept" for d in others), [(d["client"], d["reasons"], d["scores"]) for d in others if d["verdict"] != "accept"]


def test_an_all_rejected_round_keeps_the_previous_model():
    strategy, nodes, glob, _, _ = setup()
    nan = {**glob, "a": np.full(SHAPES["a"], np.nan, np.float32)}
    arrays, metrics = strategy.aggregate_train(1, [reply(n, nan) for n in nodes])
    assert arrays is None and metrics is None  # Flower's loop keeps the previous global arrays on None
    assert all(d["verdict"] == "reject" for d in strategy.decisions[1])


def test_update_vectors_are_saved_for_offline_replay_when_asked(tmp_path):
    strategy, nodes, glob, _, benign = setup()
    strategy.updates_dir = tmp_path / "updates"
    updates = list(benign)
    updates[9] = {k: glob[k] - 5 * (benign[9][k] - glob[k]) for k in SHAPES}
    strategy.aggregate_train(1, [reply(n, u) for n, u in zip(nodes, updates)])
    with np.load(tmp_path / "updates" / "round_001.npz") as saved:
        assert list(saved["clients"]) == list(range(10))
        assert saved["deltas"].shape == (10, 20 * 10 + 10)
        np.testing.assert_allclose(saved["deltas"][9][:200], (updates[9]["a"] - glob["a"]).ravel(), rtol=1e-5)
        assert not saved["accepted"][9] and saved["accepted"][:9].all()
