"""The centralized benchmark command end to end (small subsample) and its one-line configuration errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_command(args: list[str], env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "simulation.centralized", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.mark.slow
def test_centralized_run_writes_metrics_table_and_plots(data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_command([
        f"hydra.run.dir={out}", "protocol=clean", "subsample=4000", "seeds=[0,1]",
        "run_models=[logreg,xgboost,cnn_lstm]", "models.cnn_lstm.params.epochs=12",
        "models.xgboost.params.n_estimators=50", "threads=2",
    ])  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "clean" and metrics["leaky"] is False and metrics["seeds"] == [0, 1]
    for name in ("logreg", "xgboost", "cnn_lstm"):
        median = metrics["median"][name]
        assert set(median) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "train_seconds", "model_bytes"}
        assert median["accuracy"] > 0.8  # real learning on real data, even on 3,200 training rows
        assert metrics["per_seed"]["0"][name]["confusion_matrix"][1][1] > 0
    assert metrics["split"]["0"]["duplicates_removed"] > 0
    assert "| cnn_lstm |" in (out / "results.md").read_text()
    for png in ("confusion_matrices.png", "roc_curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "| xgboost |" in result.stdout


def test_leaky_protocol_is_labelled(data_dir, tmp_path):
    out = tmp_path / "leaky"
    result = run_command([f"hydra.run.dir={out}", "protocol=paper_smote_first", "subsample=2000",
                          "run_models=[logreg]", "plots=false"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["leaky"] is True and "LEAKY" in metrics["leaky_reason"]
    assert "LEAKY" in (out / "results.md").read_text()


def test_missing_data_dir_is_one_clear_line(tmp_path):
    env = {"BOTDEFENDER_DATA_DIR": str(tmp_path / "nowhere")}
    result = run_command([f"hydra.run.dir={tmp_path / 'x'}", "run_models=[logreg]"], env_extra=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "data directory not found" in result.stderr and "Traceback" not in result.stderr


def test_unknown_model_and_protocol_fail_before_work(tmp_path):
    result = run_command([f"hydra.run.dir={tmp_path / 'y'}", "run_models=[svm]"])
    assert result.returncode == 2 and "run_models names ['svm']" in result.stderr
    result = run_command([f"hydra.run.dir={tmp_path / 'z'}", "protocol.name=random"])
    assert result.returncode == 2 and "unknown protocol 'random'" in result.stderr


def test_a_host_graph_model_runs_beside_flow_models_on_one_chronological_split(data_dir, tmp_path):
    out = tmp_path / "windows"
    result = run_command([f"hydra.run.dir={out}", "model=gcn", "dataset=unsw_nb15_raw", "beside=[logreg,xgboost]",
                          "graph.flows=250", "+model.params.epochs=8", "model.params.hidden=16",
                          "models.xgboost.params.n_estimators=50", "plots=false", "threads=1"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    split = metrics["split"]["0"]
    assert metrics["split_kind"] == "chronological" and split["split"] == "chronological"
    assert (split["train_windows"], split["val_windows"], split["test_windows"]) == (56, 8, 16)
    assert split["train_records"] + split["val_records"] + split["test_records"] == 20000
    for name in ("gcn", "logreg", "xgboost"):
        run = metrics["per_seed"]["0"][name]
        assert run["n"] == split["test_records"] and run["host"]["n"] == split["test_hosts"]
        assert {"host_precision", "host_recall", "host_f1"} <= set(metrics["median"][name])
    assert metrics["per_seed"]["0"]["gcn"]["epochs_run"] <= 8
    assert "| gcn |" in (out / "results.md").read_text() and "host F1" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["model=gcn"], "host graphs need host addresses"),  # the partitioned UNSW-NB15 CSV has none
    (["model=gcn", "dataset=unsw_nb15_raw", "split=random"], "read(s) host graphs: use split=chronological"),
    (["model=gcn", "dataset=unsw_nb15_raw", "protocol=clean"], "does not combine with the chronological split"),
])  # fmt: skip
def test_a_host_graph_run_that_cannot_work_fails_with_one_line(data_dir, tmp_path, args, message):
    result = run_command([f"hydra.run.dir={tmp_path / 'bad'}", *args])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
