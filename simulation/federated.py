"""One federated simulation from a Hydra config: check it, run the Flower app on Ray, report and plot.

Checks that can fail fail before anything starts (unknown strategy, a centralized-only model, alpha <= 0, a
missing data folder, more clients than records). The run itself is ``flwr run`` on a private SuperLink owned by
:class:`simulation.flower_runtime.LocalFederation`, which stops everything it started on the way out. The
ServerApp reports every round as a JSON line in ``progress.jsonl``, which :class:`ProgressFollower` prints.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

from omegaconf import DictConfig

from conf.schema import LauncherSpec, RunSpec, RunSpecError, data_settings, to_run_config
from fl_client.attacks.config import AttackConfig
from fl_server.evaluation import PROGRESS_FILE
from flows.loader import resolve_data_dir
from flows.partitioning import class_histogram, partition_from_config
from flows.run_split import DataSettings, load_split
from simulation.config import specs
from simulation.flower_runtime import LocalFederation, check_ray_tmp_parent
from strategies.registry import StrategyConfigError, check_strategy

log = logging.getLogger(__name__)


class SimulationConfigError(ValueError):
    """A configuration the simulation refuses before starting anything."""


def check_model(spec: RunSpec) -> None:
    """The model must be a registered family; a centralized-only baseline is refused with the families named."""
    from models.baselines import DETECTOR_NAMES
    from models.registry import family_names, get_family

    name = spec.model.name
    if name not in family_names():
        kind = "a centralized-only baseline (python -m simulation.centralized)" if name in DETECTOR_NAMES else \
            "not a model family"  # fmt: skip
        raise SimulationConfigError(f"model={name} is {kind}; a federated run needs a model family: "
                                    f"{', '.join(family_names())}")  # fmt: skip
    try:
        get_family(name).resolve(spec.model.params)
    except ValueError as err:
        raise SimulationConfigError(f"model.params: {err}") from None
    try:
        mixed = spec.model.family_names()
    except RunSpecError as err:
        raise SimulationConfigError(str(err)) from None
    unknown = [family for family in mixed if family not in family_names()]
    if unknown:
        raise SimulationConfigError(f"model.families: {', '.join(unknown)} not a model family; families: "
                                    f"{', '.join(family_names())}")  # fmt: skip
    if len(mixed) > spec.partition.n_clients:
        raise SimulationConfigError(f"model.families lists {len(mixed)} families for {spec.partition.n_clients} "
                                    "clients: every family needs a client")  # fmt: skip


def check_config(cfg: DictConfig) -> tuple[RunSpec, LauncherSpec, DataSettings]:
    """Everything that can be checked before launching; raises SimulationConfigError with one clear line."""
    try:
        spec, launcher = specs(cfg)
        AttackConfig.of(spec.attack)
    except (RunSpecError, ValueError) as err:
        raise SimulationConfigError(str(err)) from None
    if spec.out_dir:
        raise SimulationConfigError("out_dir is the Hydra run folder here: set hydra.run.dir (hydra.sweep.dir in a "
                                    f"multirun) instead of out_dir={spec.out_dir}")  # fmt: skip
    n_clients = spec.partition.n_clients
    check_model(spec)
    try:
        check_strategy(spec.strategy.name, dict(spec.strategy.params), n_clients, spec.strategy.fraction_train,
                       spec.strategy.fraction_evaluate, min(spec.strategy.min_nodes, n_clients))  # fmt: skip
    except StrategyConfigError as err:
        raise SimulationConfigError(str(err)) from None
    uses_fltrust = "fltrust" in (spec.strategy.name, str(spec.strategy.params.get("inner", "")))
    if uses_fltrust and spec.simulation.root_size <= 0:
        raise SimulationConfigError("strategy fltrust needs a server root dataset: set simulation.root_size "
                                    "(records carved from the held-out split, e.g. 200)")  # fmt: skip
    try:
        check_ray_tmp_parent(launcher.ray_tmpdir)
    except ValueError as err:
        raise SimulationConfigError(str(err)) from None
    resolve_data_dir(spec.dataset.data_dir or None)  # a missing data folder fails here
    try:
        settings = data_settings(spec)
        train, _ = load_split(settings)
    except (RunSpecError, ValueError) as err:
        raise SimulationConfigError(str(err)) from None
    if n_clients * spec.partition.min_size > len(train):
        raise SimulationConfigError(
            f"{n_clients} clients x min_size {spec.partition.min_size} exceed the {len(train)} training records"
        )
    if spec.partition.scheme == "by_site":
        try:
            partition_from_config(train, spec.partition, settings.seed)
        except ValueError as err:
            raise SimulationConfigError(str(err)) from None
    return spec, launcher, settings


def write_partition_outputs(spec: RunSpec, settings: DataSettings, out_dir: Path) -> dict:
    """Per-client class histogram (JSON and PNG) of the partition the clients will derive."""
    from simulation.partition_plots import write_partition_report

    partition = spec.partition
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
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "fed_accuracy", "fed_f1"):
        values = [r["global"].get(key) for r in metrics["rounds"]]
        if any(v is not None for v in values):
            ax.plot(rounds, [float("nan") if v is None else v for v in values], marker="o", label=key,
                    linestyle="--" if key.startswith("fed_") else "-")  # fmt: skip
    ax.set_xlabel("round")
    ax.set_ylabel("global model: held-out split, fed_*: clients' validation rows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "metrics_per_round.png", dpi=110)
    plt.close(fig)
    matrix = metrics.get("final", {}).get("confusion_matrix")
    if matrix:
        plot_confusion_matrices({"global model": matrix}, out_dir / "confusion_matrix.png", "final round")


PROGRESS_SHOWN = (("loss", "global loss"), ("accuracy", "acc"), ("f1", "f1"), ("roc_auc", "auc"),
                  ("host_f1", "host f1"), ("site_f1", "| held-out site f1"), ("site_host_f1", "host f1"),
                  ("fed_loss", "| federated loss"), ("fed_accuracy", "acc"), ("fed_f1", "f1"),
                  ("dp_epsilon", "| epsilon"))  # fmt: skip


class ProgressFollower(threading.Thread):
    """Prints one line per round from the ServerApp's ``progress.jsonl`` while the run goes on."""

    def __init__(self, path: Path, poll: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.path, self.poll = path, poll
        self.done = threading.Event()
        self.seen = 0

    def run(self) -> None:
        while not self.done.wait(self.poll):
            self.show()
        self.show()

    def show(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        for text in lines[self.seen :]:
            try:
                r = json.loads(text)
            except ValueError:
                break  # a line still being written
            self.seen += 1
            seconds = f" ({r['round_seconds']:.1f} s)" if r.get("round_seconds") else ""
            shown = " ".join(f"{label} {r[key]:.4f}" for key, label in PROGRESS_SHOWN if r.get(key) is not None)
            family = f"{r['family']}: " if r.get("family") else ""
            print(f"{family}round {r['round']}/{r['rounds']}: {shown or 'no central test set'}{seconds}", flush=True)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


def run_federated(cfg: DictConfig, out_dir: Path) -> dict:
    """Check, launch, wait, report. Returns the ServerApp's metrics.json content."""
    spec, launcher, settings = check_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_partition_outputs(spec, settings, out_dir)
    values = to_run_config(spec)
    values["out-dir"] = str(out_dir.resolve())
    if spec.dataset.data_dir:  # the ServerApp and ClientApps run in the SuperLink's working directory
        values["dataset.data-dir"] = str(Path(spec.dataset.data_dir).expanduser().resolve())
    n_clients = spec.partition.n_clients
    env = {"BOTDEFENDER_DATA_DIR": str(resolve_data_dir(spec.dataset.data_dir or None).resolve())}
    log.info("starting flwr run: %d clients, %d rounds", n_clients, spec.simulation.num_rounds)
    follower = ProgressFollower(out_dir / PROGRESS_FILE)
    (out_dir / PROGRESS_FILE).unlink(missing_ok=True)
    follower.start()
    try:
        with LocalFederation(out_dir / "flwr-home", env_extra=env, ray_tmp_parent=launcher.ray_tmpdir) as federation:
            result = federation.run(values, num_supernodes=n_clients, client_cpus=launcher.client_cpus,
                                    timeout=launcher.timeout)  # fmt: skip
    finally:
        follower.stop()
    (out_dir / "flwr-run.log").write_text(result.log)
    shutil.rmtree(out_dir / "flwr-home" / "apps", ignore_errors=True)  # a copy of the code per run: not an output
    if federation.left:
        log.error("processes left running: %s", federation.left)
    if result.status != "finished:completed":
        raise RuntimeError(f"flwr run ended {result.status}; see {out_dir / 'flwr-run.log'}")
    attack = AttackConfig.of(spec.attack)
    if attack.name != "none":
        from simulation.attack_report import attack_report

        attack_report(attack, n_clients, settings.seed, settings, out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    write_round_plots(metrics, out_dir)
    metrics["wall_seconds"] = round(result.seconds, 1)
    return metrics
