"""``python -m simulation``: one federated simulation on the default config (Hydra overrides and -m sweeps work).

    python -m simulation                                   # UNSW-NB15, CNN-LSTM, Dirichlet 0.5, 10 clients, FedAvg
    python -m simulation -m partition.alpha=0.1,0.5,1.0    # one job after another, each in its own folder
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from flows.errors import FlowDataError
from simulation.centralized import CONF_DIR
from simulation.federated import SimulationConfigError, run_federated

log = logging.getLogger("simulation")


def _terminate(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="federated")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    signal.signal(signal.SIGTERM, _terminate)  # unwind like Ctrl-C, so the federation is stopped on the way out
    try:
        metrics = run_federated(cfg, out_dir)
    except KeyboardInterrupt:
        print(f"interrupted: the federation was stopped; partial outputs in {out_dir}", file=sys.stderr)
        raise SystemExit(130) from None
    except (FlowDataError, SimulationConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    final = metrics["final"]
    print(f"final: accuracy {final['accuracy']:.4f} f1 {final['f1']:.4f} ({metrics['wall_seconds']} s); "
          f"outputs: {out_dir}")  # fmt: skip


if __name__ == "__main__":
    main()
