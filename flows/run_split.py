"""The rows of one federated run, derived from its run config alone, identically in every process.

Load the data set, optionally take a seeded stratified subsample, split stratified into train/test with the
run's seed. Clients see only TRAIN rows (partitioned by :mod:`flows.partitioning`); the TEST rows stay with
the server for central evaluation. Cached per process, so a Ray actor reads the data once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from flows.loader import load_dataset
from flows.protocols import stratified_split, stratified_subsample
from flows.table import LABEL, FlowTable

log = logging.getLogger("flwr.botdefender.data")


@dataclass(frozen=True)
class DataSettings:
    """What decides the rows of a run (hashable: it keys the per-process caches). Built from the run spec by
    :func:`conf.schema.data_settings`."""

    data_dir: str = ""  # empty: $BOTDEFENDER_DATA_DIR
    dataset: str = "unsw-nb15"
    file: str = ""  # one file of a multi-file source; empty: the source's default
    bad_records: str = "error"
    subsample: int = 0  # 0 = all records
    test_size: float = 0.2
    seed: int = 0
    root_size: int = 0  # records carved (stratified) from the held-out split for a server root dataset


def load_split(settings: DataSettings) -> tuple[FlowTable, FlowTable]:
    """(train, test) tables of the run: same rows in every process for the same settings.

    With ``root_size`` the test table excludes the server's root records (see :func:`server_root`)."""
    train, test, _ = _load_split(settings)
    return train, test


def server_root(settings: DataSettings) -> FlowTable:
    """The server's small clean root dataset (FLTrust): ``root_size`` records of the held-out split, never
    evaluated on and never seen by clients."""
    if settings.root_size <= 0:
        raise ValueError("root_size is 0: this run has no server root dataset")
    return _load_split(settings)[2]


@lru_cache(maxsize=2)
def _load_split(settings: DataSettings) -> tuple[FlowTable, FlowTable, FlowTable | None]:
    table = load_dataset(settings.dataset, settings.data_dir or None, file=settings.file or None,
                         bad_records=settings.bad_records)  # type: ignore[arg-type]
    n_loaded = len(table)
    if settings.subsample:
        table = stratified_subsample(table, settings.subsample, settings.seed)
    train_index, test_index = stratified_split(table.frame[LABEL].to_numpy(), settings.test_size, settings.seed)
    log.info("data %s: %d records loaded, %d used, %d train / %d test (seed %d)", settings.dataset, n_loaded,
             len(table), len(train_index), len(test_index), settings.seed)  # fmt: skip
    root = None
    if settings.root_size > 0:
        if settings.root_size >= len(test_index) // 2:
            raise ValueError(f"root_size {settings.root_size} must be below half the {len(test_index)} test records")
        labels = table.frame[LABEL].to_numpy()[test_index]
        rest, carved = stratified_split(labels, settings.root_size / len(test_index), settings.seed + 1)
        root, test_index = table.subset(test_index[carved]), test_index[rest]
    return table.subset(train_index), table.subset(test_index), root
