"""``python -m simulation``: one federated simulation on the default config (Hydra overrides and -m sweeps work).

    python -m simulation                                   # the defaults of conf/schema.py and conf/federated.yaml
    python -m simulation -m partition.alpha=0.1,0.5,1.0    # one job after another, each in its own folder

In a multirun, a job that fails writes its error to ``<job folder>/error.txt`` and the sweep goes on (the
sweep ends with exit status 1 if any job failed); with ``launcher.skip_done=true`` a job whose folder already
holds a finished ``metrics.json`` is skipped, so that an interrupted sweep with a fixed ``hydra.sweep.dir``
resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from conf.schema import RunSpecError, check_override_keys
from flows.errors import FlowDataError
from simulation.config import CONF_DIR, register
from simulation.federated import SimulationConfigError, run_federated

log = logging.getLogger("simulation")


FAILED_JOBS: list[str] = []


def _terminate(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def finished(out_dir: Path, attacked: bool) -> dict | None:
    """The metrics of a completed run in ``out_dir`` (with its attack report if it had attackers), else None."""
    path = out_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if "final" in metrics and (not attacked or "attack" in metrics) else None


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="federated")
def hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_config = HydraConfig.get()
    out_dir = Path(hydra_config.runtime.output_dir)
    sweeping = hydra_config.mode == RunMode.MULTIRUN
    if cfg.launcher.skip_done and finished(out_dir, cfg.attack.name != "none") is not None:
        print(f"done already, skipped: {out_dir}")
        return
    signal.signal(signal.SIGTERM, _terminate)  # unwind like Ctrl-C, so the federation is stopped on the way out
    try:
        metrics = run_federated(cfg, out_dir)
    except KeyboardInterrupt:
        print(f"interrupted: the federation was stopped; partial outputs in {out_dir}", file=sys.stderr)
        raise SystemExit(130) from None
    except (FlowDataError, SimulationConfigError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        if sweeping:  # record it and let the sweep go on
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "error.txt").write_text(f"{err}\n")
            FAILED_JOBS.append(out_dir.name)
            return
        raise SystemExit(1 if isinstance(err, RuntimeError) else 2) from None
    (out_dir / "error.txt").unlink(missing_ok=True)
    final = metrics["final"]
    shown = [f"{key} {final[key]:.4f}" for key in ("accuracy", "f1", "fed_accuracy", "fed_f1")
             if final.get(key) is not None]  # fmt: skip
    privacy = metrics.get("privacy", {})
    if privacy.get("max_epsilon") is not None:
        shown.append(f"epsilon {privacy['max_epsilon']:.3f} ({privacy['mode']}, delta {privacy.get('delta', 0):g})")
    print(f"final: {' '.join(shown)} ({metrics['wall_seconds']} s); outputs: {out_dir}")


def main() -> None:
    """``python -m simulation`` / ``botdefender-simulate``: misspelled keys fail before Hydra composes anything."""
    try:
        check_override_keys(sys.argv[1:])
    except RunSpecError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    register()
    hydra_main()
    if FAILED_JOBS:  # a multirun went on past them; its exit status still says so
        print(f"{len(FAILED_JOBS)} job(s) failed (see error.txt in each): {', '.join(FAILED_JOBS)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
