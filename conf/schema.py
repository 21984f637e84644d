"""The run specification: every setting of a federated run with its default, in one typed schema.

:class:`RunSpec` is the only place a run setting and its default are written. Everything else is derived from it:

* Hydra (``python -m simulation``) composes ``conf/federated.yaml`` on top of this schema (registered in Hydra's
  ConfigStore as ``federated_schema``); the group files in ``conf/`` hold only what differs from the defaults;
* the Flower run config (``flwr run``) is :func:`to_run_config` of a spec, and ``pyproject.toml``'s
  ``[tool.flwr.app.config]`` is that of the default spec (``python -m conf.sync_pyproject`` writes it; a test
  checks it), so ``flwr run .`` and ``python -m simulation`` run the same experiment;
* the ServerApp and the ClientApp read their settings back with :func:`from_run_config`.

Naming rule, both ways: the Hydra path ``section.field_name`` is the run-config key ``section.field-name``;
dictionary fields (``model.params``, ``strategy.params``, ``attack.params``) travel as JSON strings. An unknown
key anywhere fails with one line that names it and the nearest valid key.

:class:`LauncherSpec` holds what only ``python -m simulation`` itself uses (the local federation's resources, the
whole run's timeout, resuming sweeps); it never reaches the Flower run config.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from conf.errors import RunSpecError
from conf.privacy import PrivacySpec, check_privacy_run
from flows.graphs.settings import GraphSettings
from flows.partitioning import PartitionConfig
from flows.pipeline import PipelineSettings


@dataclass
class DatasetSpec:
    """Which records the run reads (see :mod:`flows.loader`)."""

    name: str = "unsw-nb15"
    data_dir: str = ""  # empty: $BOTDEFENDER_DATA_DIR of the process that reads the data
    file: str = ""  # one file of a multi-file source (relative to its folder); empty: the source's default
    bad_records: str = "error"  # error | skip (skipped records are counted in the outputs)
    holdout_site: str = ""  # a site (source:file or file name) kept out of training, evaluated apart (chronological)


@dataclass
class SimulationSpec:
    """How the federation trains: rounds and clients' local training (ClientApp), the server's side (ServerApp)."""

    num_rounds: int = 80
    local_epochs: int = 1
    batch_size: int = 64
    lr: float = 0.003
    lr_decay: float = 0.985  # clients' learning rate in round r: lr * lr_decay ** (r - 1)
    subsample: int = 0  # records (stratified) taken before the split; 0 = all
    test_size: float = 0.2  # held-out share for central evaluation (stays on the server)
    split: str = "auto"  # random | chronological (per site, by host-graph window) | auto: chronological for families
    #                      that read host graphs, random (stratified) for the others
    val_fraction: float = 0.1  # share of each client's partition for its local evaluate
    root_size: int = 0  # server root dataset (FLTrust): records carved from the held-out split, never evaluated on
    client_threads: int = 1  # torch threads per client
    smote: bool = False  # SMOTE on each client's own encoded training rows (never on validation or test rows)
    save_updates: bool = False  # screening strategy: every round's update vectors to <out_dir>/updates/*.npz
    round_timeout: float = 3600.0  # seconds the server waits for the replies of one round
    min_nodes: int = 2  # the server starts once this many nodes are connected
    node_wait: float = 120.0  # seconds the server waits for min_nodes


@dataclass
class ModelSection:
    """The model family (see :mod:`models.registry`) and its architecture parameters (only those that differ
    from the family's defaults need be given)."""

    name: str = "cnn_lstm"
    params: dict[str, Any] = field(default_factory=dict)
    # A mixed federation: families joined by "+" ("cnn_lstm+gcn"; "," also works where no Hydra parses it); the client with partition id i trains
    # families[i % n] (on a gateway: its node config "model"); ``params`` apply to ``name``, the others take their
    # defaults. Empty: every client trains ``name``.
    families: str = ""

    def family_names(self) -> list[str]:
        """The run's families, ``name`` alone unless ``families`` lists several (``name`` must be one of them)."""
        names = [n.strip() for n in self.families.replace(",", "+").split("+") if n.strip()]
        if not names:
            return [self.name]
        if len(set(names)) != len(names) or self.name not in names:
            raise RunSpecError(f"model.families must list distinct families including model.name={self.name!r}, "
                               f"got {self.families!r}")  # fmt: skip
        return names

    def family_of(self, node_config: Mapping[str, Any]) -> str:
        """The family a node trains: its node config's ``model`` (a gateway), else by partition id."""
        if "model" in node_config:
            return str(node_config["model"])
        names = self.family_names()
        return names[int(node_config.get("partition-id", 0)) % len(names)]


@dataclass
class StrategySpec:
    """The server strategy (see :mod:`strategies.registry`) and its sampling."""

    name: str = "screening"
    params: dict[str, Any] = field(default_factory=dict)  # the strategy's own arguments
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_nodes: int = 2  # fewest clients sampled per round
    assumed_malicious: float = 0.2  # share of clients the robust aggregators assume malicious (their configs use it)


@dataclass
class AttackSpec:
    """Simulated malicious clients: a seeded ``fraction`` of the partitions attacks in rounds start..end (0 = to
    the end). The attack names are checked by :mod:`fl_client.attacks.config`."""

    name: str = "none"
    fraction: float = 0.0
    start_round: int = 1
    end_round: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise RunSpecError(f"attack.fraction must be in [0, 1), got {self.fraction}")
        if self.start_round < 1 or (self.end_round and self.end_round < self.start_round):
            raise RunSpecError(f"attack rounds must satisfy 1 <= start_round <= end_round (0 = last), got "
                               f"{self.start_round}..{self.end_round}")  # fmt: skip

    def active(self, server_round: int) -> bool:
        return self.name != "none" and self.start_round <= server_round and (
            not self.end_round or server_round <= self.end_round)  # fmt: skip


CENTRAL_EVALUATIONS = ("split", "file", "none")


@dataclass
class DeploySpec:
    """A federation of real gateways: what the server evaluates on, and the signed bundle it rolls out."""

    central_eval: str = "split"  # split: the held-out split of dataset.* | file: central_file | none: federated
    #                              evaluation only (a server that holds no data)
    central_file: str = ""  # a labelled capture on the server, read with dataset.name's reader (central_eval=file)
    rollout: bool = False  # export, sign and send the global model to the gateways at the end of the run
    rollout_every: int = 0  # also after every k rounds (0: at the end only)
    signing_key: str = ""  # the operator's Ed25519 private key (PEM) on the server machine; required by rollout
    rollout_timeout: float = 600.0  # seconds the server waits for the gateways' install replies

    def __post_init__(self) -> None:
        if self.central_eval not in CENTRAL_EVALUATIONS:
            raise RunSpecError(f"deploy.central_eval must be one of {', '.join(CENTRAL_EVALUATIONS)}, got "
                               f"{self.central_eval!r}")  # fmt: skip
        if self.central_eval == "file" and not self.central_file:
            raise RunSpecError("deploy.central_eval=file needs deploy.central_file (a labelled capture on the server)")
        if self.rollout and not self.signing_key:
            raise RunSpecError("deploy.rollout needs deploy.signing_key (the operator's Ed25519 private key; make "
                               "one with python -m gateway keygen)")  # fmt: skip
        if self.rollout_every < 0 or self.rollout_timeout <= 0:
            raise RunSpecError(f"deploy.rollout_every must be >= 0 and deploy.rollout_timeout > 0, got "
                               f"{self.rollout_every} and {self.rollout_timeout}")  # fmt: skip


@dataclass
class RunSpec:
    """Everything that decides a federated run (and reaches the Flower run config)."""

    seed: int = 0  # reaches partitioning, model init, client sampling and data loaders
    out_dir: str = ""  # absolute; empty: a new folder under $BOTDEFENDER_RUNS_DIR or ~/botdefender-runs
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    graph: GraphSettings = field(default_factory=GraphSettings)  # host-graph windows (graph model families)
    model: ModelSection = field(default_factory=ModelSection)
    strategy: StrategySpec = field(default_factory=StrategySpec)
    attack: AttackSpec = field(default_factory=AttackSpec)
    simulation: SimulationSpec = field(default_factory=SimulationSpec)
    deploy: DeploySpec = field(default_factory=DeploySpec)  # real gateways: server-side evaluation, rollout
    privacy: PrivacySpec = field(default_factory=PrivacySpec)  # differential privacy (none | dp_sgd | central)

    def __post_init__(self) -> None:
        check_privacy_run(self)

    def round_lr(self, server_round: int) -> float:
        """The clients' learning rate in ``server_round``: ``lr * lr_decay ** (round - 1)``."""
        return self.simulation.lr * self.simulation.lr_decay ** max(server_round - 1, 0)


@dataclass
class LauncherSpec:
    """What only ``python -m simulation`` uses: the local federation it starts and owns."""

    client_cpus: float = 1.0  # Ray CPUs per virtual client (2 cores here: 2 clients at a time)
    timeout: float = 14400.0  # seconds for the whole run
    skip_done: bool = False  # a job whose folder already holds a finished metrics.json is skipped (resumable sweeps)
    ray_tmpdir: str = "/tmp"  # Ray temp files: a fresh bdray* folder in here (<= 24 bytes: socket path limit)


@dataclass
class FederatedConfig(RunSpec):
    """The Hydra schema of ``conf/federated.yaml``: the run spec plus the launcher's own settings."""

    launcher: LauncherSpec = field(default_factory=LauncherSpec)


DICT_FIELDS = ("params",)  # dictionary fields travel as JSON strings


# ---- naming rule ------------------------------------------------------------------------------------------
def run_key(path: str) -> str:
    """Hydra path -> run-config key (``simulation.num_rounds`` -> ``simulation.num-rounds``)."""
    return path.replace("_", "-")


def hydra_path(key: str) -> str:
    """Run-config key -> Hydra path (the inverse of :func:`run_key`)."""
    return key.replace("-", "_")


def nearest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(options))}"


# ---- spec <-> flat run config ---------------------------------------------------------------------------------
def to_run_config(spec: RunSpec) -> dict[str, bool | int | float | str]:
    """The flat Flower run config of ``spec`` (bool/int/float/str only)."""
    flat: dict[str, bool | int | float | str] = {}
    for f in dataclasses.fields(RunSpec):
        value = getattr(spec, f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                item = getattr(value, sub.name)
                flat[run_key(f"{f.name}.{sub.name}")] = (json.dumps(item, sort_keys=True) if sub.name in DICT_FIELDS
                                                         else _scalar(item, f"{f.name}.{sub.name}"))  # fmt: skip
        else:
            flat[run_key(f.name)] = _scalar(value, f.name)
    return flat


def _scalar(value, path: str) -> bool | int | float | str:
    if value is None:
        raise RunSpecError(f"{path} is None: a federated run config holds bool/int/float/str only")
    if not isinstance(value, (bool, int, float, str)):
        raise RunSpecError(f"{path}: {type(value).__name__} cannot travel in a run config")
    return value


def from_run_config(run_config: Mapping[str, Any]) -> RunSpec:
    """The spec of a flat run config: missing keys take the schema's defaults, unknown keys fail."""
    nested: dict[str, Any] = {}
    known = set(to_run_config(RunSpec()))
    for key, value in run_config.items():
        if key not in known:
            raise RunSpecError(f"unknown run-config key {key!r}{nearest(key, known)}")
        path = hydra_path(key).split(".")
        if len(path) == 2 and path[1] in DICT_FIELDS:
            try:
                value = json.loads(str(value))
            except json.JSONDecodeError as err:
                raise RunSpecError(f"run-config key {key!r}: not a JSON object ({err})") from None
        target = nested
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return from_dict(nested)


def from_dict(data: Mapping[str, Any], schema: type = RunSpec) -> Any:
    """Build ``schema`` from nested plain data, checking every key and type; one-line errors."""
    return _build(schema, data, "")


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise RunSpecError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            raise RunSpecError(f"unknown key '{prefix}{name}'{nearest(str(name), fields)}")
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except RunSpecError:
        raise
    except (TypeError, ValueError) as err:
        raise RunSpecError(f"{prefix.rstrip('.') or 'config'}: {err}") from None


def _hints(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    import types
    import typing

    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise RunSpecError(f"{path}: a value is required (got null)")
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) in (
        typing.Union, types.UnionType) else hint  # fmt: skip
    origin = typing.get_origin(base) or base
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RunSpecError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is bool:
        if isinstance(value, bool):
            return value
        raise RunSpecError(f"{path}: expected true or false, got {value!r}")
    if origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise RunSpecError(f"{path}: expected an integer, got {value!r}")
    if origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise RunSpecError(f"{path}: expected a number, got {value!r}")
    if origin is str:
        if isinstance(value, str):
            return value
        raise RunSpecError(f"{path}: expected a string, got {value!r}")
    return value


# ---- command-line overrides ------------------------------------------------------------------------------------
def check_override_keys(overrides: list[str], schema: type = FederatedConfig) -> None:
    """Refuse ``key=value`` overrides whose key is not in ``schema`` (before Hydra composes anything).

    Group selections (``partition=iid``), ``+``/``~`` overrides, ``hydra.*`` keys and keys below a dictionary
    field (``strategy.params.beta``: Hydra checks those against the chosen group's file) pass through."""
    import typing

    for item in overrides:
        if item.startswith(("-", "+", "~")) or "=" not in item:
            continue
        key = item.split("=", 1)[0]
        if key.startswith("hydra.") or key == "hydra":
            continue
        cls, walked = schema, []
        for part in key.split("."):
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if part not in fields:
                where = ".".join(walked)
                valid = [f"{where}.{f}" if where else f for f in fields]
                raise RunSpecError(f"unknown configuration key {key!r}{nearest('.'.join([*walked, part]), valid)}")
            walked.append(part)
            hint = typing.get_type_hints(cls)[part]
            if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
                break
            cls = hint


# ---- views of a spec for the layers below ----------------------------------------------------------------------
def data_settings(spec: RunSpec) -> "DataSettings":
    """The rows of the run (same in every process): data set, subsample, split, root set."""
    from flows.run_split import DataSettings

    split = resolved_split(spec)
    return DataSettings(data_dir=spec.dataset.data_dir, dataset=spec.dataset.name, file=spec.dataset.file,
                        bad_records=spec.dataset.bad_records, subsample=spec.simulation.subsample,
                        test_size=spec.simulation.test_size, seed=spec.seed, root_size=spec.simulation.root_size,
                        split=split, graph=spec.graph if split == "chronological" else GraphSettings(),
                        holdout_site=spec.dataset.holdout_site)  # fmt: skip


def reads_host_graphs(model_name: str) -> bool:
    """Whether the family ``model_name`` takes host-graph windows (its ``gateway_input``)."""
    from flows.graphs.hostgraph import HOST_GRAPHS
    from models.registry import get_family

    return get_family(model_name).gateway_input == HOST_GRAPHS


def resolved_split(spec: RunSpec) -> str:
    """``simulation.split`` with ``auto`` decided by the model family: chronological for host-graph families."""
    split = spec.simulation.split
    if split not in ("auto", "random", "chronological"):
        raise RunSpecError(f"simulation.split must be auto, random or chronological, got {split!r}")
    if split == "auto":
        graphs = any(reads_host_graphs(name) for name in spec.model.family_names())
        return "chronological" if graphs else "random"
    return split


def partition_for(spec: RunSpec, n_partitions: int) -> PartitionConfig:
    """The run's partitioning for the federation's actual number of partitions."""
    return dataclasses.replace(spec.partition, n_clients=int(n_partitions))
