"""End to end under flwr run (issue 4 acceptance): with sign-flipping attackers, the screening wrapper over
FedAvg ends with a higher F1 than plain FedAvg, and its report shows it rejected attackers, not benign clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = ["partition.n_clients=6", "simulation.subsample=6000", "simulation.num_rounds=4", "simulation.local_epochs=3",
       "attack=sign_flip", "attack.fraction=0.34", "attack.params.scale=3"]  # fmt: skip


def _run(tmp_path: Path, data_dir: Path, strategy: str) -> dict:
    out = tmp_path / strategy
    done = subprocess.run([sys.executable, "-m", "simulation", f"hydra.run.dir={out}", f"strategy={strategy}", *RUN],
                          cwd=REPO, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "BOTDEFENDER_DATA_DIR": str(data_dir)})  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_screening_beats_fedavg_under_sign_flipping(tmp_path, data_dir):
    plain = _run(tmp_path, data_dir, "fedavg")
    screened = _run(tmp_path, data_dir, "screening")
    f1_plain, f1_screened = plain["final"]["f1"], screened["final"]["f1"]
    print(f"final F1 under 2/6 sign-flipping attackers: FedAvg {f1_plain:.4f}, screening {f1_screened:.4f}")
    assert f1_screened > f1_plain + 0.1
    assert f1_screened > 0.75  # above the 0.71 of always answering "attack"
    report = screened["attack"]
    assert report["malicious_partitions"] and report["screening_precision"] == 1.0
    rejected = {d["client"] for r in screened["rounds"][1:] for d in r["screening"] if d["verdict"] == "reject"}
    assert rejected == set(report["malicious_partitions"])  # every attacker caught at least once, nobody else
    assert all(not r["benign_excluded"] for r in report["screening"])
    assert "screening" not in plain["rounds"][1]  # plain FedAvg has no screening decisions
