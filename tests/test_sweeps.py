"""Resumable Hydra multiruns: config resolvers, skip_done, and failed jobs recorded while the sweep goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from simulation.__main__ import finished
from simulation.config import CONF_DIR
from simulation.config_resolvers import cell_name, malicious_count
from simulation.config import specs

REPO = Path(__file__).resolve().parents[1]


def test_robust_aggregators_take_f_from_the_assumed_malicious_share():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        krum = compose("federated", overrides=["strategy=krum", "partition.n_clients=20",
                                               "strategy.assumed_malicious=0.3"])  # fmt: skip
        trimmed = compose("federated", overrides=["strategy=fedtrimmedavg"])
        screening = compose("federated", overrides=["strategy.assumed_malicious=0.25"])
    assert specs(krum)[0].strategy.params == {"num_malicious_nodes": 6}
    assert specs(trimmed)[0].strategy.params == {"beta": 0.2}
    assert specs(screening)[0].strategy.params["assumed_malicious"] == 0.25
    assert malicious_count(10, 0.2) == 2 and malicious_count(20, 0.3) == 6


def test_cell_names_merge_the_attack_free_jobs_of_every_fraction():
    assert cell_name("sign_flip", 0.2, "krum") == "sign_flip__0.2__krum"
    assert cell_name("none", 0.3, "krum") == cell_name("none", 0.2, "krum") == "none__0__krum"


def test_finished_needs_a_final_round_and_for_attacked_runs_the_attack_report(tmp_path):
    assert finished(tmp_path, attacked=False) is None
    (tmp_path / "metrics.json").write_text("{\"rounds\": []")  # cut short while writing
    assert finished(tmp_path, attacked=False) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"rounds": [], "final": {"f1": 0.9}}))
    assert finished(tmp_path, attacked=False)["final"]["f1"] == 0.9
    assert finished(tmp_path, attacked=True) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"final": {"f1": 0.9}, "attack": {}}))
    assert finished(tmp_path, attacked=True) is not None


def test_a_sweep_records_failed_jobs_skips_finished_ones_and_exits_1(tmp_path, data_dir):
    done_job = tmp_path / "alpha_0.5"
    done_job.mkdir()
    (done_job / "metrics.json").write_text(json.dumps({"final": {"f1": 0.5}}))
    args = [sys.executable, "-m", "simulation", "-m", "partition.alpha=0,0.5,-1", "launcher.skip_done=true",
            f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=alpha_${partition.alpha}"]  # fmt: skip
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BOTDEFENDER_DATA_DIR": str(data_dir)})  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"done already, skipped: {done_job}" in done.stdout
    for alpha in ("0.0", "-1.0"):  # both bad jobs ran (the first did not stop the sweep) and say why; the schema
        # types alpha as a float, so the folder names say 0.0
        assert "alpha" in (tmp_path / f"alpha_{alpha}" / "error.txt").read_text()
        assert not (tmp_path / f"alpha_{alpha}" / "flwr-home").exists()
    assert "2 job(s) failed" in done.stderr and "Traceback" not in done.stderr


def test_every_attack_file_composes_into_a_valid_attack_config():
    from fl_client.attacks.config import AttackConfig

    names = sorted(p.stem for p in (Path(CONF_DIR) / "attack").glob("*.yaml"))
    assert "absent" in names and "sign_flip" in names
    for name in names:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("federated", overrides=[f"attack={name}"])
        attack = AttackConfig.of(specs(cfg)[0].attack)
        assert attack.name == name and attack.start_round == 1, name
