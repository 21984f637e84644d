"""One federated simulation from a Hydra config: check it, run the Flower app on Ray, report and plot.

Checks that can fail fail before anything starts (unknown strategy, alpha <= 0, a missing data folder, more
clients than records). The run itself is ``flwr run`` on a private SuperLink owned by
:class:`simulation.flower_runtime.LocalFederation`, which stops everything it started on the way out.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fl_client.attacks.config import AttackConfig
from fl_client.data import partition_run_config
from flows.loader import resolve_data_dir
from flows.partitioning import PartitionConfig, class_histogram, partition_from_config
from flows.run_split import DataSettings, load_split
from simulation import config_resolvers
from simulation.flower_runtime import LocalFederation, check_ray_tmp_parent
from strategies.registry import StrategyConfigError, check_strategy

log = logging.getLogger(__name__)
config_resolvers.register()  # before any federated config is composed (the configs use ${bd.*})
ROUND_LINE = re.compile(r"round \d+/\d+: global .*")
MODEL_KEYS = {"conv_channels": "model.conv-channels", "lstm_hidden": "model.lstm-hidden", "dense": "model.dense",
              "dropout": "model.dropout"}  # fmt: skip


class SimulationConfigError(ValueError):
    """A configuration the simulation refuses before starting anything."""


def partition_config(cfg: DictConfig) -> PartitionConfig:
    fields = {k: cfg.partition[k] for k in PartitionConfig.__dataclass_fields__ if k in cfg.partition}
    return PartitionConfig(**fields)


def data_settings(cfg: DictConfig) -> DataSettings:
    """The rows of the run (data folder checked here: a missing one fails before anything starts)."""
    data_dir = resolve_data_dir(cfg.dataset.data_dir)
    return DataSettings(data_dir=str(data_dir.resolve()), dataset=cfg.dataset.name,
                        subsample=int(cfg.simulation.subsample), test_size=float(cfg.simulation.test_size),
                        seed=int(cfg.seed), root_size=int(cfg.simulation.get("root_size", 0)))  # fmt: skip


def attack_config(cfg: DictConfig) -> AttackConfig:
    """The run's attack (the ``attack`` config group; none when the config has no such group)."""
    if "attack" not in cfg:
        return AttackConfig()
    params = OmegaConf.to_container(cfg.attack.params, resolve=True) if cfg.attack.get("params") else {}
    return AttackConfig(name=str(cfg.attack.name), fraction=float(cfg.attack.fraction),
                        start_round=int(cfg.attack.start_round), end_round=int(cfg.attack.end_round),
                        params=dict(params))  # type: ignore[arg-type]  # fmt: skip


def check_config(cfg: DictConfig) -> tuple[Path, PartitionConfig, DataSettings]:
    """Everything that can be checked before launching; raises SimulationConfigError with one clear line."""
    try:
        partition = partition_config(cfg)
    except ValueError as err:
        raise SimulationConfigError(f"partition: {err}") from None
    try:
        check_strategy(str(cfg.strategy.name), strategy_params(cfg), partition.n_clients,
                       float(cfg.strategy.fraction_train), float(cfg.strategy.fraction_evaluate),
                       min(int(cfg.strategy.min_nodes), partition.n_clients))  # fmt: skip
    except StrategyConfigError as err:
        raise SimulationConfigError(str(err)) from None
    uses_fltrust = "fltrust" in (str(cfg.strategy.name), str(strategy_params(cfg).get("inner", "")))
    if uses_fltrust and int(cfg.simulation.get("root_size", 0)) <= 0:
        raise SimulationConfigError("strategy fltrust needs a server root dataset: set simulation.root_size "
                                    "(records carved from the held-out split, e.g. 200)")  # fmt: skip
    try:
        attack_config(cfg)
    except ValueError as err:
        raise SimulationConfigError(f"attack: {err}") from None
    try:
        check_ray_tmp_parent(cfg.simulation.ray_tmpdir)
    except ValueError as err:
        raise SimulationConfigError(str(err)) from None
    settings = data_settings(cfg)
    train, _ = load_split(settings)
    if partition.n_clients * partition.min_size > len(train):
        raise SimulationConfigError(
            f"{partition.n_clients} clients x min_size {partition.min_size} exceed the {len(train)} training records"
        )
    return Path(settings.data_dir), partition, settings


def strategy_params(cfg: DictConfig) -> dict:
    """The strategy's ``params`` as a plain dict (passed to Flower's class as they are)."""
    params = cfg.strategy.get("params")
    return dict(OmegaConf.to_container(params, resolve=True)) if params else {}  # type: ignore[arg-type]


def run_config(cfg: DictConfig, out_dir: Path, settings: DataSettings, partition: PartitionConfig) -> dict:
    """The Flower run config (flat keys, bool/int/float/str) of this Hydra config."""
    values = {
        "out-dir": str(out_dir.resolve()), "data-dir": settings.data_dir, "dataset": settings.dataset,
        "seed": settings.seed, "subsample": settings.subsample, "test-size": settings.test_size,
        "root-size": settings.root_size,
        "val-fraction": float(cfg.simulation.val_fraction), "num-server-rounds": int(cfg.simulation.num_rounds),
        "local-epochs": int(cfg.simulation.local_epochs), "batch-size": int(cfg.simulation.batch_size),
        "lr": float(cfg.simulation.lr), "lr-decay": float(cfg.simulation.lr_decay),
        "client-threads": int(cfg.simulation.client_threads),
        "min-nodes": partition.n_clients, "fraction-train": float(cfg.strategy.fraction_train),
        "fraction-evaluate": float(cfg.strategy.fraction_evaluate),
        "strategy.name": str(cfg.strategy.name), "strategy.params": json.dumps(strategy_params(cfg)),
        "strategy.min-nodes": int(cfg.strategy.min_nodes), "smote": bool(cfg.simulation.smote),
        "save-updates": bool(cfg.simulation.get("save_updates", False)),
        **partition_run_config(partition), **attack_config(cfg).run_config(),
        "pipeline.log-transform": bool(cfg.pipeline.log_transform),
        "pipeline.min-category-count": int(cfg.pipeline.min_category_count),
    }  # fmt: skip
    for name, key in MODEL_KEYS.items():
        if name in cfg.model.params:
            values[key] = cfg.model.params[name]
    return values


def write_partition_outputs(settings: DataSettings, partition: PartitionConfig, out_dir: Path) -> dict:
    """Per-client class histogram (JSON and PNG) of the partition the clients will derive."""
    from simulation.partition_plots import write_partition_report

    train, _ = load_split(settings)
    parts = partition_from_config(train, partition, settings.seed)
    histogram = class_histogram(train, parts, partition.by)
    title = f"{partition.scheme} (alpha {partition.alpha}) over {partition.by}, {partition.n_clients} clients"
    write_partition_report(histogram, out_dir, title)
    return histogram


def write_round_plots(metrics: dict, out_dir: Path) -> None:
    """Global metrics per round and the final confusion matrix, as PNG."""
    import matplotlib.pyplot as plt

    from simulation.plots import plot_confusion_matrices

    rounds = [r["round"] for r in metrics["rounds"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        ax.plot(rounds, [r["global"].get(key, float("nan")) for r in metrics["rounds"]], marker="o", label=key)
    ax.set_xlabel("round")
    ax.set_ylabel("global model on the held-out split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "metrics_per_round.png", dpi=110)
    plt.close(fig)
    matrix = metrics.get("final", {}).get("confusion_matrix")
    if matrix:
        plot_confusion_matrices({"global model": matrix}, out_dir / "confusion_matrix.png", "final round")


def show_round(line: str) -> None:
    """Progress: one line per round (the ServerApp logs 'round N/M: global ...' after each evaluation)."""
    match = ROUND_LINE.search(line)
    if match:
        print(match.group(0), flush=True)


def run_federated(cfg: DictConfig, out_dir: Path) -> dict:
    """Check, launch, wait, report. Returns the ServerApp's metrics.json content."""
    _, partition, settings = check_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_partition_outputs(settings, partition, out_dir)
    values = run_config(cfg, out_dir, settings, partition)
    log.info("starting flwr run: %d clients, %d rounds", partition.n_clients, values["num-server-rounds"])
    with LocalFederation(out_dir / "flwr-home", ray_tmp_parent=cfg.simulation.ray_tmpdir) as federation:
        result = federation.run(values, num_supernodes=partition.n_clients,
                                client_cpus=float(cfg.simulation.client_cpus),
                                timeout=float(cfg.simulation.timeout), on_line=show_round)  # fmt: skip
    (out_dir / "flwr-run.log").write_text(result.log)
    shutil.rmtree(out_dir / "flwr-home" / "apps", ignore_errors=True)  # a copy of the code per run: not an output
    if federation.left:
        log.error("processes left running: %s", federation.left)
    if result.status != "finished:completed":
        raise RuntimeError(f"flwr run ended {result.status}; see {out_dir / 'flwr-run.log'}")
    attack = attack_config(cfg)
    if attack.name != "none":
        from simulation.attack_report import attack_report

        attack_report(attack, partition.n_clients, settings.seed, settings, out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    write_round_plots(metrics, out_dir)
    metrics["wall_seconds"] = round(result.seconds, 1)
    return metrics
