"""Flower ClientApp (Message API): feature statistics (query), local training (train), local evaluation.

A virtual node's data is partition ``node_config["partition-id"]`` of ``node_config["num-partitions"]`` of the
run's TRAIN rows (see :mod:`fl_client.data`). Nothing but statistics and model weights leaves the client.

* query: ``{"config": {"log-transform": bool}}`` -> the statistics records of :mod:`fl_client.statistics`;
* train: ``{"arrays", "config": {"pipeline-state": JSON, "model-config": JSON, "server-round": int}}`` ->
  ``{"arrays": ArrayRecord, "metrics": {"num-examples", "train_loss", "partition-id"}}``;
* evaluate: same request -> ``{"metrics": {"num-examples", "eval_loss", "eval_accuracy", "partition-id"}}`` on
  the client's local validation rows (``val-fraction`` of its partition, never trained on).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl_client.data import client_partition, local_validation_split, partition_config_from_run_config
from fl_client.statistics import statistics_records
from fl_client.training import build_model, evaluate_local, train_local
from flows.pipeline_state import PipelineState
from flows.run_split import DataSettings
from flows.table import LABEL, FlowTable

log = logging.getLogger("flwr.botdefender.client")

app = ClientApp()


def _partition(context: Context) -> tuple[int, FlowTable]:
    run_config = context.run_config
    partition_id = int(context.node_config["partition-id"])
    config = partition_config_from_run_config(run_config, int(context.node_config["num-partitions"]))
    return partition_id, client_partition(DataSettings.from_run_config(run_config), config, partition_id)


_MATRICES: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def _matrices(context: Context, state_json: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_fit, y_fit, X_val, y_val) of this client under the broadcast pipeline (cached per process)."""
    partition_id = int(context.node_config["partition-id"])
    key = (partition_id, DataSettings.from_run_config(context.run_config), state_json)
    if key not in _MATRICES:
        _, table = _partition(context)
        state = PipelineState.from_json(state_json)
        seed = int(context.run_config.get("seed", 0))
        fit_rows, val_rows = local_validation_split(len(table), float(context.run_config.get("val-fraction", 0.1)),
                                                    seed + 7919 * partition_id)  # fmt: skip
        X = state.transform(table.frame)
        y = table.frame[LABEL].to_numpy(dtype=np.int64)
        _MATRICES.clear()
        _MATRICES[key] = (X[fit_rows], y[fit_rows], X[val_rows], y[val_rows])
    return _MATRICES[key]


def _model(msg: Message) -> torch.nn.Module:
    model = build_model(json.loads(str(msg.content["config"]["model-config"])))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Reply with the feature statistics of this client's training rows."""
    partition_id, table = _partition(context)
    log_transform = bool(msg.content["config"]["log-transform"])
    content = statistics_records(table, log_transform)
    log.info("client %d: statistics of %d rows", partition_id, len(table))
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the broadcast model for ``local-epochs`` on the local fit rows; reply weights and metrics."""
    torch.set_num_threads(int(context.run_config.get("client-threads", 1)))
    config = msg.content["config"]
    partition_id = int(context.node_config["partition-id"])
    X, y, _, _ = _matrices(context, str(config["pipeline-state"]))
    model = _model(msg)
    server_round = int(config.get("server-round", 0))
    seed = int(context.run_config.get("seed", 0)) * 1_000_003 + 7919 * partition_id + server_round
    loss = train_local(model, X, y, epochs=int(context.run_config.get("local-epochs", 1)),
                       batch_size=int(context.run_config.get("batch-size", 64)),
                       lr=float(context.run_config.get("lr", 1e-3)), seed=seed)  # fmt: skip
    log.info("client %d round %d: %d rows, train_loss %.4f", partition_id, server_round, len(X), loss)
    metrics = MetricRecord({"num-examples": int(len(X)), "train_loss": float(loss), "partition-id": partition_id})
    return Message(content=RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the broadcast model on the local validation rows (the fit rows if there are none)."""
    torch.set_num_threads(int(context.run_config.get("client-threads", 1)))
    partition_id = int(context.node_config["partition-id"])
    X_fit, y_fit, X_val, y_val = _matrices(context, str(msg.content["config"]["pipeline-state"]))
    if len(X_val) == 0:
        X_val, y_val = X_fit, y_fit
    loss, accuracy = evaluate_local(_model(msg), X_val, y_val)
    metrics = MetricRecord({"num-examples": int(len(X_val)), "eval_loss": loss, "eval_accuracy": accuracy,
                            "partition-id": partition_id})  # fmt: skip
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
