"""The rows of one federated run, derived from its run config alone, identically in every process.

Load the data set, optionally take a seeded stratified subsample, split stratified into train/test with the
run's seed. Clients see only TRAIN rows (partitioned by :mod:`flows.partitioning`); the TEST rows stay with
the server for central evaluation. Cached per process, so a Ray actor reads the data once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

from flows.loader import load_dataset
from flows.protocols import stratified_split, stratified_subsample
from flows.table import LABEL, FlowTable

log = logging.getLogger("flwr.botdefender.data")


@dataclass(frozen=True)
class DataSettings:
    """What decides the rows of a run (hashable: it keys the per-process caches)."""

    data_dir: str
    dataset: str = "unsw-nb15"
    subsample: int = 0  # 0 = all records
    test_size: float = 0.2
    seed: int = 0

    @classmethod
    def from_run_config(cls, run_config: Mapping) -> "DataSettings":
        return cls(
            data_dir=str(run_config.get("data-dir", "")),
            dataset=str(run_config.get("dataset", "unsw-nb15")),
            subsample=int(run_config.get("subsample", 0)),
            test_size=float(run_config.get("test-size", 0.2)),
            seed=int(run_config.get("seed", 0)),
        )


@lru_cache(maxsize=2)
def load_split(settings: DataSettings) -> tuple[FlowTable, FlowTable]:
    """(train, test) tables of the run: same rows in every process for the same settings."""
    table = load_dataset(settings.dataset, settings.data_dir or None)
    n_loaded = len(table)
    if settings.subsample:
        table = stratified_subsample(table, settings.subsample, settings.seed)
    train_index, test_index = stratified_split(table.frame[LABEL].to_numpy(), settings.test_size, settings.seed)
    log.info("data %s: %d records loaded, %d used, %d train / %d test (seed %d)", settings.dataset, n_loaded,
             len(table), len(train_index), len(test_index), settings.seed)  # fmt: skip
    return table.subset(train_index), table.subset(test_index)
