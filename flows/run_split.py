"""The rows of one federated run, derived from its run config alone, identically in every process.

Load the data set, optionally take a seeded stratified subsample, then split into train/test:

* ``split="random"`` (flow models' default): stratified by label with the run's seed;
* ``split="chronological"`` (host-graph models): the rows are cut into host-graph windows (``graph``) site by
  site; the latest ``test_size`` share of each site's windows is test, so no window is on both sides (flows that
  fit no window are dropped and counted); ``holdout_site`` takes one whole site out of the federation: none of
  its rows is trained on, the server evaluates on all its windows separately (:func:`holdout_site_table`); a
  server root set (``root_size``) is carved from the test side as whole windows.

Clients see only TRAIN rows (partitioned by :mod:`flows.partitioning`); the TEST rows stay with the server for
central evaluation. Cached per process, so a Ray actor reads the data once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flows.graphs.settings import GraphSettings
from flows.graphs.splits import chronological_split
from flows.loader import load_dataset
from flows.protocols import stratified_split, stratified_subsample
from flows.table import LABEL, FlowTable

SPLITS = ("random", "chronological")

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
    split: str = "random"  # random | chronological (by host-graph window within each site)
    graph: GraphSettings = GraphSettings()  # the windows of a chronological split
    holdout_site: str = ""  # chronological: a site (``source:file`` or file name) kept out of training

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.holdout_site and self.split != "chronological":
            raise ValueError("holdout_site needs the chronological split (a host-graph model, or split=chronological)")


def load_split(settings: DataSettings) -> tuple[FlowTable, FlowTable]:
    """(train, test) tables of the run: same rows in every process for the same settings.

    With ``root_size`` the test table excludes the server's root records (see :func:`server_root`)."""
    train, test, _, _ = _load_split(settings)
    return train, test


def server_root(settings: DataSettings) -> FlowTable:
    """The server's small clean root dataset (FLTrust): ``root_size`` records of the held-out split, never
    evaluated on and never seen by clients."""
    if settings.root_size <= 0:
        raise ValueError("root_size is 0: this run has no server root dataset")
    return _load_split(settings)[2]


def holdout_site_table(settings: DataSettings) -> FlowTable | None:
    """Every row of the held-out site (never trained on), or None when the run holds none out."""
    return _load_split(settings)[3]


def match_site(sites: np.ndarray, wanted: str) -> str:
    """The one site of ``sites`` named ``wanted`` (in full, ``source:file``, or by its file name)."""
    names = sorted(set(sites.tolist()))
    found = [n for n in names if n == wanted or n.split(":", 1)[-1] == wanted]
    if len(found) != 1:
        raise ValueError(f"holdout_site {wanted!r} is not one site of the data set; sites: {', '.join(names)}")
    return found[0]


def chronological_rows(table: FlowTable, test_size: float, graph: GraphSettings) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): per site, the rows of its earliest windows and of its latest ``test_size`` share
    (a site with too few windows trains on all of them); rows outside every window are on neither side."""
    from flows.graphs.from_table import table_windows, window_sites

    window, _ = table_windows(table, graph)
    ids, sites = window_sites(table, window)
    split = chronological_split(ids.astype(np.float64), test_size, 0.0, sites, strict=False)
    return (np.flatnonzero(np.isin(window, ids[split.train])).astype(np.int64),
            np.flatnonzero(np.isin(window, ids[split.test])).astype(np.int64))  # fmt: skip


def _carve_windows(test: FlowTable, settings: DataSettings) -> tuple[np.ndarray, np.ndarray]:
    """(kept, carved) rows of ``test``: seeded whole windows until the carved side holds ``root_size`` flows."""
    from flows.graphs.from_table import table_windows

    window, _ = table_windows(test, settings.graph)
    ids, sizes = np.unique(window[window >= 0], return_counts=True)
    order = np.random.default_rng(settings.seed + 1).permutation(len(ids))
    n_windows = int(np.searchsorted(np.cumsum(sizes[order]), settings.root_size)) + 1
    carved = np.isin(window, ids[order[:n_windows]])
    return np.flatnonzero(~carved).astype(np.int64), np.flatnonzero(carved).astype(np.int64)


@lru_cache(maxsize=2)
def _load_split(settings: DataSettings) -> tuple[FlowTable, FlowTable, FlowTable | None, FlowTable | None]:
    table = load_dataset(settings.dataset, settings.data_dir or None, file=settings.file or None,
                         bad_records=settings.bad_records)  # type: ignore[arg-type]
    n_loaded = len(table)
    if settings.subsample:
        table = stratified_subsample(table, settings.subsample, settings.seed)
    holdout = None
    if settings.holdout_site:
        sites = table.sites()
        site = match_site(sites, settings.holdout_site)
        holdout, table = table.subset(np.flatnonzero(sites == site)), table.subset(np.flatnonzero(sites != site))
        log.info("held-out site %s: %d records, never trained on", site, len(holdout))
    if settings.split == "chronological":
        train_index, test_index = chronological_rows(table, settings.test_size, settings.graph)
        dropped = len(table) - len(train_index) - len(test_index)
        if dropped:
            table.notes.append(f"chronological split: {dropped} flows fit no host-graph window (no address or time, "
                               "or a window below graph.min_flows) and are on neither side")  # fmt: skip
    else:
        train_index, test_index = stratified_split(table.frame[LABEL].to_numpy(), settings.test_size, settings.seed)
    log.info("data %s: %d records loaded, %d used, %d train / %d test (%s split, seed %d)", settings.dataset,
             n_loaded, len(table), len(train_index), len(test_index), settings.split, settings.seed)  # fmt: skip
    root = None
    if settings.root_size > 0:
        if settings.root_size >= len(test_index) // 2:
            raise ValueError(f"root_size {settings.root_size} must be below half the {len(test_index)} test records")
        if settings.split == "chronological":  # whole test windows, so no test graph loses flows
            rest, carved = _carve_windows(table.subset(test_index), settings)
        else:
            labels = table.frame[LABEL].to_numpy()[test_index]
            rest, carved = stratified_split(labels, settings.root_size / len(test_index), settings.seed + 1)
        root, test_index = table.subset(test_index[carved]), test_index[rest]
    return table.subset(train_index), table.subset(test_index), root, holdout
