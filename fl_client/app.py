"""Flower ClientApp (Message API): feature statistics (query), local training (train), local evaluation.

A virtual node's data is partition ``node_config["partition-id"]`` of ``node_config["num-partitions"]`` of the
run's TRAIN rows; a real gateway's is the capture at ``node_config["data-path"]`` (see :mod:`fl_client.data`).
Nothing but statistics and model weights leaves the client.

* query: ``{"config": {"log-transform": bool}}`` -> the statistics records of :mod:`fl_client.statistics`;
* train: ``{"arrays", "config": {"pipeline-state": JSON, "model-config": JSON, "server-round": int,
  "proximal-mu": float (FedProx only)}}`` -> ``{"arrays": ArrayRecord, "metrics": {"num-examples", "train_loss",
  "smote-rows", "partition-id"}}``; with the run-config flag ``smote`` the client oversamples its own encoded
  fit rows with SMOTE before training (``num-examples`` counts real records only);
* evaluate: same request -> ``{"metrics": {"num-examples", "eval_loss", "eval_accuracy", "partition-id"}}`` on
  the client's local validation rows (``val-fraction`` of its partition, never trained on).
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl_client.data import local_table, local_validation_split
from fl_client.statistics import statistics_records
from fl_client.training import build_model, evaluate_local, train_local
from flows.oversampling import smote
from flows.pipeline_state import PipelineState
from flows.run_split import DataSettings
from flows.table import LABEL

log = logging.getLogger("flwr.botdefender.client")

app = ClientApp()


_MATRICES: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] = {}


def _matrices(context: Context, state_json: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(X_fit, y_fit, X_val, y_val, synthetic rows) of this client under the broadcast pipeline.

    Cached per process for the last node served (a Ray worker serves many virtual nodes in turn)."""
    run_config = context.run_config
    use_smote = bool(run_config.get("smote", False))
    key = (tuple(sorted(context.node_config.items())), DataSettings.from_run_config(run_config), state_json,
           use_smote)  # fmt: skip
    if key not in _MATRICES:
        partition_id, table = local_table(run_config, context.node_config)
        state = PipelineState.from_json(state_json)
        seed = int(run_config.get("seed", 0)) + 7919 * max(partition_id, 0)
        fit_rows, val_rows = local_validation_split(len(table), float(run_config.get("val-fraction", 0.1)), seed)
        X = state.transform(table.frame)
        y = table.frame[LABEL].to_numpy(dtype=np.int64)
        X_fit, y_fit, n_synthetic = X[fit_rows], y[fit_rows], 0
        if use_smote:  # local training rows only: validation rows never see synthetic neighbours
            X_fit, y_fit, n_synthetic = smote(X_fit, y_fit, seed)
        _MATRICES.clear()
        _MATRICES[key] = (X_fit, y_fit, X[val_rows], y[val_rows], n_synthetic)
    return _MATRICES[key]


def _model(msg: Message) -> torch.nn.Module:
    model = build_model(json.loads(str(msg.content["config"]["model-config"])))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model


def round_lr(run_config, server_round: int) -> float:
    """The clients' learning rate in ``server_round``: ``lr * lr-decay ** (round - 1)`` (same on every client)."""
    decay = float(run_config.get("lr-decay", 1.0))
    return float(run_config.get("lr", 1e-3)) * decay ** max(server_round - 1, 0)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Reply with the feature statistics of this client's training rows."""
    partition_id, table = local_table(context.run_config, context.node_config)
    log_transform = bool(msg.content["config"]["log-transform"])
    content = statistics_records(table, log_transform, partition_id)
    if table.skipped:
        log.warning("client %d: %s bad records skipped", partition_id, table.skipped)
    log.info("client %d: statistics of %d rows", partition_id, len(table))
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the broadcast model for ``local-epochs`` on the local fit rows; reply weights and metrics."""
    torch.set_num_threads(int(context.run_config.get("client-threads", 1)))
    config = msg.content["config"]
    partition_id = int(context.node_config.get("partition-id", -1))
    X, y, _, _, n_synthetic = _matrices(context, str(config["pipeline-state"]))
    model = _model(msg)
    started = time.perf_counter()
    server_round = int(config.get("server-round", 0))
    seed = int(context.run_config.get("seed", 0)) * 1_000_003 + 7919 * partition_id + server_round
    loss = train_local(model, X, y, epochs=int(context.run_config.get("local-epochs", 1)),
                       batch_size=int(context.run_config.get("batch-size", 64)),
                       lr=round_lr(context.run_config, server_round), seed=seed,
                       proximal_mu=float(config.get("proximal-mu", 0.0)))  # fmt: skip
    log.info("client %d round %d: %d rows, train_loss %.4f", partition_id, server_round, len(X), loss)
    metrics = MetricRecord({"num-examples": int(len(X) - n_synthetic), "train_loss": float(loss),
                            "smote-rows": int(n_synthetic), "partition-id": partition_id,
                            "train-seconds": time.perf_counter() - started})  # fmt: skip
    return Message(content=RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the broadcast model on the local validation rows (the fit rows if there are none)."""
    torch.set_num_threads(int(context.run_config.get("client-threads", 1)))
    partition_id = int(context.node_config.get("partition-id", -1))
    X_fit, y_fit, X_val, y_val, _ = _matrices(context, str(msg.content["config"]["pipeline-state"]))
    if len(X_val) == 0:
        X_val, y_val = X_fit, y_fit
    loss, accuracy = evaluate_local(_model(msg), X_val, y_val)
    metrics = MetricRecord({"num-examples": int(len(X_val)), "eval_loss": loss, "eval_accuracy": accuracy,
                            "partition-id": partition_id})  # fmt: skip
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
