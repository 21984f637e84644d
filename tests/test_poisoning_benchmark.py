"""benchmarks/poisoning.py end to end on a tiny grid: one Hydra multirun, resumable, reported as a table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_grid_runs_as_one_multirun_resumes_and_reports(tmp_path, data_dir):
    args = [sys.executable, "benchmarks/poisoning.py", "--attacks", "sign_flip", "--defences", "fedavg", "screening",
            "--fractions", "0.2", "--rounds", "1", "--subsample", "4000", "--results", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "BOTDEFENDER_DATA_DIR": str(data_dir)}
    readme = (REPO / "README.md").read_text()
    first = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    cells = sorted(p.stem for p in (tmp_path / "cells").glob("*.json"))
    assert cells == ["absent__0.2__fedavg", "none__0__fedavg", "none__0__screening", "sign_flip__0.2__fedavg",
                     "sign_flip__0.2__screening"]  # the grid, then the honest-only reference  # fmt: skip
    screened = json.loads((tmp_path / "cells" / "sign_flip__0.2__screening.json").read_text())
    assert 0.0 <= screened["f1"] <= 1.0 and "screening_recall" in screened
    assert "| sign_flip | 0.2 |" in first.stdout and (tmp_path / "heatmap.png").stat().st_size > 0
    assert "| absent (reference: honest clients only) | 0.2 |" in first.stdout
    assert first.stdout.count("round 1/1:") == 5  # each job ran once (the reference sweep skips none__0__fedavg)
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "round 1/1" not in again.stdout
    assert again.stdout.count("done already, skipped") == 4 + 2  # the grid's jobs, then the reference's
    assert (REPO / "README.md").read_text() == readme  # only the default results folder goes into the README
