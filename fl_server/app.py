"""Flower ServerApp (Message API): federated feature pipeline, configured strategy, central evaluation, outputs.

1. query every connected node for the feature statistics of its training rows; merge them into the pipeline
   state (no raw record leaves a client);
2. broadcast the state (JSON in the train/evaluate ConfigRecord) and run the configured Flower strategy
   (``strategy.name``, ``strategy.params`` JSON; see :mod:`strategies.registry`) for ``num-server-rounds``,
   evaluating the global model on the held-out test split after every round (and before the first);
3. write ``metrics.json``, ``final.pt``/``best.pt`` (state_dict + model config + pipeline JSON) and
   ``pipeline.json`` into the absolute ``out-dir``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from fl_client.training import round_lr, train_local
from fl_server.data import held_out_test
from flows.run_split import DataSettings, server_root
from fl_server.statistics import fit_pipeline_state, node_rank
from flows.pipeline import PipelineConfig
from flows.pipeline_state import PipelineState
from flows.table import LABEL
from models.cnn_lstm import CNNLSTM
from models.evaluation import bce_with_logits, detection_metrics
from models.training import predict_logits
from strategies.registry import build_strategy

log = logging.getLogger("flwr.botdefender.server")

app = ServerApp()

ARCH_KEYS = {"model.conv-channels": int, "model.lstm-hidden": int, "model.dense": int, "model.dropout": float}


class RunConfigError(ValueError):
    """A run-config value the app cannot use (values are not type-checked by ``flwr run``)."""


def _out_dir(run_config) -> Path:
    value = str(run_config.get("out-dir", ""))
    if not value or not Path(value).is_absolute():
        raise RunConfigError(f"out-dir must be an absolute path (the ServerApp's working directory is the "
                             f"SuperLink's), got {value!r}")  # fmt: skip
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_config(run_config, n_features: int) -> dict:
    """CNNLSTM arguments: ``n_features`` plus the ``model.*`` sizes given in the run config."""
    config: dict = {"n_features": int(n_features)}
    for key, cast in ARCH_KEYS.items():
        if key in run_config:
            config[key.split(".", 1)[1].replace("-", "_")] = cast(run_config[key])
    return config


def _wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} node(s) connected after {timeout:.0f} s; min-nodes is {minimum}")
        time.sleep(0.5)


def query_pipeline_state(
    grid: Grid, nodes: list[int], config: PipelineConfig, timeout: float
) -> tuple[PipelineState, dict[int, int]]:
    """Ask every node for its feature statistics; fit the pipeline state from their merge.

    Also returns node id -> partition id for the nodes that have one (simulation), which ranks nodes for
    seeded sampling and ordered aggregation."""
    messages = [
        Message(content=RecordDict({"config": ConfigRecord({"log-transform": config.log_transform})}),
                dst_node_id=node, message_type=MessageType.QUERY)  # fmt: skip
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    errors = [f"node {r.metadata.src_node_id}: {r.error.reason}" for r in replies if r.has_error()]
    if errors or len(replies) != len(nodes):
        raise RuntimeError(f"statistics query: {len(replies)}/{len(nodes)} replies; errors: {errors}")
    state = fit_pipeline_state((r.content for r in replies), config, source="federated")
    log.info("pipeline fitted from %d clients' statistics: %d records, %d model inputs", len(replies),
             state.info["fitted_on_records"], state.n_outputs)  # fmt: skip
    ranks = {int(r.metadata.src_node_id): node_rank(r.content) for r in replies}
    return state, {node: rank for node, rank in ranks.items() if rank is not None}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def root_passes(client_examples: int, root_size: int, batch_size: int, epochs: int) -> int:
    """Passes over the root set that take about as many optimiser steps as ``epochs`` over a client's rows."""
    client_steps = epochs * math.ceil(max(client_examples, 1) / batch_size)
    return max(1, round(client_steps / math.ceil(max(root_size, 1) / batch_size)))


def root_update_fn(run_config, state: PipelineState, arch: dict):
    """FLTrust's server update: the global model trained on the server's root dataset for as many local steps as
    a client of the round takes (Cao et al., NDSS 2021, Algorithm 1: same local iterations, batch size and
    learning rate), that is enough passes over the small root set to match the round's median client size; None
    when the run has no root dataset. (One pass over 200 root records is 4 steps against a client's ~50: the
    server update, whose norm FLTrust scales every client update to, was then ~10x too short and the global
    model barely moved.)"""
    settings = DataSettings.from_run_config(run_config)
    if settings.root_size <= 0:
        return None
    root = server_root(settings)
    X, y = state.transform(root.frame), root.frame[LABEL].to_numpy(dtype=np.int64)
    batch_size, epochs = int(run_config.get("batch-size", 64)), int(run_config.get("local-epochs", 1))
    calls = {"n": 0}

    def update(global_arrays: dict[str, np.ndarray], client_examples: int) -> dict[str, np.ndarray]:
        calls["n"] += 1
        passes = root_passes(client_examples, len(X), batch_size, epochs)
        model = CNNLSTM(**arch)
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in global_arrays.items()})
        train_local(model, X, y, epochs=passes, batch_size=batch_size, lr=round_lr(run_config, calls["n"]),
                    seed=int(run_config.get("seed", 0)) * 7 + calls["n"])  # fmt: skip
        return {k: v.detach().numpy() for k, v in model.state_dict().items()}

    log.info("server root dataset: %d records (for fltrust)", len(root))
    return update


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    run_config = context.run_config
    out_dir = _out_dir(run_config)
    seed = int(run_config.get("seed", 0))
    num_rounds = int(run_config.get("num-server-rounds", 3))
    timeout = float(run_config.get("timeout", 3600))
    pipeline_config = PipelineConfig(log_transform=bool(run_config.get("pipeline.log-transform", True)),
                                     min_category_count=int(run_config.get("pipeline.min-category-count", 1)))  # fmt: skip

    nodes = _wait_for_nodes(grid, int(run_config.get("min-nodes", 2)), float(run_config.get("node-wait", 120)))
    log.info("%d node(s) connected", len(nodes))
    state, ranks = query_pipeline_state(grid, nodes, pipeline_config, timeout)
    state_json = state.to_json()

    test = held_out_test(run_config)
    X_test = state.transform(test.frame)
    y_test = test.frame[LABEL].to_numpy(dtype=np.int64)
    arch = model_config(run_config, state.n_outputs)
    torch.manual_seed(seed)
    model = CNNLSTM(**arch)

    central: dict[int, dict] = {}
    best: dict = {"round": -1, "f1": -1.0, "state_dict": None}

    round_ends: dict[int, float] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        eval_started = time.perf_counter()
        model.load_state_dict(arrays.to_torch_state_dict())
        logits = predict_logits(model, X_test).astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-logits))
        metrics = detection_metrics(y_test, scores, threshold=state.threshold)
        metrics["loss"] = bce_with_logits(logits, y_test)
        metrics["central_eval_seconds"] = time.perf_counter() - eval_started
        round_ends[server_round] = time.perf_counter()
        if server_round - 1 in round_ends:  # one whole round: train, client evaluate, central evaluation
            metrics["round_seconds"] = round_ends[server_round] - round_ends[server_round - 1]
        central[server_round] = metrics
        if server_round > 0 and metrics["f1"] > best["f1"]:
            best.update(round=server_round, f1=metrics["f1"], state_dict=copy.deepcopy(model.state_dict()))
        log.info("round %d/%d: global loss %.4f acc %.4f f1 %.4f auc %.4f (%.1f s)", server_round, num_rounds,
                 metrics["loss"], metrics["accuracy"], metrics["f1"], metrics["roc_auc"],
                 metrics.get("round_seconds", 0.0))  # fmt: skip
        return MetricRecord({k: float(metrics[k]) for k in ("loss", "accuracy", "precision", "recall", "f1", "roc_auc")})

    strategy = build_strategy(str(run_config.get("strategy.name", "fedavg")),
                              json.loads(str(run_config.get("strategy.params", "{}"))), n_nodes=len(nodes),
                              fraction_train=float(run_config.get("fraction-train", 1.0)),
                              fraction_evaluate=float(run_config.get("fraction-evaluate", 1.0)),
                              min_nodes=int(run_config.get("strategy.min-nodes", 2)), seed=seed,
                              node_ranks=ranks, server_update_fn=root_update_fn(run_config, state, arch))  # fmt: skip
    log.info("strategy %s", type(strategy).__name__)
    if bool(run_config.get("save-updates", False)):
        if hasattr(strategy, "updates_dir"):
            strategy.updates_dir = out_dir / "updates"
        else:
            log.warning("save-updates: only the screening strategy keeps update vectors; nothing will be saved")
    broadcast = ConfigRecord({"pipeline-state": state_json, "model-config": json.dumps(arch)})
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=num_rounds,
                            train_config=broadcast, evaluate_config=ConfigRecord(dict(broadcast)),
                            evaluate_fn=evaluate_fn, timeout=timeout)  # fmt: skip

    final_state = result.arrays.to_torch_state_dict()
    for name, state_dict, round_ in (("final", final_state, num_rounds),
                                     ("best", best["state_dict"] or final_state, best["round"])):  # fmt: skip
        torch.save({"state_dict": state_dict, "model_config": arch, "pipeline_state": state_json, "round": round_},
                   out_dir / f"{name}.pt")  # fmt: skip
    state.save(out_dir / "pipeline.json")

    def clean(metrics: dict) -> dict:
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in metrics.items()}

    rounds = []
    for r in range(0, num_rounds + 1):
        entry: dict = {"round": r, "global": clean(central.get(r, {}))}
        if r > 0:
            entry["clients_train"] = strategy.client_train.get(r, [])
            entry["clients_evaluate"] = strategy.client_evaluate.get(r, [])
            entry["sampled_train"] = strategy.sampled["train"].get(r, [])
            entry["sampled_evaluate"] = strategy.sampled["evaluate"].get(r, [])
            if hasattr(strategy, "decisions"):  # the screening wrapper: every verdict with scores and reasons
                entry["screening"] = strategy.decisions.get(r, [])
        rounds.append(entry)
    summary = {
        "run_config": dict(run_config),
        "nodes": len(nodes),
        "strategy": type(strategy).__name__,
        "pipeline": {"fitted_on_records": state.info["fitted_on_records"], "model_inputs": state.n_outputs},
        "test_records": int(len(y_test)),
        "model_config": arch,
        "rounds": rounds,
        "final": clean(central.get(num_rounds, {})),
        "best_round": best["round"],
        "seconds": time.perf_counter() - started,
    }
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    final = summary["final"]
    log.info("done in %.1f s: final f1 %.4f acc %.4f (best round %d); outputs in %s", summary["seconds"],
                final.get("f1", float("nan")), final.get("accuracy", float("nan")), best["round"], out_dir)  # fmt: skip
