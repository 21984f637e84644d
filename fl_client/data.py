"""A client's local data: in simulation its partition of the run's TRAIN rows, on a gateway its own capture.

* simulation: ``node_config = {"partition-id", "num-partitions"}``; the run's split comes from
  :mod:`flows.run_split` (the same in every process) and partitions are cached per process;
* real gateway (a Flower SuperNode): ``node_config = {"data-path": FILE[,FILE] or FOLDER}`` with optionally
  ``"dataset"`` (the reader; default: the run's ``dataset``), ``"labels"`` (evidence files) and ``"unlabelled"``
  (see :mod:`fl_client.gateway_data`). Every labelled flow of its captures is a local training record; flows
  that neither the capture nor evidence labels are dropped unless the node config says ``unlabelled=benign``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from flows.errors import ConfigError
from fl_client.gateway_data import DATA_PATH, gateway_data
from conf.schema import RunSpec, data_settings, partition_for
from flows.partitioning import PartitionConfig, partition_from_config
from flows.graphs.settings import GraphSettings
from flows.run_split import DataSettings, chronological_rows, load_split
from flows.table import FlowTable

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


def local_validation_windows(table: FlowTable, fraction: float,
                             graph: GraphSettings) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(fit, validation) row positions by time, for host-graph families: per site, the rows of the latest
    ``fraction`` of the client's windows validate (a site with too few windows keeps them all for fitting)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val-fraction must be in [0, 1), got {fraction}")
    return chronological_rows(table, fraction, graph)


def local_table(spec: RunSpec, node_config: Mapping) -> tuple[int, FlowTable]:
    """(partition id, or -1 on a gateway; this node's training records) from the node config."""
    if "partition-id" in node_config:
        partition_id = int(node_config["partition-id"])
        config = partition_for(spec, int(node_config["num-partitions"]))
        return partition_id, client_partition(data_settings(spec), config, partition_id)
    if DATA_PATH in node_config:
        return -1, gateway_data(node_config, spec.dataset.name).table
    raise ConfigError("node config has neither partition-id (simulation) nor data-path (gateway); start the "
                      "SuperNode with --node-config \"data-path='FILE'\"")  # fmt: skip
