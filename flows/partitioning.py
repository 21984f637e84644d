"""Split a flow table among federated clients (numpy + pandas only).

Every partitioner returns, per client, the sorted row positions of that client's flows; every row goes to
exactly one client. Schemes:

* ``iid``: a seeded shuffle cut into near-equal parts (sizes differ by at most one row).
* ``dirichlet``: label skew. For every class, the proportions of its rows per client are drawn from
  Dir(alpha) over the clients; draws are repeated until every client holds at least ``min_size`` rows.
  Hsu, Qi & Brown (2019), "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification", arXiv:1909.06335; the per-class form is the one of Yurochkin et al. (2019, ICML) used by
  most federated benchmarks. Small alpha: each client sees few classes; large alpha: close to IID.
* ``pathological``: each client holds ``classes_per_client`` shards of distinct classes (McMahan et al. 2017,
  "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS). Shards here are cut
  at class boundaries (a shard never straddles two classes, unlike cutting the label-sorted data into equal
  pieces), so the bound of k classes per client holds for imbalanced classes too, and all rows are assigned.
* ``quantity_skew``: client sizes follow Dir(alpha) over the clients (on top of a floor of ``min_size`` rows),
  rows are dealt at random so each client's class mix is close to the global one (Li, Diao, Chen & He 2022,
  "Federated Learning on Non-IID Data Silos: An Experimental Study", ICDE).
* ``by_host``: natural partition for sources with IP addresses: all flows of one source host go to one client;
  hosts are dealt in descending size to the currently smallest client (greedy balancing, seeded tie-breaks).
* ``by_site``: natural partition of a multi-site data set (``captures``: one capture per site; a single-file
  data set is one site): with as many clients as sites, client i holds site i (order of first appearance);
  with fewer clients, sites (largest first) go to the currently smallest client; more clients than sites fail.

All randomness comes from one ``numpy.random.default_rng(seed)``: the same seed gives identical partitions.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from flows.table import ATTACK_CAT, LABEL, SITE, SRC_IP, FlowTable

log = logging.getLogger(__name__)

SCHEMES = ("iid", "dirichlet", "pathological", "quantity_skew", "by_host", "by_site")
CLASS_COLUMNS = (ATTACK_CAT, LABEL)
DEFAULT_MAX_ATTEMPTS = 1000


@dataclass
class PartitionConfig:
    """How to split the data among clients; mirrors the Hydra group ``partition`` (the seed is the run's)."""

    scheme: str = "dirichlet"
    n_clients: int = 10
    alpha: float = 0.5  # Dirichlet concentration (dirichlet, quantity_skew); smaller = more skew
    by: str = ATTACK_CAT  # class column for dirichlet / pathological / histograms: attack_cat or label
    classes_per_client: int = 2  # pathological
    min_size: int = 10  # every client holds at least this many rows
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # dirichlet / pathological redraws before giving up
    host_column: str = SRC_IP  # by_host

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on settings that no table can satisfy."""
        _check_settings(self.scheme, self.n_clients, self.alpha, self.by, self.classes_per_client,
                        self.min_size, self.max_attempts)  # fmt: skip


def partition(
    table: FlowTable | pd.DataFrame,
    scheme: str,
    n_clients: int,
    *,
    seed: int,
    alpha: float = 0.5,
    by: str = ATTACK_CAT,
    classes_per_client: int = 2,
    min_size: int = 10,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    host_column: str = SRC_IP,
) -> list[np.ndarray]:
    """Row positions (sorted int64 arrays) per client; the parts are disjoint and cover every row.

    Raises ValueError on bad settings, on a table too small for ``n_clients * min_size`` rows, and when a
    scheme cannot meet ``min_size`` (naming the settings to change).
    """
    _check_settings(scheme, n_clients, alpha, by, classes_per_client, min_size, max_attempts)
    frame = _frame(table)
    _check_size(len(frame), n_clients, min_size)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = _iid(len(frame), n_clients, rng)
    elif scheme == "dirichlet":
        parts = _dirichlet(_class_codes(frame, by), n_clients, alpha, min_size, max_attempts, rng, by)
    elif scheme == "pathological":
        parts = _pathological(_class_codes(frame, by), n_clients, classes_per_client, min_size, max_attempts,
                              rng, by)  # fmt: skip
    elif scheme == "quantity_skew":
        parts = _quantity_skew(len(frame), n_clients, alpha, min_size, rng)
    elif scheme == "by_site":
        parts = _by_site(_sites(table), n_clients, min_size, _source(table))
    else:
        parts = _by_host(frame, n_clients, min_size, rng, host_column, _source(table))
    parts = [np.sort(p).astype(np.int64) for p in parts]
    sizes = [len(p) for p in parts]
    log.info("partition %s: %d clients, %d rows, sizes min %d / max %d (seed %d)",
             scheme, n_clients, len(frame), min(sizes), max(sizes), seed)  # fmt: skip
    return parts


def partition_from_config(table: FlowTable | pd.DataFrame, config: PartitionConfig, seed: int) -> list[np.ndarray]:
    """:func:`partition` with the settings of a :class:`PartitionConfig`."""
    return partition(
        table, config.scheme, config.n_clients, seed=seed, alpha=config.alpha, by=config.by,
        classes_per_client=config.classes_per_client, min_size=config.min_size,
        max_attempts=config.max_attempts, host_column=config.host_column,
    )  # fmt: skip


def class_histogram(table: FlowTable | pd.DataFrame, parts: list[np.ndarray], by: str = ATTACK_CAT) -> dict:
    """Per-client class counts, JSON-friendly: ``{"0": {class: count, ...}, ...}``.

    Client ids and class names are strings; every client lists every class of the table (zeros included) in
    one order, most frequent class first, so plots use consistent colours.
    """
    frame = _frame(table)
    if by not in frame.columns:
        raise ValueError(f"class column {by!r} not in the table (columns: {', '.join(map(str, frame.columns))})")
    values = frame[by].astype(str).to_numpy()
    order = pd.Series(values).value_counts(sort=False)
    classes = sorted(order.index, key=lambda c: (-int(order[c]), c))
    histogram = {}
    for client, rows in enumerate(parts):
        counts = pd.Series(values[np.asarray(rows, dtype=np.int64)]).value_counts()
        histogram[str(client)] = {c: int(counts.get(c, 0)) for c in classes}
    return histogram


def client_distances(histogram: dict) -> dict[str, float]:
    """Total-variation distance between each client's class distribution and the pooled one (0 = identical)."""
    counts = np.array([list(h.values()) for h in histogram.values()], dtype=np.float64)
    pooled = counts.sum(axis=0) / max(counts.sum(), 1.0)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    distances = 0.5 * np.abs(shares - pooled).sum(axis=1)
    return {client: float(d) for client, d in zip(histogram, distances)}


def mean_tv_distance(histogram: dict) -> float:
    """Mean over clients of :func:`client_distances`: one number for how non-IID a partition is."""
    return float(np.mean(list(client_distances(histogram).values())))


# --- validation -------------------------------------------------------------------------------------------


def _check_settings(
    scheme: str, n_clients: int, alpha: float, by: str, classes_per_client: int, min_size: int, max_attempts: int
) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; expected one of: {', '.join(SCHEMES)}")
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise ValueError(f"n_clients must be an integer >= 1, got {n_clients!r}")
    if not isinstance(alpha, (int, float, np.number)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0 (Dirichlet concentration), got {alpha!r}")
    if by not in CLASS_COLUMNS:
        raise ValueError(f"by must be one of: {', '.join(CLASS_COLUMNS)}; got {by!r}")
    if not isinstance(classes_per_client, (int, np.integer)) or classes_per_client < 1:
        raise ValueError(f"classes_per_client must be an integer >= 1, got {classes_per_client!r}")
    if not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1 (an empty client cannot train), got {min_size!r}")
    if not isinstance(max_attempts, (int, np.integer)) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")


def _check_size(n_rows: int, n_clients: int, min_size: int) -> None:
    if n_clients > n_rows:
        raise ValueError(f"more clients ({n_clients}) than records ({n_rows})")
    if n_clients * min_size > n_rows:
        raise ValueError(
            f"n_clients * min_size = {n_clients} * {min_size} = {n_clients * min_size} exceeds the {n_rows} "
            "records; lower min_size or use fewer clients"
        )


def _frame(table: FlowTable | pd.DataFrame) -> pd.DataFrame:
    return table.frame if isinstance(table, FlowTable) else table


def _source(table: FlowTable | pd.DataFrame) -> str:
    return f"source {table.source!r}" if isinstance(table, FlowTable) else "the table"


def _class_codes(frame: pd.DataFrame, by: str) -> tuple[np.ndarray, list[str]]:
    """Integer class code per row and the class names (sorted, as strings)."""
    if by not in frame.columns:
        raise ValueError(f"class column {by!r} not in the table (columns: {', '.join(map(str, frame.columns))})")
    codes, names = pd.factorize(frame[by].astype(str), sort=True)
    return codes.astype(np.int64), [str(n) for n in names]


def _split_counts(n: int, proportions: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``n``, following ``proportions`` (cumulative rounding)."""
    bounds = np.round(np.cumsum(proportions) * n).astype(np.int64)
    bounds[-1] = n
    return np.diff(np.concatenate([[0], np.minimum(bounds, n)]))


def _deal(rows: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Cut ``rows`` into consecutive pieces of the given sizes."""
    return np.split(rows, np.cumsum(counts)[:-1])


# --- schemes ------------------------------------------------------------------------------------------------


def _iid(n_rows: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n_rows), n_clients)


def _dirichlet(
    classes: tuple[np.ndarray, list[str]],
    n_clients: int,
    alpha: float,
    min_size: int,
    max_attempts: int,
    rng: np.random.Generator,
    by: str,
) -> list[np.ndarray]:
    """Per class, proportions over clients ~ Dir(alpha); redraw until every client has ``min_size`` rows."""
    codes, names = classes
    class_sizes = np.bincount(codes, minlength=len(names))
    smallest = 0
    for attempt in range(1, max_attempts + 1):
        proportions = rng.dirichlet(np.full(n_clients, alpha), size=len(names))
        counts = np.stack([_split_counts(int(n), p) for n, p in zip(class_sizes, proportions)])
        smallest = int(counts.sum(axis=0).min())
        if smallest >= min_size:
            log.debug("dirichlet alpha=%g accepted after %d attempt(s)", alpha, attempt)
            break
    else:
        raise ValueError(
            f"dirichlet partition infeasible: alpha={alpha:g} over {by!r} ({len(names)} classes) left some client "
            f"below min_size={min_size} in all {max_attempts} attempts (smallest client in the last draw: "
            f"{smallest} rows); raise alpha, lower min_size or use fewer clients"
        )
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in range(len(names)):
        rows = rng.permutation(np.flatnonzero(codes == c))
        for client, piece in enumerate(_deal(rows, counts[c])):
            parts[client].append(piece)
    return [np.concatenate(p) for p in parts]


def _shard_counts(class_sizes: np.ndarray, n_shards: int, n_clients: int) -> np.ndarray:
    """Shards per class, proportional to class size, each between 1 and ``n_clients``, summing to ``n_shards``."""
    target = n_shards * class_sizes / class_sizes.sum()
    counts = np.clip(np.floor(target), 1, n_clients).astype(np.int64)
    while counts.sum() > n_shards:  # small classes lifted to one shard: take back where most over target
        counts[np.argmax(np.where(counts > 1, counts - target, -np.inf))] -= 1
    while counts.sum() < n_shards:  # hand out the rest where most under target
        counts[np.argmax(np.where(counts < n_clients, target - counts, -np.inf))] += 1
    return counts


def _pathological(
    classes: tuple[np.ndarray, list[str]],
    n_clients: int,
    k: int,
    min_size: int,
    max_attempts: int,
    rng: np.random.Generator,
    by: str,
) -> list[np.ndarray]:
    """Every client gets k shards of k distinct classes (McMahan et al. 2017, shards cut at class boundaries).

    There are ``n_clients * k`` shards; each class gets a number of shards proportional to its size (at least
    one, at most one per client) and its rows are cut into equal shards. Shards, grouped by class in a seeded
    class order, are dealt round-robin to the clients in a seeded order, so no client gets two shards of one
    class and every row is assigned. Redrawn (up to ``max_attempts`` times) until every client has ``min_size``
    rows.
    """
    codes, names = classes
    n_classes = len(names)
    if k > n_classes:
        raise ValueError(f"classes_per_client={k} exceeds the {n_classes} classes in {by!r} ({', '.join(names)})")
    if n_clients * k < n_classes:
        raise ValueError(
            f"pathological partition would leave rows unassigned: {n_clients} clients * classes_per_client={k} "
            f"< {n_classes} classes in {by!r}; use more clients, a larger classes_per_client or by='label'"
        )
    class_sizes = np.bincount(codes, minlength=n_classes)
    shards = _shard_counts(class_sizes.astype(np.float64), n_clients * k, n_clients)
    shard_sizes = [np.array([len(a) for a in np.array_split(np.empty(n), h)]) for n, h in zip(class_sizes, shards)]
    smallest = 0
    for _ in range(max_attempts):
        class_order, client_order = rng.permutation(n_classes), rng.permutation(n_clients)
        slots = np.repeat(class_order, shards[class_order])  # shard j goes to client_order[j % n_clients]
        owners = client_order[np.arange(len(slots)) % n_clients]
        sizes = np.bincount(owners, weights=np.concatenate([shard_sizes[c] for c in class_order]),
                            minlength=n_clients)  # fmt: skip
        smallest = int(sizes.min())
        if smallest >= min_size:
            break
    else:
        raise ValueError(
            f"pathological partition infeasible: with classes_per_client={k} over {by!r} some client stayed below "
            f"min_size={min_size} in all {max_attempts} attempts (smallest client: {smallest} rows); raise "
            "classes_per_client, lower min_size or use fewer clients"
        )
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    start = 0
    for c in class_order:
        rows = rng.permutation(np.flatnonzero(codes == c))
        for shard, owner in zip(np.array_split(rows, shards[c]), owners[start : start + shards[c]]):
            parts[owner].append(shard)
        start += shards[c]
    return [np.concatenate(p) for p in parts]


def _quantity_skew(
    n_rows: int, n_clients: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Sizes = min_size + Dir(alpha) shares of the remaining rows; rows dealt at random (labels stay IID).

    The floor replaces rejection sampling, which for small alpha would almost never meet ``min_size``.
    """
    extra = _split_counts(n_rows - n_clients * min_size, rng.dirichlet(np.full(n_clients, alpha)))
    return _deal(rng.permutation(n_rows), extra + min_size)


def _by_host(
    frame: pd.DataFrame,
    n_clients: int,
    min_size: int,
    rng: np.random.Generator,
    host_column: str,
    source: str,
) -> list[np.ndarray]:
    """All rows of one host on one client; hosts (largest first) go to the currently smallest client."""
    if host_column not in frame.columns:
        raise ValueError(
            f"by_host needs a '{host_column}' column but {source} has none; use a source with IP addresses "
            "(unsw-nb15-raw, iot-23) or another scheme"
        )
    codes, hosts = pd.factorize(frame[host_column], use_na_sentinel=False)
    if len(hosts) < n_clients:
        raise ValueError(f"by_host: {source} has {len(hosts)} distinct '{host_column}' hosts, fewer than the "
                         f"{n_clients} clients")  # fmt: skip
    host_sizes = np.bincount(codes, minlength=len(hosts))
    names = np.array([str(h) for h in hosts])
    host_order = np.lexsort((names, -host_sizes))  # largest first, ties by name
    client_order = rng.permutation(n_clients)  # seeded tie-break among equally loaded clients
    loads = np.zeros(n_clients, dtype=np.int64)
    owner = np.empty(len(hosts), dtype=np.int64)
    for h in host_order:
        client = client_order[int(np.argmin(loads[client_order]))]
        owner[h] = client
        loads[client] += host_sizes[h]
    if loads.min() < min_size:
        raise ValueError(
            f"by_host: the greedy balanced assignment of {len(hosts)} hosts to {n_clients} clients leaves a client "
            f"with {int(loads.min())} rows < min_size={min_size}; use fewer clients or a lower min_size"
        )
    row_owner = owner[codes]
    return [np.flatnonzero(row_owner == c) for c in range(n_clients)]


def _sites(table: FlowTable | pd.DataFrame) -> np.ndarray:
    if isinstance(table, FlowTable):
        return table.sites()
    return (table[SITE].astype(str).to_numpy(dtype=object) if SITE in table.columns
            else np.full(len(table), "", dtype=object))  # fmt: skip


def _by_site(sites: np.ndarray, n_clients: int, min_size: int, source: str) -> list[np.ndarray]:
    """One site per client (as many clients as sites), or sites grouped onto fewer clients, largest first."""
    codes, names = pd.factorize(pd.Series(sites, dtype=object), use_na_sentinel=False)
    if n_clients > len(names):
        raise ValueError(f"by_site: {source} has {len(names)} site(s) ({', '.join(map(str, names))}), fewer than the "
                         f"{n_clients} clients; set partition.n_clients (and the federation's nodes) to "
                         f"{len(names)} or fewer")  # fmt: skip
    sizes = np.bincount(codes, minlength=len(names))
    owner = np.arange(len(names))
    if n_clients < len(names):
        loads = np.zeros(n_clients, dtype=np.int64)
        for site in np.lexsort((np.array([str(n) for n in names]), -sizes)):
            owner[site] = int(np.argmin(loads))
            loads[owner[site]] += sizes[site]
    parts = [np.flatnonzero(owner[codes] == c) for c in range(n_clients)]
    small = [(str(names[i]), int(sizes[i])) for i in range(len(names)) if len(parts[owner[i]]) < min_size]
    if small:
        raise ValueError(f"by_site: site(s) {small} leave a client with fewer than min_size={min_size} rows; lower "
                         "partition.min_size or use fewer clients")  # fmt: skip
    return parts
