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


def _takeover_round(config_params: dict):
    """10 honest clients of 100 examples; client 9's update is honest-looking plus a small foreign component,
    and it claims 1e9 examples."""
    rng = np.random.default_rng(3)
    nodes = [1000 + i for i in range(10)]
    strategy = build_strategy("screening", config_params, n_nodes=10,
                              node_ranks={node: i for i, node in enumerate(nodes)})  # fmt: skip
    glob = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in glob.items()}), ConfigRecord(), FakeGrid(nodes))
    direction = {k: rng.normal(size=s).astype(np.float32) * 0.1 for k, s in SHAPES.items()}
    foreign = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    foreign["b"][0] = 0.05  # a component no honest client moves
    updates = [{k: glob[k] + direction[k] * rng.uniform(0.8, 1.2) + 0.01 * rng.normal(size=s).astype(np.float32)
                for k, s in SHAPES.items()} for _ in range(10)]  # fmt: skip
    for k in SHAPES:
        updates[9][k] = updates[9][k] + foreign[k]
    replies = [reply(n, u, {"num-examples": 10**9 if i == 9 else 100, "train_loss": 0.5})
               for i, (n, u) in enumerate(zip(nodes, updates))]  # fmt: skip
    arrays, _ = strategy.aggregate_train(1, replies)
    step = arrays["b"].numpy()[0] - glob["b"][0]
    honest = np.mean([u["b"][0] - glob["b"][0] for u in updates[:9]])
    share = (step - honest) / (updates[9]["b"][0] - glob["b"][0] - honest)  # the liar's weight in the aggregate
    return strategy, share


def test_without_a_cap_a_client_claiming_1e9_examples_takes_over_the_aggregate():
    strategy, share = _takeover_round({"max_weight_ratio": None})
    assert next(d for d in strategy.decisions[1] if d["client"] == 9)["verdict"] == "accept"
    assert share > 0.99


def test_the_weight_cap_bounds_a_liars_share_of_the_aggregate():
    strategy, share = _takeover_round({})
    liar = next(d for d in strategy.decisions[1] if d["client"] == 9)
    assert liar["verdict"] == "accept" and liar["scores"]["weight_claimed"] == 1e9
    assert liar["scores"]["weight"] == 600.0 and "num-examples 1e+09 capped at 600" in liar["reasons"]
    assert share == pytest.approx(600 / (600 + 900), abs=0.02)  # 6 x the median claim of 100 against 9 x 100
    assert all(d["scores"]["weight"] == 100.0 for d in strategy.decisions[1] if d["client"] != 9)


def test_a_capped_weight_keeps_the_global_models_dtype():
    """A capped weight (a numpy float) must not promote the float32 aggregate to float64: the next round's
    broadcast would be float64 and the reply checks would reject every client's float32 reply."""
    strategy2, nodes, glob, _, benign = setup()
    replies = [reply(n, u, {"num-examples": 10**6 if i == 0 else 100, "train_loss": 0.5})
               for i, (n, u) in enumerate(zip(nodes, benign))]  # fmt: skip
    arrays, _ = strategy2.aggregate_train(1, replies)
    assert "capped" in " ".join(next(d for d in strategy2.decisions[1] if d["client"] == 0)["reasons"])
    assert {name: str(a.numpy().dtype) for name, a in arrays.items()} == {k: "float32" for k in SHAPES}


INNER = ["fedavg", "fedprox", "fedavgm", "fedadam", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan",
         "flame", "centered_clipping"]


@pytest.mark.parametrize("inner", INNER)
def test_every_inner_strategy_sees_the_capped_weights(inner):
    strategy, nodes, glob, _, benign = setup()
    strategy = build_strategy("screening", {"inner": inner}, n_nodes=10,
                              node_ranks={node: i for i, node in enumerate(nodes)})  # fmt: skip
    strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in glob.items()}), ConfigRecord(), FakeGrid(nodes))
    seen = []
    original = strategy.inner.aggregate_train

    def spy(server_round, replies):
        replies = list(replies)
        seen.extend(float(r.content["metrics"]["num-examples"]) for r in replies)
        return original(server_round, replies)

    strategy.inner.aggregate_train = spy
    claims = [50, 80, 100, 100, 120, 150, 90, 110, 100, 10**9]
    replies = [reply(n, u, {"num-examples": c, "train_loss": 0.5}) for n, u, c in zip(nodes, benign, claims)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None and len(seen) == 10
    assert max(seen) == 600.0 and sorted(seen)[:-1] == sorted(float(c) for c in claims[:-1])
    assert strategy.inner.client_train[1][9]["num-examples"] == 10**9  # the report keeps what the client claimed


def test_max_weight_ratio_is_checked():
    from strategies.registry import StrategyConfigError

    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(StrategyConfigError, match="max_weight_ratio"):
            build_strategy("screening", {"max_weight_ratio": bad}, n_nodes=10)


def test_a_round_where_every_client_sends_the_same_update_is_aggregated():
    strategy, nodes, glob, _, benign = setup()
    arrays, _ = strategy.aggregate_train(1, [reply(n, benign[0]) for n in nodes])
    assert arrays is not None  # not skipped as ten near-copies
    np.testing.assert_allclose(arrays["a"].numpy(), benign[0]["a"], rtol=1e-5, atol=1e-6)
    assert all(d["verdict"] == "accept" for d in strategy.decisions[1])


def test_evaluation_averages_use_the_capped_weights_too():
    strategy, nodes, _, _, _ = setup()
    claims = [100] * 9 + [10**9]
    accuracy = [0.9] * 9 + [0.0]  # the liar reports a useless model to drag the federated accuracy down
    replies = [reply(n, {}, content=RecordDict({"metrics": MetricRecord({"num-examples": c, "eval_accuracy": a})}))
               for n, c, a in zip(nodes, claims, accuracy)]  # fmt: skip
    metrics = strategy.aggregate_evaluate(1, replies)
    assert metrics["eval_accuracy"] == pytest.approx(0.9 * 900 / 1500)  # 6 x the median 100 for the liar
    assert strategy.inner.client_evaluate[1][9]["num-examples"] == 10**9  # the report keeps the claim
