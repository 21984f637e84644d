"""Federated evaluation: clients' validation rows aggregated by examples; a server that holds no data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from fl_server.federated_eval import federated_metrics
from fl_server.outputs import missing

REPO = Path(__file__).resolve().parents[1]


def _row(n, loss, acc, tp, fp, fn, tn, **extra):
    return {"num-examples": n, "eval_loss": loss, "eval_accuracy": acc, "eval_tp": tp, "eval_fp": fp,
            "eval_fn": fn, "eval_tn": tn, **extra}  # fmt: skip


def test_loss_and_accuracy_weigh_by_examples_and_f1_sums_the_counts():
    rows = [_row(100, 0.2, 0.9, 40, 5, 5, 50, rank=0), _row(300, 0.6, 0.5, 10, 100, 50, 140, rank=1)]
    out = federated_metrics(rows)
    assert out["fed_examples"] == 400 and out["fed_clients"] == 2 and out["fed_clients_failed"] == 0
    assert out["fed_loss"] == pytest.approx((100 * 0.2 + 300 * 0.6) / 400)
    assert out["fed_accuracy"] == pytest.approx((100 * 0.9 + 300 * 0.5) / 400)
    precision, recall = 50 / 155, 50 / 105
    assert out["fed_precision"] == pytest.approx(precision) and out["fed_recall"] == pytest.approx(recall)
    assert out["fed_f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert out["fed_positives"] == 105


def test_errors_empty_and_non_finite_replies_are_left_out_and_counted():
    rows = [_row(100, 0.2, 0.9, 40, 5, 5, 50), {"error": "node died", "rank": 3}, _row(0, 0.0, 0.0, 0, 0, 0, 0),
            _row(10, float("nan"), 0.5, 1, 1, 1, 7), _row(10, 0.1, True, 1, 1, 1, 7)]  # fmt: skip
    out = federated_metrics(rows)
    assert out["fed_clients"] == 1 and out["fed_clients_failed"] == 4 and out["fed_examples"] == 100
    assert out["fed_f1"] == pytest.approx(2 * 40 / (2 * 40 + 5 + 5))


def test_no_usable_reply_gives_counts_only_and_replies_without_counts_give_no_f1():
    assert federated_metrics([]) == {"fed_clients": 0, "fed_clients_failed": 0, "fed_examples": 0}
    out = federated_metrics([{"num-examples": 5, "eval_loss": 0.3, "eval_accuracy": 0.8}])
    assert out["fed_loss"] == pytest.approx(0.3) and "fed_f1" not in out


def test_missing_names_the_sampled_clients_without_a_usable_reply():
    replies = [{"rank": 0, "node-id": 11}, {"rank": None, "node-id": 977}, {"rank": 2, "node-id": 13, "error": "x"}]
    assert missing([0, 1, 2, 977, 978], replies) == [1, 2, 978]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_server_without_data_judges_the_model_by_federated_evaluation(tmp_path, data_dir):
    """deploy.central_eval=none: no central test set is read; every round's metrics.json entry and progress line
    hold the federated evaluation of the clients' validation rows."""
    from devtools.process_tree import run_watched

    out_dir = tmp_path / "out"
    args = [f"hydra.run.dir={out_dir}", "partition.n_clients=3", "simulation.subsample=3000",
            "simulation.num_rounds=2", "simulation.local_epochs=5", "simulation.batch_size=32",
            "simulation.val_fraction=0.2", "deploy.central_eval=none"]  # fmt: skip
    env = {**os.environ, "BOTDEFENDER_DATA_DIR": str(data_dir), "PATH": os.pathsep.join(("/usr/bin", "/bin"))}
    run = run_watched([sys.executable, "-m", "simulation", *args], cwd=REPO, log_file=tmp_path / "run.log",
                      env=env, timeout=360, interval=0.5)  # fmt: skip
    assert run.returncode == 0, run.output[-3000:]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["data"] == {"central_eval": "none"} and metrics["test_records"] == 0
    assert metrics["rounds"][0]["global"].get("f1") is None  # nothing central was scored
    for entry in metrics["rounds"][1:]:
        fed = entry["federated"]
        assert fed["fed_clients"] == 3 and fed["fed_clients_failed"] == 0 and entry["missing_train"] == []
        assert fed["fed_examples"] == sum(c["num-examples"] for c in entry["clients_evaluate"]) > 0
        assert 0.0 < fed["fed_f1"] <= 1.0 and entry["global"]["fed_f1"] == pytest.approx(fed["fed_f1"])
    progress = [json.loads(line) for line in (out_dir / "progress.jsonl").read_text().splitlines()]
    assert [p["round"] for p in progress] == [0, 1, 2] and all("fed_f1" in p for p in progress[1:])
    assert metrics["best_round"] in (1, 2)
    print("federated f1 per round:", [round(e["federated"]["fed_f1"], 4) for e in metrics["rounds"][1:]])


def test_a_server_file_is_the_central_test_set_with_central_eval_file(data_dir, tmp_path):
    """deploy.central_eval=file: the server scores the global model on a labelled capture of its own (read with
    the run's reader), not on a split of the run's data set."""
    import dataclasses

    import torch
    from flwr.app import ArrayRecord

    from conf.schema import DatasetSpec, DeploySpec, RunSpec
    from fl_server.app import central_evaluation, global_model
    from flows.loader import load_file
    from flows.pipeline import FeaturePipeline, PipelineConfig

    capture = data_dir / "iot-23" / "CTU-IoT-Malware-Capture-34-1.conn.log.labeled"
    table = load_file("iot-23", capture)
    state = FeaturePipeline(PipelineConfig()).fit(table).state_
    spec = dataclasses.replace(RunSpec(), dataset=DatasetSpec(name="iot-23"),
                               deploy=DeploySpec(central_eval="file", central_file=str(capture)))  # fmt: skip
    torch.set_num_threads(1)
    model_spec, model = global_model(spec, state)
    evaluation, data = central_evaluation(spec, state, model_spec, model, tmp_path)
    assert data["central_eval"] == "file" and data["test_records"] == len(table) == len(evaluation.y_test)
    metrics = evaluation(0, ArrayRecord(model.state_dict()))
    assert 0.0 <= metrics["f1"] <= 1.0 and "fed_f1" not in metrics
    none_spec = dataclasses.replace(spec, deploy=DeploySpec(central_eval="none"))
    evaluation, data = central_evaluation(none_spec, state, model_spec, model, tmp_path)
    assert data == {"central_eval": "none"} and evaluation.X_test is None
    assert dict(evaluation(0, ArrayRecord(model.state_dict()))) == {}
