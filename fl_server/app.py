"""Flower ServerApp (Message API): federated feature pipeline, configured strategy, central evaluation, outputs.

The run's settings are the run spec (:mod:`conf.schema`) read back from the Flower run config. Steps:

1. wait for the nodes; query every node for the feature statistics of its training rows and fit the pipeline
   state from their merge (no raw record leaves a client);
2. build the model family's global model and the held-out test examples;
3. broadcast the pipeline state and the model spec (JSON in the train/evaluate ConfigRecord) and run the
   configured Flower strategy (:mod:`strategies.registry`) for ``simulation.num_rounds``, evaluating the global
   model on the held-out split after every round (and before the first);
4. write ``final.pt``/``best.pt``, ``pipeline.json``, ``metrics.json`` and ``progress.jsonl`` into the out dir;
5. with ``deploy.rollout``: export, sign and send the final model (and every ``deploy.rollout_every`` rounds'
   model) to the gateways as a bundle (:mod:`fl_server.rollout`).

Evaluation: every round the clients evaluate the global model on their own validation rows (federated evaluation,
``fed_*`` metrics, :mod:`fl_server.federated_eval`); the server also scores it on the held-out split of the run's
data (``deploy.central_eval=split``, simulation), on a file of its own (``file``) or not at all (``none``: a
deployment whose server holds no data).

A mixed federation (``model.families``, or gateways whose node configs name different families): every node says
its family in the statistics reply; the server keeps one global model per family and runs steps 2-3 for each
family in turn over that family's nodes only (its own strategy instance: its own screening and aggregation),
writing ``final_<family>.pt``/``best_<family>.pt`` and ``metrics.json["families"][<family>]``; the top level of
``metrics.json`` is ``model.name``'s family. Every family shares the one pipeline state and the one split.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from conf.schema import RunSpec, data_settings, from_run_config
from fl_server.evaluation import CentralEvaluation
from fl_server.nodes import NodeSubsetGrid, group_by_family, query_nodes, wait_for_nodes
from fl_server.outputs import metrics_summary, out_dir_of, write_checkpoints, write_metrics
from fl_server.rollout import periodic_rollout, rollout_checkpoint
from fl_server.root_update import root_update_fn
from fl_server.federated_eval import federated_metrics
from fl_server.privacy_report import round_epsilon
from flows.loader import load_file
from flows.pipeline_state import PipelineState
from flows.run_split import holdout_site_table, load_split
from models.checkpoint import ModelSpec
from strategies.registry import build_strategy

log = logging.getLogger("flwr.botdefender.server")

app = ServerApp()


def family_spec(spec: RunSpec, family: str) -> RunSpec:
    """``spec`` for one family of a mixed federation: ``model.params`` belong to ``model.name`` only."""
    params = dict(spec.model.params) if family == spec.model.name else {}
    return dataclasses.replace(spec, model=dataclasses.replace(spec.model, name=family, params=params))


def global_model(spec: RunSpec, state: PipelineState) -> tuple[ModelSpec, torch.nn.Module]:
    """The model spec (family, inputs, complete parameters) and its initial network, seeded by the run's seed."""
    model_spec = ModelSpec(spec.model.name, state.n_outputs, dict(spec.model.params))
    torch.manual_seed(spec.seed)
    return model_spec, model_spec.build()


def central_evaluation(spec: RunSpec, state: PipelineState, model_spec: ModelSpec, model: torch.nn.Module,
                       out_dir, label: str = "", fresh: bool = True) -> tuple[CentralEvaluation, dict]:  # fmt: skip
    """The evaluation on the held-out split and the held-out site if any (never sent to clients), on the server's
    own file (``deploy.central_eval=file``) or none (``none``: federated evaluation only), and what the run's data
    was."""
    family = model_spec.model_family
    mode = spec.deploy.central_eval
    if mode != "split":
        X_test, y_test, data = None, np.zeros(0, np.int64), {"central_eval": mode}
        if mode == "file":
            test = load_file(spec.dataset.name, spec.deploy.central_file, spec.dataset.bad_records)  # type: ignore[arg-type]
            X_test, y_test = family.batches(test, state, spec.graph)
            data.update(central_file=spec.deploy.central_file, test_records=len(test), skipped=dict(test.skipped),
                        notes=list(test.notes))  # fmt: skip
        return CentralEvaluation(family, model, X_test, np.asarray(y_test), state.threshold,
                                 spec.simulation.num_rounds, out_dir, None, label, fresh), data  # fmt: skip
    settings = data_settings(spec)
    train, test = load_split(settings)
    X_test, y_test = family.batches(test, state, spec.graph)
    data = {"train_records": len(train), "test_records": len(test), "skipped": dict(test.skipped),
            "notes": list(test.notes), "split": settings.split}  # fmt: skip
    holdout = None
    site = holdout_site_table(settings)
    if site is not None:
        X_site, y_site = family.batches(site, state, spec.graph)
        holdout = (X_site, np.asarray(y_site))
        data.update(holdout_site=settings.holdout_site, holdout_site_records=len(site))
    data["train_sites"] = sorted(set(train.sites().tolist()))
    return CentralEvaluation(family, model, X_test, np.asarray(y_test), state.threshold,
                             spec.simulation.num_rounds, out_dir, holdout, label, fresh), data  # fmt: skip


def configured_strategy(spec: RunSpec, nodes: list[int], ranks: dict[int, int], state: PipelineState,
                        model_spec: ModelSpec, out_dir, updates: str = "updates"):  # fmt: skip
    strategy = build_strategy(spec.strategy.name, dict(spec.strategy.params), n_nodes=len(nodes),
                              fraction_train=spec.strategy.fraction_train,
                              fraction_evaluate=spec.strategy.fraction_evaluate, min_nodes=spec.strategy.min_nodes,
                              seed=spec.seed, node_ranks=ranks,
                              server_update_fn=root_update_fn(spec, state, model_spec))  # fmt: skip
    log.info("strategy %s", type(strategy).__name__)
    if spec.simulation.save_updates:
        if hasattr(strategy, "updates_dir"):
            strategy.updates_dir = out_dir / updates
        else:
            log.warning("save-updates: only the screening strategy keeps update vectors; nothing will be saved")
    return strategy


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    spec = from_run_config(context.run_config)
    out_dir = out_dir_of(spec, context.run_id)
    spec = dataclasses.replace(spec, out_dir=str(out_dir))  # metrics.json records where the outputs went
    names = spec.model.family_names()
    mixed = len(names) > 1

    nodes = wait_for_nodes(grid, spec.simulation.min_nodes, spec.simulation.node_wait, spec.partition.n_clients)
    log.info("%d node(s) connected", len(nodes))
    state, ranks, families = query_nodes(grid, nodes, spec.pipeline, spec.simulation.round_timeout,
                                         min_replies=spec.simulation.min_nodes)  # fmt: skip
    groups = group_by_family(nodes, families, names) if mixed else {spec.model.name: nodes}
    parts: dict[str, dict] = {}
    for i, (family, members) in enumerate(groups.items()):
        if mixed:
            log.info("family %s: %d node(s)", family, len(members))
        parts[family] = train_family(grid, family_spec(spec, family), members, ranks, state, out_dir, mixed, i == 0)
    primary = parts.get(spec.model.name) or next(iter(parts.values()))
    summary = write_metrics(out_dir, primary["spec"], primary["strategy"], primary["evaluation"],
                            nodes=len(primary["nodes"]), state=state, model_spec=primary["model_spec"],
                            seconds=time.perf_counter() - started, data=primary["data"],
                            families={f: p["summary"] for f, p in parts.items()} if mixed else None)  # fmt: skip
    for family, part in parts.items():
        final = part["summary"]["final"]
        host = f" host f1 {final['host_f1']:.4f}" if final.get("host_f1") is not None else ""
        if part["summary"]["privacy"].get("max_epsilon") is not None:
            priv = part["summary"]["privacy"]
            log.info("privacy (%s): epsilon %.3f at delta %g (the largest of any client)%s", priv["mode"],
                     priv["max_epsilon"], priv.get("delta", float("nan")),
                     f"; {priv['declined_rounds']} declined round(s)" if priv.get("declined_rounds") else "")  # fmt: skip
        log.info("done in %.1f s: %sfinal f1 %.4f acc %.4f%s (best round %d); outputs in %s", summary["seconds"],
                 f"{family}: " if mixed else "", final.get("f1") or float("nan"),
                 final.get("accuracy") or float("nan"), host, part["summary"]["best_round"], out_dir)  # fmt: skip


def train_family(grid: Grid, spec: RunSpec, nodes: list[int], ranks: dict[int, int], state: PipelineState,
                 out_dir, mixed: bool, first: bool) -> dict:  # fmt: skip
    """One family's global model trained over its nodes for every round, evaluated, checkpointed."""
    rounds = spec.simulation.num_rounds
    label = spec.model.name if mixed else ""
    model_spec, model = global_model(spec, state)
    evaluation, data = central_evaluation(spec, state, model_spec, model, out_dir, label, fresh=first)
    strategy = configured_strategy(spec, nodes, ranks, state, model_spec, out_dir,
                                   f"updates_{label}" if mixed else "updates")  # fmt: skip
    evaluation.federated = lambda r: {**federated_metrics(strategy.client_evaluate.get(r, [])),
                                      **round_epsilon(spec, strategy, r)}  # fmt: skip
    rollouts: list[dict] = []
    if spec.deploy.rollout and spec.deploy.rollout_every:
        evaluation.round_hooks.append(periodic_rollout(grid, nodes, spec, model_spec, state, out_dir, label,
                                                       rollouts))  # fmt: skip
    broadcast = ConfigRecord({"pipeline-state": state.to_json(), "model-spec": model_spec.to_json()})
    result = strategy.start(grid=NodeSubsetGrid(grid, nodes) if mixed else grid,
                            initial_arrays=ArrayRecord(model.state_dict()), num_rounds=rounds,
                            train_config=broadcast, evaluate_config=ConfigRecord(dict(broadcast)),
                            evaluate_fn=evaluation, timeout=spec.simulation.round_timeout)  # fmt: skip
    write_checkpoints(out_dir, model_spec, result.arrays.to_torch_state_dict(), evaluation, state, rounds,
                      dataclasses.asdict(spec.graph), f"_{label}" if mixed else "")  # fmt: skip
    if spec.deploy.rollout:
        suffix = f"_{label}" if mixed else ""
        rollouts.append(rollout_checkpoint(grid, nodes, spec, out_dir / f"final{suffix}.pt", out_dir, f"final{suffix}"))
        data["rollout"] = rollouts
    summary = metrics_summary(spec, strategy, evaluation, nodes=len(nodes), state=state, model_spec=model_spec,
                              seconds=0.0, data=data)  # fmt: skip
    return {"spec": spec, "strategy": strategy, "evaluation": evaluation, "model_spec": model_spec, "data": data,
            "nodes": nodes, "summary": summary}
