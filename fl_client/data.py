"""A client's local data: in simulation its partition of the run's TRAIN rows, on a gateway its own capture.

* simulation: ``node_config = {"partition-id", "num-partitions"}``; the run's split comes from
  :mod:`flows.run_split` (the same in every process) and partitions are cached per process;
* real gateway (a Flower SuperNode): ``node_config = {"data-path": FILE}`` and optionally ``"dataset"`` (the
  reader to use; default: the run's ``dataset``). Every record of the file is a local training record.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import numpy as np

from flows.errors import ConfigError
from flows.loader import load_file
from flows.partitioning import PartitionConfig, partition_from_config
from flows.run_split import DataSettings, load_split
from flows.table import FlowTable

def partition_run_config(config: PartitionConfig) -> dict:
    """The ``partition.*`` run-config keys of ``config`` (read back by :func:`partition_config_from_run_config`)."""
    return {
        "partition.scheme": config.scheme, "partition.alpha": float(config.alpha), "partition.by": config.by,
        "partition.classes-per-client": int(config.classes_per_client), "partition.min-size": int(config.min_size),
    }  # fmt: skip


def partition_config_from_run_config(run_config: Mapping, n_clients: int) -> PartitionConfig:
    """The partition settings of the run config (``partition.*`` keys) for ``n_clients`` partitions."""
    return PartitionConfig(
        scheme=str(run_config.get("partition.scheme", "iid")),
        n_clients=int(n_clients),
        alpha=float(run_config.get("partition.alpha", 0.5)),
        by=str(run_config.get("partition.by", "attack_cat")),
        classes_per_client=int(run_config.get("partition.classes-per-client", 2)),
        min_size=int(run_config.get("partition.min-size", 10)),
    )


_PARTITIONS: dict[tuple, list[np.ndarray]] = {}


def _partitions(settings: DataSettings, config: PartitionConfig) -> list[np.ndarray]:
    key = (settings, repr(config))  # PartitionConfig is not hashable
    if key not in _PARTITIONS:
        train, _ = load_split(settings)
        _PARTITIONS.clear()
        _PARTITIONS[key] = partition_from_config(train, config, settings.seed)
    return _PARTITIONS[key]


def client_partition(settings: DataSettings, config: PartitionConfig, partition_id: int) -> FlowTable:
    """The training rows of partition ``partition_id`` (of ``config.n_clients``)."""
    if not 0 <= partition_id < config.n_clients:
        raise ValueError(f"partition-id {partition_id} outside 0..{config.n_clients - 1}")
    train, _ = load_split(settings)
    return train.subset(_partitions(settings, config)[partition_id])


def local_validation_split(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (fit, validation) row positions of a client's partition; validation may be empty."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val-fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_val = int(round(fraction * n_rows)) if n_rows > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@lru_cache(maxsize=1)
def _gateway_table(dataset: str, path: str, bad_records: str) -> FlowTable:
    return load_file(dataset, path, bad_records)  # type: ignore[arg-type]


def local_table(run_config: Mapping, node_config: Mapping) -> tuple[int, FlowTable]:
    """(partition id, or -1 on a gateway; this node's training records) from the node config."""
    if "partition-id" in node_config:
        partition_id = int(node_config["partition-id"])
        config = partition_config_from_run_config(run_config, int(node_config["num-partitions"]))
        return partition_id, client_partition(DataSettings.from_run_config(run_config), config, partition_id)
    if "data-path" in node_config:
        dataset = str(node_config.get("dataset", run_config.get("dataset", "unsw-nb15")))
        bad_records = str(node_config.get("bad-records", "skip"))
        return -1, _gateway_table(dataset, str(node_config["data-path"]), bad_records)
    raise ConfigError("node config has neither partition-id (simulation) nor data-path (gateway); start the "
                      "SuperNode with --node-config \"data-path='FILE'\"")  # fmt: skip
