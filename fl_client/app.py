"""Flower ClientApp (Message API): feature statistics (query), local training (train), local evaluation.

A virtual node's data is partition ``node_config["partition-id"]`` of ``node_config["num-partitions"]`` of the
run's TRAIN rows; a real gateway's is the capture at ``node_config["data-path"]`` (see :mod:`fl_client.data`).
Nothing but statistics and model weights leaves the client.

* query: ``{"config": {"log-transform": bool}}`` -> the statistics records of :mod:`fl_client.statistics`, with
  the node's model family in ``node["model"]`` (a mixed federation: :meth:`conf.schema.ModelSection.family_of`);
* train: ``{"arrays", "config": {"pipeline-state": JSON, "model-spec": JSON, "server-round": int,
  "proximal-mu": float (FedProx only)}}`` -> ``{"arrays": ArrayRecord, "metrics": {"num-examples", "train_loss",
  "smote-rows", "partition-id"}}``; with the run-config flag ``smote`` the client oversamples its own encoded
  fit rows with SMOTE before training (``num-examples`` counts real records only);
* evaluate: same request -> ``{"metrics": {"num-examples", "eval_loss", "eval_accuracy", "eval_tp", "eval_fp",
  "eval_fn", "eval_tn", "partition-id"}}`` on the client's local validation rows (``val-fraction`` of its
  partition, never trained on; by time for host-graph families); the counts at the pipeline's threshold, so that
  the server sums them into precision, recall and F1 (:mod:`fl_server.federated_eval`).

A gateway (no ``partition-id``) reports where its training labels came from in its query reply
(``node["labels-*"]``, see :class:`flows.labels.LabelCounts`) and refuses, in every handler, a run config that
asks for a simulated attack: attacks are for simulation only.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from conf.schema import RunSpec, from_run_config
from fl_client.attacks.client import changes_update, malicious_update
from fl_client.attacks.config import DATA_ATTACKS, AttackConfig, malicious_partitions
from fl_client.data import local_table
from fl_client.gateway_data import gateway_data
from fl_client.matrices import client_matrices
from fl_client.privacy import declined_reply, planned_problem, private_round
from fl_client.rollout import install_rollout
from fl_client.statistics import statistics_records
from flows.errors import ConfigError
from flows.pipeline_state import PipelineState
from models.checkpoint import ModelSpec
from models.evaluation import bce_with_logits
from models.family import ModelFamily
from models.weights import state_vector, vector_state

log = logging.getLogger("flwr.botdefender.client")

app = ClientApp()
app.query("rollout")(install_rollout)  # a gateway installs the signed bundle the server rolls out


def _spec(context: Context) -> RunSpec:
    """The run spec; a gateway refuses one that asks it to attack (Flower sends the error back as the reply)."""
    spec = from_run_config(context.run_config)
    if "partition-id" not in context.node_config and spec.attack.name != "none":
        raise ConfigError(f"this gateway refuses the run: attack.name={spec.attack.name!r} asks for a simulated "
                          "attack, which runs in simulation only (nodes with a partition-id); set attack.name=none")
    return spec


def _malicious_attack(spec: RunSpec, context: Context, server_round: int) -> AttackConfig | None:
    """This client's attack in this round, if it is one of the run's malicious partitions and the attack is on."""
    attack = AttackConfig.of(spec.attack)
    if attack.name == "none" or "partition-id" not in context.node_config:
        return None
    attackers = malicious_partitions(int(context.node_config["num-partitions"]), attack.fraction, spec.seed)
    active = int(context.node_config["partition-id"]) in attackers and attack.active(server_round)
    return attack if active else None


def _train_seed(spec: RunSpec, partition_id: int, server_round: int) -> int:
    return spec.seed * 1_000_003 + 7919 * partition_id + server_round


def _model(msg: Message) -> tuple[ModelFamily, torch.nn.Module]:
    """The broadcast model: its family and the network with the broadcast weights."""
    model_spec = ModelSpec.from_json(str(msg.content["config"]["model-spec"]))
    model = model_spec.build()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model_spec.model_family, model


def _honest_training(spec: RunSpec, msg: Message, X, y: np.ndarray, partition_id: int):
    """(model, loss): the broadcast model trained as an honest client would on (X, y)."""
    server_round = int(msg.content["config"].get("server-round", 0))
    family, model = _model(msg)
    loss = family.train_local(model, X, y, epochs=spec.simulation.local_epochs,
                              batch_size=spec.simulation.batch_size, lr=spec.round_lr(server_round),
                              seed=_train_seed(spec, partition_id, server_round),
                              proximal_mu=float(msg.content["config"].get("proximal-mu", 0.0)))  # fmt: skip
    return model, loss


_BENIGN: dict[tuple, np.ndarray] = {}


def _colluders_updates(spec: RunSpec, context: Context, msg: Message, attack: AttackConfig) -> np.ndarray:
    """Honest updates of every attacker on its clean data (the colluders' pooled knowledge), cached per round."""
    n = int(context.node_config["num-partitions"])
    attackers = malicious_partitions(n, attack.fraction, spec.seed)
    server_round = int(msg.content["config"].get("server-round", 0))
    key = (spec.out_dir, repr(spec), server_round, tuple(attackers))
    if key not in _BENIGN:
        base = state_vector(msg.content["arrays"].to_torch_state_dict())
        rows = []
        family = ModelSpec.from_json(str(msg.content["config"]["model-spec"])).family
        for pid in attackers:
            m = client_matrices(spec, {"partition-id": pid, "num-partitions": n},
                                str(msg.content["config"]["pipeline-state"]), family_name=family)  # fmt: skip
            model, _ = _honest_training(spec, msg, m.X_fit, m.y_fit, pid)
            rows.append(state_vector(model.state_dict()) - base)
        _BENIGN.clear()
        _BENIGN[key] = np.stack(rows)
    return _BENIGN[key]


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Reply with the feature statistics of this client's training rows."""
    spec = _spec(context)
    partition_id, table = local_table(spec, context.node_config)
    log_transform = bool(msg.content["config"]["log-transform"])
    content = statistics_records(table, log_transform, partition_id)
    content["node"]["model"] = spec.model.family_of(context.node_config)  # the server groups nodes by family
    # privacy=dp_sgd: settings this client's data cannot meet stop the run before round 1 (the fit rows are about
    # 1 - val_fraction of the table; the exact plan is made at training time)
    content["node"]["dp-problem"] = planned_problem(spec, int(len(table) * (1.0 - spec.simulation.val_fraction)))
    if partition_id < 0:  # a gateway: where its training labels came from
        content["node"].update(gateway_data(context.node_config, spec.dataset.name).counts.metrics())
    if table.skipped:
        log.warning("client %d: %s bad records skipped", partition_id, table.skipped)
    log.info("client %d: statistics of %d rows", partition_id, len(table))
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the broadcast model for ``local_epochs`` on the local fit rows; reply weights and metrics."""
    spec = _spec(context)
    torch.set_num_threads(spec.simulation.client_threads)
    config = msg.content["config"]
    partition_id = int(context.node_config.get("partition-id", -1))
    server_round = int(config.get("server-round", 0))
    attack = _malicious_attack(spec, context, server_round)
    if attack is not None and attack.name == "absent":
        log.info("client %d: absent (reference run: sits round %d out)", partition_id, server_round)
        return Message(content=absent_reply(msg.content["arrays"], partition_id), reply_to=msg)
    data_attack = attack if attack is not None and attack.name in DATA_ATTACKS else None
    family_name = ModelSpec.from_json(str(config["model-spec"])).family
    m = client_matrices(spec, context.node_config, str(config["pipeline-state"]), data_attack, family_name)
    started = time.perf_counter()
    privacy: dict[str, float] = {}
    if spec.privacy.name == "dp_sgd":  # DP-SGD on the fit rows; the attack (if any) then changes the update
        family, model = _model(msg)
        private = private_round(spec, context, family, model, m.X_fit, m.y_fit, server_round=server_round,
                                lr=spec.round_lr(server_round), seed=_train_seed(spec, partition_id, server_round))  # fmt: skip
        if private.model is None:
            return Message(content=declined_reply(private.reason, private.metrics, partition_id), reply_to=msg)
        loss, privacy = private.loss, private.metrics
    else:
        model, loss = _honest_training(spec, msg, m.X_fit, m.y_fit, partition_id)
    if attack is not None and changes_update(attack):
        state = model.state_dict()
        base = state_vector(msg.content["arrays"].to_torch_state_dict())
        n = int(context.node_config["num-partitions"])
        n_bad = len(malicious_partitions(n, attack.fraction, spec.seed))
        rng = np.random.default_rng([_train_seed(spec, partition_id, server_round), 0xA77AC])
        bad = malicious_update(attack, state_vector(state) - base,
                               lambda: _colluders_updates(spec, context, msg, attack), n, n_bad, rng)  # fmt: skip
        model.load_state_dict(vector_state(base + bad, state))
    log.info("client %d round %d: %d examples, train_loss %.4f%s", partition_id, server_round, len(m.y_fit), loss,
             f" (malicious: {attack.name})" if attack else "")  # fmt: skip
    metrics = MetricRecord({"num-examples": int(m.n_real), "train_loss": float(loss),
                            "smote-rows": int(m.n_synthetic), "partition-id": partition_id,
                            "train-seconds": time.perf_counter() - started, **privacy})  # fmt: skip
    return Message(content=RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)


def absent_reply(broadcast: ArrayRecord, partition_id: int) -> RecordDict:
    """The ``absent`` reference's reply: the broadcast weights back, untrained, with weight ``num-examples`` 0, so
    that example-weighted aggregation (FedAvg) averages the other clients only."""
    metrics = MetricRecord({"num-examples": 0, "train_loss": 0.0, "smote-rows": 0, "partition-id": partition_id,
                            "train-seconds": 0.0})  # fmt: skip
    return RecordDict({"arrays": broadcast, "metrics": metrics})


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the broadcast model on the local validation rows (the fit rows if there are none)."""
    spec = _spec(context)
    torch.set_num_threads(spec.simulation.client_threads)
    partition_id = int(context.node_config.get("partition-id", -1))
    family_name = ModelSpec.from_json(str(msg.content["config"]["model-spec"])).family
    m = client_matrices(spec, context.node_config, str(msg.content["config"]["pipeline-state"]),
                        family_name=family_name)  # fmt: skip
    X_val, y_val = (m.X_val, m.y_val) if len(m.y_val) else (m.X_fit, m.y_fit)
    family, model = _model(msg)
    threshold = PipelineState.from_json(str(msg.content["config"]["pipeline-state"])).threshold
    metrics = MetricRecord({"num-examples": int(len(y_val)), **evaluation_metrics(family, model, X_val, y_val,
                                                                                  threshold),
                            "partition-id": partition_id})  # fmt: skip
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


def evaluation_metrics(family: ModelFamily, model: torch.nn.Module, X, y: np.ndarray, threshold: float) -> dict:
    """``eval_loss`` and ``eval_accuracy`` (as :meth:`ModelFamily.evaluate_local`: mean BCE, accuracy at logit 0)
    and the confusion counts ``eval_tp``/``eval_fp``/``eval_fn``/``eval_tn`` at ``threshold``, from one pass."""
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if len(y) == 0:
        raise ValueError("no evaluation rows")
    logits = family.predict_logits(model, X).astype(np.float64).reshape(-1)
    predicted = (1.0 / (1.0 + np.exp(-logits)) >= threshold).astype(np.int64)
    return {"eval_loss": bce_with_logits(logits, y), "eval_accuracy": float(np.mean((logits >= 0) == (y == 1))),
            "eval_tp": int(((predicted == 1) & (y == 1)).sum()), "eval_fp": int(((predicted == 1) & (y == 0)).sum()),
            "eval_fn": int(((predicted == 0) & (y == 1)).sum()), "eval_tn": int(((predicted == 0) & (y == 0)).sum())}
