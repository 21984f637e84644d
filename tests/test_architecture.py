"""The project's shape: import contracts (pyproject's [tool.importlinter]) and small modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["conf", "flows", "models", "fl_client", "fl_server", "strategies", "simulation", "gateway", "sdn",
            "devtools"]  # fmt: skip
MAX_LINES = 400


def test_import_contracts_hold():
    """flows <- models <- conf <- fl_client/fl_server <- simulation, strategies without networks, a gateway runtime
    without torch/flwr/sklearn/pandas (import-linter, which also follows imports inside functions)."""
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint) if lint.exists() else "lint-imports", "--no-cache"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout and "7 kept" in run.stdout, run.stdout[-2000:]


def test_no_module_is_much_longer_than_400_lines():
    long = {str(p.relative_to(REPO)): n for package in PACKAGES for p in (REPO / package).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES * 1.1}  # fmt: skip
    assert long == {}
