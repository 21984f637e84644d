"""Strategy registry and the deterministic wrapper (issue 3, points 3 and 7): seeded sampling over partition
ids, aggregation independent of reply order, clear errors for strategies that cannot run."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from conftest import FakeGrid
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message import make_message

from strategies.registry import ALL_NAMES, StrategyConfigError, build_strategy, check_strategy


pytestmark = pytest.mark.usefixtures("task_identity")


def _arrays(weights: np.ndarray) -> ArrayRecord:
    return ArrayRecord({"w": Array(weights)})


def _node_ids(n: int, seed: int) -> list[int]:
    return random.Random(seed).sample(range(1, 1 << 60), n)


def _sampled_partitions(seed: int, id_seed: int, n: int = 20, fraction: float = 0.3, rounds: int = 3):
    node_ids = _node_ids(n, id_seed)
    ranks = {node: i for i, node in enumerate(node_ids)}
    strategy = build_strategy("fedavg", {}, n_nodes=n, fraction_train=fraction, seed=seed, node_ranks=ranks)
    grid = FakeGrid(list(reversed(node_ids)) if id_seed % 2 else node_ids)
    arrays = _arrays(np.zeros(3, dtype=np.float32))
    return [sorted(ranks[m.metadata.dst_node_id] for m in strategy.configure_train(r, arrays, ConfigRecord(), grid))
            for r in range(1, rounds + 1)]  # fmt: skip


def test_sampling_depends_on_the_seed_only():
    """Same seed: the same partitions are sampled every round, whatever the node ids and their listing order."""
    first = _sampled_partitions(seed=5, id_seed=1)
    assert first == _sampled_partitions(seed=5, id_seed=2)
    assert all(len(s) == 6 for s in first)
    assert len({tuple(s) for s in first}) > 1  # rounds differ from each other
    assert first != _sampled_partitions(seed=6, id_seed=1)


def test_sampling_leaves_the_global_random_state_alone():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    _sampled_partitions(seed=0, id_seed=0)
    assert random.random() == expected


def _reply(node_id: int, weights: np.ndarray, n: int) -> Message:
    metadata = Metadata(run_id=1, message_id=f"m{node_id}", src_node_id=node_id, dst_node_id=0,
                        reply_to_message_id="x", group_id="1", created_at=time.time(), ttl=60.0,
                        message_type="train")  # fmt: skip
    content = RecordDict({"arrays": _arrays(weights),
                          "metrics": MetricRecord({"num-examples": n, "train_loss": 0.1})})  # fmt: skip
    return make_message(metadata=metadata, content=content)


@pytest.mark.parametrize("name, params", [("fedavg", {}), ("fedmedian", {}), ("fedtrimmedavg", {"beta": 0.2}),
                                          ("krum", {"num_malicious_nodes": 1}),
                                          ("multikrum", {"num_malicious_nodes": 1, "num_nodes_to_select": 3}),
                                          ("bulyan", {"num_malicious_nodes": 1})])  # fmt: skip
def test_aggregation_is_bitwise_independent_of_reply_order(name, params):
    rng = np.random.default_rng(0)
    n = 8
    node_ids = _node_ids(n, 0)
    ranks = {node: i for i, node in enumerate(node_ids)}
    weights = [rng.normal(size=1000).astype(np.float32) * 1e3 for _ in range(n)]
    sizes = [int(s) for s in rng.integers(10, 5000, size=n)]
    results = []
    for order_seed in range(4):
        order = random.Random(order_seed).sample(range(n), n)
        strategy = build_strategy(name, params, n_nodes=n, node_ranks=ranks)
        replies = [_reply(node_ids[i], weights[i].copy(), sizes[i]) for i in order]
        arrays, _ = strategy.aggregate_train(1, replies)
        results.append(arrays["w"].numpy())
        assert [row["rank"] for row in strategy.client_train[1]] == list(range(n))
    for other in results[1:]:
        assert np.array_equal(results[0], other), name


def test_every_configured_strategy_builds_and_aggregates():
    from hydra import compose, initialize_config_dir

    from simulation.config import CONF_DIR
    from simulation.config import specs

    names = sorted(p.stem for p in __import__("pathlib").Path(CONF_DIR, "strategy").glob("*.yaml"))
    assert set(names) == set(ALL_NAMES)
    n = 10
    node_ids = _node_ids(n, 1)
    rng = np.random.default_rng(1)
    for name in names:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("federated", overrides=[f"strategy={name}"])
        assert cfg.strategy.name == name
        strategy = build_strategy(name, dict(specs(cfg)[0].strategy.params), n_nodes=n,
                                  node_ranks={node: i for i, node in enumerate(node_ids)},
                                  server_update_fn=lambda g, n: {k: v + 0.01 for k, v in g.items()})  # fmt: skip
        sent = strategy.configure_train(1, _arrays(np.zeros(50, np.float32)), ConfigRecord(), FakeGrid(node_ids))
        assert len(list(sent)) == n
        replies = [_reply(node, rng.normal(size=50).astype(np.float32), 100) for node in node_ids]
        arrays, metrics = strategy.aggregate_train(1, replies)
        assert arrays is not None and np.isfinite(arrays["w"].numpy()).all(), name


@pytest.mark.parametrize("name, params, n, message", [
    ("nonsense", {}, 10, "unknown strategy 'nonsense'"),
    ("fedavg", {"proximal_mu": 0.1}, 10, "unknown parameter(s) proximal_mu"),
    ("bulyan", {"num_malicious_nodes": 2}, 10, "4f+3 = 11"),
    ("krum", {"num_malicious_nodes": 4}, 10, "2f+3 = 11"),
    ("fedtrimmedavg", {"beta": 0.5}, 10, "beta must be in [0, 0.5)"),
])  # fmt: skip
def test_strategies_that_cannot_run_are_refused_with_a_reason(name, params, n, message):
    with pytest.raises(StrategyConfigError) as err:
        check_strategy(name, params, n, 1.0, 1.0)
    assert message in str(err.value)


def test_fedprox_sends_mu_and_the_client_term_pulls_towards_the_global_model():
    """FedProx's proximal term: with a large mu the local model stays closer to the broadcast weights."""
    import torch

    from models.registry import get_family

    family = get_family("cnn_lstm")
    strategy = build_strategy("fedprox", {"proximal_mu": 0.5}, n_nodes=2)
    grid = FakeGrid([11, 22])
    messages = list(strategy.configure_train(1, _arrays(np.zeros(1, np.float32)), ConfigRecord(), grid))
    assert all(m.content["config"]["proximal-mu"] == 0.5 for m in messages)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 12)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    drift = {}
    for mu in (0.0, 5.0):
        torch.manual_seed(0)
        model = family.build(12, {})
        start = [p.detach().clone() for p in model.parameters()]
        family.train_local(model, X, y, epochs=3, batch_size=32, lr=0.01, seed=0, proximal_mu=mu)
        drift[mu] = float(sum(((p.detach() - s) ** 2).sum() for p, s in zip(model.parameters(), start)))
    assert drift[5.0] < 0.5 * drift[0.0], drift


def test_screening_params_are_checked_like_any_strategy():
    check_strategy("screening", {"inner": "fedmedian", "z_threshold": 2.5}, 10, 1.0, 1.0)
    for params, message in [({"inner": "nonsense"}, "unknown strategy 'nonsense'"),
                            ({"inner": "bulyan", "inner_params": {"num_malicious_nodes": 3}}, "4f+3"),
                            ({"zz": 1}, "accepted: inner, inner_params"),
                            ({"min_votes": 7}, "min_votes must be in 1..5")]:  # fmt: skip
        with pytest.raises(StrategyConfigError) as err:
            check_strategy("screening", params, 10, 1.0, 1.0)
        assert message in str(err.value)
    strategy = build_strategy("screening", {"inner": "fedtrimmedavg", "inner_params": {"beta": 0.1}}, n_nodes=10)
    assert type(strategy.inner).__name__ == "DeterministicFedTrimmedAvg" and strategy.inner.beta == 0.1


def test_fltrust_asks_the_server_for_as_many_local_steps_as_a_median_client_takes():
    from fl_server.root_update import root_passes

    seen = []
    node_ids = _node_ids(5, 1)
    strategy = build_strategy("fltrust", {}, n_nodes=5, node_ranks={node: i for i, node in enumerate(node_ids)},
                              server_update_fn=lambda g, n: seen.append(n) or {k: v + 0.01 for k, v in g.items()})  # fmt: skip
    strategy.configure_train(1, _arrays(np.zeros(50, np.float32)), ConfigRecord(), FakeGrid(node_ids))
    rng = np.random.default_rng(0)
    sizes = [100, 3000, 3300, 3500, 9000]
    strategy.aggregate_train(1, [_reply(node, rng.normal(size=50).astype(np.float32), size)
                                 for node, size in zip(node_ids, sizes)])  # fmt: skip
    assert seen == [3300]
    # 3300 rows in batches of 64 are 52 steps; 200 root rows are 4 steps a pass: 13 passes
    assert root_passes(3300, 200, 64, 1) == 13 and root_passes(3300, 200, 64, 2) == 26
    assert root_passes(10, 200, 64, 1) == 1 and root_passes(0, 0, 64, 1) == 1


def test_the_screening_conf_holds_the_screening_defaults():
    """conf/strategy/screening.yaml's params and ScreeningConfig agree (the weight cap included)."""
    from hydra import compose, initialize_config_dir

    from simulation.config import CONF_DIR
    from simulation.config import specs
    from strategies.registry import split_screening_params
    from strategies.screening import ScreeningConfig

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("federated", overrides=["strategy=screening"])
    _, _, config = split_screening_params(dict(specs(cfg)[0].strategy.params))
    assert config == ScreeningConfig()
    assert config.max_weight_ratio == 6.0


def test_an_error_the_superlink_sends_for_a_dead_node_is_recorded_under_that_node():
    """A node that stops answering gets an error reply from the SuperLink (source node 1, reply_to the message sent
    to the node): the round's record names the node the message went to, not the SuperLink."""
    from flwr.app import Error

    node_ids = [11, 22, 33]
    strategy = build_strategy("screening", {}, n_nodes=3, node_ranks={})
    sent = list(strategy.configure_train(1, _arrays(np.zeros(50, np.float32)), ConfigRecord(), FakeGrid(node_ids)))
    for i, msg in enumerate(sent):  # what the grid does when it pushes them
        msg.metadata.__dict__["_message_id"] = f"msg-{i}"
    dead = next(m for m in sent if m.metadata.dst_node_id == 22)
    metadata = Metadata(run_id=1, message_id="err", src_node_id=1, dst_node_id=1,
                        reply_to_message_id=dead.metadata.message_id, group_id="1", created_at=time.time(),
                        ttl=60.0, message_type="train")  # fmt: skip
    error = make_message(metadata=metadata, error=Error(code=5, reason="Error: Node Unavailable"))
    rng = np.random.default_rng(0)
    replies = [_reply(n, rng.normal(size=50).astype(np.float32), 100) for n in (11, 33)] + [error]
    strategy.aggregate_train(1, replies)
    rows = {row["node-id"]: row for row in strategy.inner.client_train[1]}
    assert sorted(rows) == [11, 22, 33] and "Node Unavailable" in rows[22]["error"]


@pytest.mark.parametrize("name", ["fedadam", "screening"])
def test_the_aggregate_keeps_the_broadcast_dtype(name):
    """FedAdam's numpy arithmetic gives float64 arrays; a float64 global would make the next round's float32
    replies fail the reply checks (every update rejected from round 2 on). The aggregate keeps float32."""
    node_ids = [11, 22, 33, 44]
    params = {"inner": "fedadam"} if name == "screening" else {}
    strategy = build_strategy(name, params, n_nodes=4)
    rng = np.random.default_rng(0)
    glob = rng.normal(size=50).astype(np.float32)
    for server_round in (1, 2):
        list(strategy.configure_train(server_round, _arrays(glob), ConfigRecord(), FakeGrid(node_ids)))
        replies = [_reply(n, glob + 0.01 * rng.normal(size=50).astype(np.float32), 100) for n in node_ids]
        arrays, _ = strategy.aggregate_train(server_round, replies)
        assert arrays is not None and arrays["w"].numpy().dtype == np.float32, server_round
        glob = arrays["w"].numpy()
    if name == "screening":
        assert all(d["verdict"] == "accept" for d in strategy.decisions[2])
