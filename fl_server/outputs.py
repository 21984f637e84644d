"""Where a run's outputs go and what they are: ``final.pt``/``best.pt`` checkpoints, ``pipeline.json`` and
``metrics.json`` (the run spec as run, every round's global metrics, client metrics, sampling and screening, the
clients that did not answer, the federated evaluation)."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from conf.schema import RunSpec, to_run_config
from fl_server.evaluation import CentralEvaluation, finite_or_none
from fl_server.federated_eval import federated_metrics
from fl_server.privacy_report import round_privacy, run_privacy
from flows.pipeline_state import PipelineState
from models.checkpoint import ModelSpec, save_checkpoint

log = logging.getLogger("flwr.botdefender.server")
RUNS_ENV = "BOTDEFENDER_RUNS_DIR"


def out_dir_of(spec: RunSpec, run_id: int) -> Path:
    """``out_dir`` of the spec (absolute), or a new folder ``<$BOTDEFENDER_RUNS_DIR or ~/botdefender-runs>/
    <UTC time>-run<id>``: never relative to the SuperLink's working directory."""
    if spec.out_dir:
        path = Path(spec.out_dir)
        if not path.is_absolute():
            raise ValueError(f"out-dir must be an absolute path (the ServerApp's working directory is the "
                             f"SuperLink's), got {spec.out_dir!r}")  # fmt: skip
    else:
        root = Path(os.environ.get(RUNS_ENV) or Path.home() / "botdefender-runs")
        path = root / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-run{run_id}"
    path.mkdir(parents=True, exist_ok=True)
    log.info("outputs: %s", path)
    return path


def write_checkpoints(out_dir: Path, model_spec: ModelSpec, final_state: dict, evaluation: CentralEvaluation,
                      state: PipelineState, num_rounds: int, graph: dict | None = None,
                      suffix: str = "") -> None:  # fmt: skip
    """``final<suffix>.pt``, ``best<suffix>.pt`` (suffix ``_<family>`` in a mixed federation), ``pipeline.json``."""
    state_json = state.to_json()
    best = evaluation.best
    save_checkpoint(out_dir / f"final{suffix}.pt", model_spec, final_state, state_json, num_rounds, graph)
    save_checkpoint(out_dir / f"best{suffix}.pt", model_spec, best["state_dict"] or final_state, state_json,
                    best["round"], graph)  # fmt: skip
    state.save(out_dir / "pipeline.json")


def missing(sampled: list[int], replies: list[dict]) -> list[int]:
    """The sampled clients (rank, or node id) without a usable reply: none within the round's timeout, or an
    error (also the one the SuperLink sends for a node that stopped answering)."""
    answered = {row["rank"] if row.get("rank") is not None else row.get("node-id") for row in replies
                if "error" not in row}  # fmt: skip
    return [client for client in sampled if client not in answered]


FAMILY_KEYS = ("nodes", "strategy", "model_spec", "test_records", "rounds", "final", "best_round")


def write_metrics(out_dir: Path, spec: RunSpec, strategy, evaluation: CentralEvaluation, *, nodes: int,
                  state: PipelineState, model_spec: ModelSpec, seconds: float, data: dict,
                  families: dict[str, dict] | None = None) -> dict:  # fmt: skip
    """``metrics.json``: the run config as run, per-round metrics and decisions, the final round's metrics; in a
    mixed federation the top level is ``model.name``'s family and ``families`` holds every family's part."""
    summary = metrics_summary(spec, strategy, evaluation, nodes=nodes, state=state, model_spec=model_spec,
                              seconds=seconds, data=data)  # fmt: skip
    if families:
        summary["families"] = {name: {k: part[k] for k in FAMILY_KEYS} for name, part in families.items()}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def metrics_summary(spec: RunSpec, strategy, evaluation: CentralEvaluation, *, nodes: int, state: PipelineState,
                    model_spec: ModelSpec, seconds: float, data: dict) -> dict:  # fmt: skip
    """The content of ``metrics.json`` for one family's strategy and evaluation."""

    def clean(metrics: dict) -> dict:
        return {k: finite_or_none(v) for k, v in metrics.items()}

    rounds = []
    previous: dict = {}
    for r in range(0, spec.simulation.num_rounds + 1):
        entry: dict = {"round": r, "global": clean(evaluation.rounds.get(r, {}))}
        if r > 0:
            entry["clients_train"] = strategy.client_train.get(r, [])
            entry["clients_evaluate"] = strategy.client_evaluate.get(r, [])
            entry["sampled_train"] = strategy.sampled["train"].get(r, [])
            entry["sampled_evaluate"] = strategy.sampled["evaluate"].get(r, [])
            for phase in ("train", "evaluate"):  # asked, but no usable reply
                entry[f"missing_{phase}"] = missing(entry[f"sampled_{phase}"], entry[f"clients_{phase}"])
            entry["federated"] = federated_metrics(entry["clients_evaluate"])
            if spec.privacy.name == "dp_sgd":
                entry["privacy"] = round_privacy(entry["clients_train"], previous)
                previous = entry["privacy"]["epsilon"]
            if hasattr(strategy, "decisions"):  # the screening wrapper: every verdict with scores and reasons
                entry["screening"] = strategy.decisions.get(r, [])
        rounds.append(entry)
    summary = {
        "run_config": to_run_config(spec),
        "privacy": run_privacy(spec, rounds, strategy),
        "nodes": nodes,
        "strategy": type(strategy).__name__,
        "data": data,
        "pipeline": {"fitted_on_records": state.info["fitted_on_records"], "model_inputs": state.n_outputs},
        "test_records": int(len(evaluation.y_test)) if evaluation.X_test is not None else 0,
        "model_spec": model_spec.to_dict(),
        "rounds": rounds,
        "final": clean(evaluation.rounds.get(spec.simulation.num_rounds, {})),
        "best_round": evaluation.best["round"],
        "seconds": seconds,
    }
    return summary
