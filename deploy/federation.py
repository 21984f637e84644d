"""``flwr run`` of the project app against a deployed SuperLink, and the run's final status.

The app is staged as :mod:`simulation.app_source` does it (the project's packages and pyproject.toml only), so a
virtual environment or data inside the checkout never reaches the bundle. ``flwr run --stream`` exits 0 even
when the ServerApp fails (docs/flower-1.42-notes.md): the status comes from ``flwr ls --format json``.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deploy import commands
from simulation.app_source import stage_app
from simulation.flower_runtime import stream_lines

STARTED = re.compile(r"Successfully started run (\d+)")
SMALL_RUN = {"dataset.name": "captures", "dataset.bad-records": "skip", "partition.scheme": "by_site",
             "partition.n-clients": 3, "simulation.num-rounds": 3, "simulation.local-epochs": 1,
             "simulation.batch-size": 64, "simulation.min-nodes": 2, "strategy.min-nodes": 2,
             "simulation.round-timeout": 60.0, "simulation.node-wait": 60.0,
             "deploy.central-eval": "none"}  # fmt: skip  the server holds no data: federated evaluation only


@dataclass
class RunResult:
    status: str
    seconds: float
    log: str
    run_id: str


def server_run_config(captures: tuple[str, ...], out_dir: Path, overrides: dict | None = None) -> dict:
    """A small run config for the gateways' ``captures``: the server reads no data (federated evaluation only);
    ``dataset.file`` names the captures for the record."""
    return {**SMALL_RUN, "dataset.file": ",".join(captures), "out-dir": str(Path(out_dir).resolve()),
            **(overrides or {})}  # fmt: skip


def run_app(env: dict, app_dir: Path, run_config: dict, timeout: float, connection: str = commands.CONNECTION,
            on_line: Callable[[str], None] | None = None, cwd: Path | None = None) -> RunResult:  # fmt: skip
    """Stage the app into ``app_dir``, ``flwr run`` it to the end (killed after ``timeout`` s) and read its status."""
    app = stage_app(app_dir)
    command = commands.run_command(app, run_config, connection)
    lines, seconds = stream_lines(command, env, cwd or app, timeout, on_line)
    found = [m.group(1) for m in map(STARTED.search, lines) if m]
    run_id = found[-1] if found else ""
    listing = subprocess.run([commands.program("flwr"), "ls", connection, "--format", "json"]
                             + (["--run-id", run_id] if run_id else []), env=env, cwd=cwd or app,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    try:
        status = str(json.loads(listing.stdout)["runs"][-1]["status"])
    except (ValueError, KeyError, IndexError):
        status = f"unknown (flwr ls: {listing.stdout.strip()[:300]} {listing.stderr.strip()[:300]})"
    if seconds >= timeout:
        status = f"timed out after {timeout:.0f} s ({status})"
    return RunResult(status=status, seconds=seconds, log="\n".join(lines) + "\n", run_id=run_id)
