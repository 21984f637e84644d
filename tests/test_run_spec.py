"""The run specification (conf/schema.py): one schema, one naming rule, pyproject derived from it, every key read
where it acts, misspelled keys refused with the nearest valid key, plain ``flwr run .`` working."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.common.config import fuse_dicts
from hydra import compose, initialize_config_dir

from conf.schema import (
    FederatedConfig,
    LauncherSpec,
    RunSpec,
    RunSpecError,
    check_override_keys,
    data_settings,
    from_dict,
    from_run_config,
    partition_for,
    to_run_config,
)
from simulation.config import CONF_DIR, specs
from simulation.pyproject_config import PYPROJECT, current_table, default_run_config, flat

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ["conf", "flows", "models", "fl_client", "fl_server", "strategies", "simulation", "gateway"]


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return specs(compose("federated", overrides=["out_dir=", *overrides]))


def leaves(cls: type = FederatedConfig, prefix: str = ""):
    """(dotted path, field) of every setting of the schema."""
    for f in dataclasses.fields(cls):
        hint = {g.name: g.type for g in dataclasses.fields(cls)}[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from leaves(type(default), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hint


def test_pyproject_holds_exactly_the_default_run_config():
    table = flat(current_table(PYPROJECT.read_text(encoding="utf-8")))
    assert table == default_run_config()
    assert from_run_config(table) == composed()[0]


def test_flwr_run_and_python_m_simulation_resolve_the_same_run_config():
    """``flwr run .`` fuses pyproject's table with no overrides; ``python -m simulation`` passes the composed spec.
    Flower's own fusing (unknown keys refused) of the launcher's values gives the same spec, out_dir aside."""
    spec, _ = composed()
    pyproject = flat(current_table(PYPROJECT.read_text(encoding="utf-8")))
    launched = {**to_run_config(spec), "out-dir": "/abs/run"}
    fused = fuse_dicts(pyproject, launched, check_keys=True)
    assert from_run_config(fused) == dataclasses.replace(spec, out_dir="/abs/run")
    assert from_run_config(pyproject) == spec


def non_default(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value / 2 if value else 0.25
    if isinstance(value, dict):
        return {"x": 1}
    return value + "_x" if value else "/abs/elsewhere"


def test_every_setting_survives_the_run_config_with_a_non_default_value():
    spec = RunSpec()
    for section in dataclasses.fields(RunSpec):
        value = getattr(spec, section.name)
        if dataclasses.is_dataclass(value):
            changes = {f.name: non_default(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if section.name == "partition":
                changes.update(scheme="iid", by="label", alpha=0.3)  # values the partitioner accepts
            if section.name == "pipeline":
                changes["nonfinite"] = "impute"
            if section.name == "attack":
                changes.update(fraction=0.3, start_round=2, end_round=5)
            if section.name == "graph":
                changes["window"] = "seconds"
            if section.name == "deploy":
                changes["central_eval"] = "file"
            if section.name == "privacy":
                changes.update(name="central", delta=1e-6, accountant="prv", clipping="server")
            if section.name == "strategy":
                changes["name"] = "fedavg"  # what privacy=central needs
            setattr(spec, section.name, dataclasses.replace(value, **changes))
        else:
            setattr(spec, section.name, non_default(value))
    flat_config = to_run_config(spec)
    assert all(isinstance(v, (bool, int, float, str)) for v in flat_config.values())
    assert from_run_config(flat_config) == spec


# A setting acts where the code reads it. Settings whose value only feeds Hydra interpolations in conf/ (and so
# reaches the run through another key) are listed with the key they reach.
INTERPOLATION_ONLY = {"strategy.assumed_malicious": "strategy.params (krum, multikrum, fedtrimmedavg, screening)"}


def test_every_setting_is_read_by_the_code_that_acts_on_it():
    sources = "\n".join(p.read_text(encoding="utf-8") for package in PRODUCT for p in (REPO / package).rglob("*.py"))
    unread = [path for path, f, _ in leaves() if path not in INTERPOLATION_ONLY
              and not re.search(rf"\.{f.name}\b", sources)]  # fmt: skip
    assert unread == []
    assert "krum" in (REPO / "conf/strategy/krum.yaml").read_text() and "assumed_malicious" in (
        REPO / "conf/strategy/krum.yaml").read_text()  # fmt: skip


def test_the_keys_a_federated_run_used_to_drop_reach_it(data_dir):
    from models.checkpoint import ModelSpec

    spec, _ = composed("dataset=iot23", "model.params.kernel_size=5", "model.params.pool=3",
                       "model.params.readout=mean", "model.params.lstm_layers=2", "dataset.bad_records=skip",
                       "pipeline.nonfinite=impute")  # fmt: skip
    settings = data_settings(spec)
    assert (settings.file, settings.bad_records) == ("CTU-IoT-Malware-Capture-34-1.conn.log.labeled", "skip")
    model = ModelSpec(spec.model.name, 40, dict(spec.model.params)).build()
    assert model.conv.kernel_size == (5,) and model.pool.kernel_size == 3
    assert model.lstm.num_layers == 2 and model.readout == "mean"
    assert spec.pipeline.nonfinite == "impute"
    from flows.run_split import load_split

    train, test = load_split(settings)
    assert len(train) + len(test) == 23_145  # the Mirai capture the config names, not the first file of the folder


def test_the_pipeline_settings_reach_the_federated_fit(unsw_table):
    from fl_client.statistics import statistics_records
    from fl_server.statistics import fit_pipeline_state

    spec, _ = composed("pipeline.nonfinite=impute", "pipeline.min_category_count=1000", "pipeline.log_transform=false")
    table = unsw_table.subset(list(range(5000)))
    state = fit_pipeline_state([statistics_records(table, spec.pipeline.log_transform, 0)], spec.pipeline)
    assert state.nonfinite == "impute" and state.log_transform is False
    assert all(len(v) < 5 for v in state.vocabularies.values())  # rare categories merged into <unknown>


def test_the_launcher_settings_reach_the_local_federation(monkeypatch, tmp_path, data_dir):
    from simulation import federated

    seen: dict = {}

    class RunResultStub:
        status, seconds, log = "failed:stub", 0.0, ""

    class FakeFederation:
        left: list = []

        def __init__(self, home, env_extra=None, ray_tmp_parent="/tmp"):
            seen.update(env=env_extra, ray_tmp=str(ray_tmp_parent))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def run(self, values, *, num_supernodes, client_cpus, timeout, on_line=None):
            seen.update(values=values, nodes=num_supernodes, cpus=client_cpus, timeout=timeout)
            return RunResultStub()

    monkeypatch.setattr(federated, "LocalFederation", FakeFederation)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("federated", overrides=["partition.n_clients=4",
                                              "launcher.client_cpus=0.5", "launcher.timeout=77",
                                              "launcher.ray_tmpdir=/tmp/bdt", "simulation.subsample=3000"])  # fmt: skip
    with pytest.raises(RuntimeError, match="failed:stub"):
        federated.run_federated(cfg, tmp_path)
    assert (seen["nodes"], seen["cpus"], seen["timeout"], seen["ray_tmp"]) == (4, 0.5, 77.0, "/tmp/bdt")
    assert from_run_config(seen["values"]).partition.n_clients == 4
    assert seen["values"]["out-dir"] == str(tmp_path.resolve())
    assert not any(key.startswith("launcher") for key in seen["values"])  # launcher settings stay in the launcher
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        explicit = compose("federated", overrides=[f"out_dir={tmp_path}"])
    with pytest.raises(federated.SimulationConfigError, match="set hydra.run.dir"):
        federated.check_config(explicit)  # the output folder has one name here: Hydra's


@pytest.mark.parametrize("override, nearest", [
    ("partition.alhpa=0.1", "partition.alpha"),
    ("simulation.num_round=3", "simulation.num_rounds"),
    ("stratgy.name=fedavg", "strategy"),
    ("launcher.skipdone=true", "launcher.skip_done"),
])  # fmt: skip
def test_a_misspelled_key_fails_before_anything_starts_naming_the_nearest_key(override, nearest, tmp_path):
    run = subprocess.run([sys.executable, "-m", "simulation", f"hydra.run.dir={tmp_path}", override],
                         capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    key = override.split("=")[0]
    assert f"'{key}'" in lines[0] and f"'{nearest}'" in lines[0]
    assert not (tmp_path / "metrics.json").exists()


def test_unknown_keys_and_bad_values_in_a_run_config_or_a_config_file_are_one_line_errors():
    with pytest.raises(RunSpecError, match=r"'partition.alhpa'.*'partition.alpha'"):
        from_run_config({"partition.alhpa": 0.1})
    with pytest.raises(RunSpecError, match="simulation.num_rounds: expected an integer"):
        from_dict({"simulation": {"num_rounds": "many"}})
    with pytest.raises(RunSpecError, match="not a JSON object"):
        from_run_config({"strategy.params": "{oops"})
    with pytest.raises(RunSpecError, match="attack.fraction"):
        from_dict({"attack": {"fraction": 1.5}})
    with pytest.raises(RunSpecError, match="unknown key 'model.parms'"):
        from_dict({"model": {"parms": {}}})
    check_override_keys(["partition=iid", "+x=1", "hydra.run.dir=/tmp", "strategy.params.beta=0.1", "-m"])


def test_a_centralized_only_model_in_a_federated_run_fails_with_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "simulation", f"hydra.run.dir={tmp_path}", "model=xgboost"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert run.returncode == 2
    assert "model=xgboost is a centralized-only baseline" in run.stderr and "cnn_lstm" in run.stderr


def test_every_group_option_of_conf_composes_on_the_schema():
    for group in ("dataset", "partition", "model", "strategy", "attack"):
        for path in sorted((REPO / "conf" / group).glob("*.yaml")):
            if group == "model" and path.stem in ("logreg", "random_forest", "xgboost"):
                continue  # centralized-only baselines: refused by the federated checks (tested above)
            spec, launcher = composed(f"{group}={path.stem}")
            assert isinstance(spec, RunSpec) and isinstance(launcher, LauncherSpec)


def test_partitioning_uses_the_federations_node_count():
    spec = RunSpec()
    assert partition_for(spec, 2).n_clients == 2 and partition_for(spec, 2).alpha == spec.partition.alpha


@pytest.mark.slow
def test_plain_flwr_run_with_only_rounds_and_subsample_overridden_completes(tmp_path, data_dir):
    """``flwr run .`` with pyproject's defaults (Flower's default federation of 2 SuperNodes, which the run
    reports against partition.n_clients 10) and out_dir left empty: outputs go to $BOTDEFENDER_RUNS_DIR."""
    from simulation.flower_runtime import LocalFederation

    runs = tmp_path / "runs"
    env = {"BOTDEFENDER_RUNS_DIR": str(runs), "BOTDEFENDER_DATA_DIR": str(data_dir)}
    with LocalFederation(tmp_path / "flwr-home", env_extra=env) as federation:
        result = federation.run({"simulation.num-rounds": 1, "simulation.subsample": 3000}, num_supernodes=None,
                                client_cpus=None, timeout=900)  # fmt: skip
    assert result.status == "finished:completed", result.log[-3000:]
    assert not federation.left
    (run_dir,) = list(runs.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["nodes"] == 2 and metrics["run_config"]["simulation.num-rounds"] == 1
    assert metrics["run_config"]["out-dir"] == str(run_dir)  # the folder the ServerApp chose is on record
    assert "the federation has 2 nodes but partition.n_clients is 10" in result.log
    assert (run_dir / "final.pt").is_file() and len((run_dir / "progress.jsonl").read_text().splitlines()) == 2


def test_the_host_graph_windowing_is_a_run_setting_recorded_in_checkpoints(tmp_path):
    """`graph.*` reaches the run config, clients cut their windows with it, checkpoints record it for the export."""
    import torch

    from flows.graphs.settings import GraphSettings
    from models.checkpoint import CheckpointError, ModelSpec, load_checkpoint, save_checkpoint

    spec = from_run_config({**to_run_config(RunSpec()), "graph.window": "seconds", "graph.seconds": 30.0})
    assert spec.graph == GraphSettings(window="seconds", seconds=30.0)
    from flows.pipeline_state import PipelineState

    names = [f"f{i}" for i in range(8)]
    state = PipelineState(numeric=names, categorical=[], mean=[0.0] * 8, std=[1.0] * 8, vocabularies={},
                          log_transform=False)  # fmt: skip
    model_spec = ModelSpec("cnn_lstm", state.n_outputs, {})
    torch.manual_seed(0)
    weights = model_spec.build().state_dict()
    save_checkpoint(tmp_path / "a.pt", model_spec, weights, state.to_json(), 1, dataclasses.asdict(spec.graph))
    assert load_checkpoint(tmp_path / "a.pt").graph == dataclasses.asdict(spec.graph)
    save_checkpoint(tmp_path / "b.pt", model_spec, weights, state.to_json(), 1)
    assert load_checkpoint(tmp_path / "b.pt").graph is None
    with pytest.raises(CheckpointError, match="graph: unknown setting"):
        save_checkpoint(tmp_path / "c.pt", model_spec, weights, state.to_json(), 1, {"windows": 3})
