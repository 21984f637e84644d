"""privacy=dp_sgd: accounting over the whole run, DPLSTM <-> nn.LSTM, budgets, declined replies, bad settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FakeGrid
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Metadata, MetricRecord, RecordDict
from flwr.app.message import make_message

from conf.schema import RunSpec, RunSpecError, from_run_config
from fl_client.privacy import DECLINED, declined_reply, load_ledger, private_round, store_ledger
from models.dp.accounting import DPSettingsError, Ledger, epsilon_of, plan
from models.registry import get_family

N_FEATURES = 24


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    return X, (X[:, -4:].sum(axis=1) + 0.3 * rng.normal(size=n) > 0).astype(np.int64)  # the LSTM's last steps


def _spec(**privacy) -> RunSpec:
    values = {"privacy.name": "dp_sgd", "simulation.num-rounds": 4, "simulation.batch-size": 64,
              **{f"privacy.{k.replace('_', '-')}": v for k, v in privacy.items()}}  # fmt: skip
    return from_run_config(values)


def _context(node_config: dict | None = None, run_id: int = 7) -> Context:
    return Context(run_id=run_id, node_id=1, node_config=node_config if node_config is not None
                   else {"partition-id": 0, "num-partitions": 2}, state=RecordDict(), run_config={})  # fmt: skip


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_family("cnn_lstm").build(N_FEATURES, {"conv_channels": 8, "lstm_hidden": 16, "dense": 8})


def _independent_epsilon(history, delta: float) -> float:
    """The same mechanism (Poisson-sampled Gaussian, composed per step) accounted by Google's dp-accounting, the
    library behind Flower's accountant: independent of opacus's own RDP code."""
    from dp_accounting import dp_event
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant()
    for sigma, q, steps in history:
        accountant.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), int(steps))
    return float(accountant.get_epsilon(delta))


# ---- accounting over the whole run -----------------------------------------------------------------------------
def test_cumulative_epsilon_grows_every_round_and_matches_dp_accounting_within_1_percent():
    spec = _spec(noise_multiplier=1.1)
    context = _context()
    X, y = _data()
    family, model = get_family("cnn_lstm"), _model()
    spent = []
    for server_round in range(1, 5):
        result = private_round(spec, context, family, model, X, y, server_round=server_round, lr=0.003, seed=server_round)
        assert result.model is not None
        spent.append(result.metrics["dp-epsilon"])
        ledger = load_ledger(context, "rdp")  # the state a later round of this node starts from
        assert ledger.rounds == list(range(1, server_round + 1))
        independent = _independent_epsilon(ledger.history, spec.privacy.delta)
        assert abs(spent[-1] - independent) <= 0.01 * independent, (spent[-1], independent)
    assert all(b > a for a, b in zip(spent, spent[1:])), spent
    # the whole run's steps, not one round's: 4 rounds of ceil(600/64) = 10 steps at q = 1/10
    assert load_ledger(context, "rdp").history == [(1.1, 0.1, 40)]
    one_round = epsilon_of([(1.1, 0.1, 10)], "rdp", spec.privacy.delta)
    assert spent[-1] > 1.5 * one_round  # what a per-round engine (Flower's opacus example) would report


def test_prv_accountant_matches_the_pld_accountant_of_dp_accounting_within_1_percent():
    from dp_accounting import dp_event
    from dp_accounting.pld import PLDAccountant

    history = [(1.1, 0.02, 500)]
    pld = PLDAccountant()
    pld.compose(dp_event.PoissonSampledDpEvent(0.02, dp_event.GaussianDpEvent(1.1)), 500)
    expected = pld.get_epsilon(1e-5)
    assert abs(epsilon_of(history, "prv", 1e-5) - expected) <= 0.01 * expected


def test_a_target_epsilon_is_spent_over_the_whole_run_not_per_round():
    the_plan = plan(540, batch_size=64, local_epochs=2, num_rounds=10, delta=1e-5, accountant="rdp",
                    target_epsilon=3.0)  # fmt: skip
    assert the_plan.derived and the_plan.steps_per_round == 18
    history = [(the_plan.noise_multiplier, the_plan.sample_rate, the_plan.steps_per_round * 10)]
    assert 3.0 - 0.05 <= epsilon_of(history, "rdp", 1e-5) <= 3.0
    fewer = plan(540, batch_size=64, local_epochs=2, num_rounds=2, delta=1e-5, accountant="rdp", target_epsilon=3.0)
    assert fewer.noise_multiplier < the_plan.noise_multiplier  # more rounds of the same budget: more noise


# ---- the network under DP-SGD ----------------------------------------------------------------------------------
def test_dplstm_weights_round_trip_into_nn_lstm_with_identical_outputs():
    from opacus.layers import DPLSTM

    family, model = get_family("cnn_lstm"), _model()
    private = family.private_module(model)
    assert isinstance(private.lstm, DPLSTM) and type(model.lstm) is torch.nn.LSTM
    with torch.no_grad():  # the private copy moves away from the plain one, as training would move it
        for p in private.parameters():
            p.add_(0.05 * torch.randn_like(p))
    plain = _model()
    family.load_private(plain, private)
    assert type(plain.lstm) is torch.nn.LSTM and set(plain.state_dict()) == set(_model().state_dict())
    X = torch.from_numpy(_data(50)[0])
    trained = private.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in plain.state_dict().items())  # the same weights, bit for bit
    private.eval(), plain.eval()
    with torch.no_grad():  # DPLSTM computes in Python, nn.LSTM in a fused kernel: equal to float32 rounding
        torch.testing.assert_close(private(X), plain(X), rtol=0.0, atol=1e-6)
        assert not torch.allclose(plain(X), _model().eval()(X))


def test_dp_sgd_training_leaves_a_plain_model_that_learns():
    spec = _spec(noise_multiplier=0.6)
    X, y = _data(1500)
    family, model = get_family("cnn_lstm"), _model()
    context = _context()
    for r in range(1, 5):
        result = private_round(spec, context, family, model, X, y, server_round=r, lr=0.01, seed=r)
    assert type(result.model.lstm) is torch.nn.LSTM and result.model is model
    accuracy = float(np.mean((family.predict_logits(model, X) >= 0) == (y == 1)))
    assert accuracy > 0.75, accuracy  # plain training reaches about 0.90 here, DP-SGD about 0.85


def test_the_gcn_family_refuses_dp_sgd_with_the_reason():
    with pytest.raises(RunSpecError, match="host's influence"):
        from_run_config({"privacy.name": "dp_sgd", "privacy.target-epsilon": 8.0, "model.name": "gcn"})
    with pytest.raises(ValueError, match="refused for the gcn family"):
        get_family("gcn").private_module(torch.nn.Linear(2, 1))


# ---- budgets ---------------------------------------------------------------------------------------------------
def test_a_spent_budget_declines_the_round_and_says_so():
    X, y = _data()
    budget = epsilon_of([(1.1, 0.1, 20)], "rdp", 1e-5)  # exactly two rounds' worth
    spec = _spec(noise_multiplier=1.1, max_epsilon=budget * 1.0001)
    context = _context()
    family, model = get_family("cnn_lstm"), _model()
    outcomes = [private_round(spec, context, family, model, X, y, server_round=r, lr=0.003, seed=r) for r in (1, 2, 3)]
    assert [o.model is not None for o in outcomes] == [True, True, False]
    assert "privacy budget spent" in outcomes[2].reason and "max_epsilon" in outcomes[2].reason
    assert outcomes[2].metrics["dp-epsilon"] == pytest.approx(outcomes[1].metrics["dp-epsilon"])
    assert load_ledger(context, "rdp").rounds == [1, 2]  # nothing composed for the declined round
    reply = declined_reply(outcomes[2].reason, outcomes[2].metrics, 0)
    assert DECLINED in reply.config_records and not reply.array_records and not reply.metric_records


def _reply(node: int, arrays: dict | None = None, metrics: dict | None = None, declined: str = ""):
    if declined:
        content = RecordDict({DECLINED: ConfigRecord({"reason": declined, "dp-epsilon": 3.0, "partition-id": node})})
    else:
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                              "metrics": MetricRecord(metrics)})  # fmt: skip
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="x",
                        group_id="1", created_at=0.0, ttl=60.0, message_type="train")  # fmt: skip
    return make_message(metadata=metadata, content=content)


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("strategy_name", ["fedavg", "screening"])
def test_a_declined_client_is_left_out_of_aggregation_and_the_others_carry_on(strategy_name):
    from strategies.registry import build_strategy

    strategy = build_strategy(strategy_name, {}, n_nodes=3, seed=0, node_ranks={1: 0, 2: 1, 3: 2})
    base = {"w": np.zeros(4, np.float32)}
    strategy.configure_train(1, ArrayRecord({"w": Array(base["w"])}), ConfigRecord({}), FakeGrid([1, 2, 3]))
    metrics = {"num-examples": 10, "train_loss": 0.5, "dp-epsilon": 1.0}
    replies = [_reply(1, {"w": np.full(4, 0.01, np.float32)}, metrics), _reply(2, declined="privacy budget spent"),
               _reply(3, {"w": np.full(4, 0.03, np.float32)}, metrics)]  # fmt: skip
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), np.full(4, 0.02), rtol=1e-6)
    rows = strategy.client_train[1]
    assert [r["rank"] for r in rows] == [0, 1, 2] and rows[1]["declined"] == "privacy budget spent"
    if strategy_name == "screening":  # not a malformed update: the screening never saw it
        assert [d["client"] for d in strategy.decisions[1]] == [0, 2]
        assert all(d["verdict"] == "accept" for d in strategy.decisions[1])
    from fl_server.outputs import missing
    from fl_server.privacy_report import round_privacy

    assert missing([0, 1, 2], rows) == []  # it answered
    assert round_privacy(rows, {})["declined"] == [1]


# ---- a gateway keeps its ledger on disk ------------------------------------------------------------------------
def test_a_gateway_ledger_survives_a_supernode_restart(tmp_path):
    node_config = {"data-path": "unused", "privacy-dir": str(tmp_path / "privacy")}
    first = _context(node_config)
    ledger = Ledger(7, "rdp", [(1.0, 0.1, 30)], [1, 2])
    store_ledger(first, ledger)
    path = tmp_path / "privacy" / "dp-ledger-run7.json"
    assert path.is_file() and (path.stat().st_mode & 0o777) == 0o600
    restarted = _context(node_config)  # a new process: empty context.state
    assert load_ledger(restarted, "rdp") == ledger
    assert load_ledger(_context(node_config, run_id=8), "rdp").history == []  # another run starts its own
    path.write_text("{not json")
    with pytest.raises(DPSettingsError, match="ledger is damaged"):
        load_ledger(restarted, "rdp")
    path.write_text(json.dumps({"run_id": 7, "accountant": "prv", "history": [], "rounds": []}))
    with pytest.raises(DPSettingsError, match="accountant 'prv'"):
        load_ledger(restarted, "rdp")


# ---- bad settings fail before anything starts, with one line -------------------------------------------------
@pytest.mark.parametrize("values, message", [
    ({"privacy.name": "dp_sgd"}, "set exactly one of privacy.noise_multiplier"),
    ({"privacy.name": "dp_sgd", "privacy.noise-multiplier": -1.0}, "must be > 0"),
    ({"privacy.name": "dp_sgd", "privacy.noise-multiplier": 1.0, "privacy.target-epsilon": 2.0}, "exactly one"),
    ({"privacy.name": "dp_sgd", "privacy.target-epsilon": 2.0, "privacy.delta": 1.0}, "delta must be in (0, 1)"),
    ({"privacy.name": "dp_sgd", "privacy.target-epsilon": 9.0, "privacy.max-epsilon": 8.0}, "exceeds the budget"),
    ({"privacy.name": "dp_sgd", "privacy.target-epsilon": 2.0, "privacy.accountant": "gdp"}, "rdp, prv"),
    ({"privacy.name": "dp_sgd", "privacy.target-epsilon": 2.0, "privacy.max-grad-norm": 0.0}, "max_grad_norm"),
    ({"privacy.name": "dp_sgd", "privacy.target-epsilon": 2.0, "simulation.smote": True}, "SMOTE"),
    ({"privacy.name": "dp_sgd", "privacy.target-epsilon": 2.0, "strategy.name": "fedprox"}, "proximal term"),
    ({"privacy.name": "central", "privacy.noise-multiplier": 0.0}, "noise_multiplier must be > 0"),
    ({"privacy.name": "central", "privacy.noise-multiplier": 1.0}, "needs strategy=fedavg"),
    ({"privacy.name": "laplace"}, "privacy.name must be one of none, dp_sgd, central"),
])  # fmt: skip
def test_bad_privacy_settings_fail_with_one_clear_line(values, message):
    with pytest.raises(RunSpecError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        from_run_config(values)
    assert "\n" not in str(caught.value)


def test_settings_the_data_cannot_meet_fail_with_one_clear_line():
    with pytest.raises(DPSettingsError, match=r"delta=0.01 must be below 1/n = 0.005 for a client with 200"):
        plan(200, batch_size=64, local_epochs=1, num_rounds=5, delta=0.01, accountant="rdp", noise_multiplier=1.0)
    with pytest.raises(DPSettingsError, match="target_epsilon=0.0001 cannot be reached"):
        plan(200, batch_size=100, local_epochs=50, num_rounds=80, delta=1e-5, accountant="rdp",
             target_epsilon=1e-4)  # fmt: skip
    with pytest.raises(DPSettingsError, match="no training records"):
        plan(0, batch_size=64, local_epochs=1, num_rounds=5, delta=1e-5, accountant="rdp", noise_multiplier=1.0)
