"""Partitioners for federated clients: coverage, seeding, skew, min size, host integrity, errors, plots."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flows.partitioning import (
    SCHEMES,
    PartitionConfig,
    class_histogram,
    client_distances,
    mean_tv_distance,
    partition,
    partition_from_config,
)
from flows.table import FlowTable

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAMILIES = ["Normal", "Exploits", "DoS", "Fuzzers", "Worms"]


def synthetic(n: int = 2000, n_hosts: int = 40, with_ips: bool = True, seed: int = 0) -> FlowTable:
    """A small flow table: imbalanced families, label = family != Normal, optionally source IPs."""
    rng = np.random.default_rng(seed)
    family = rng.choice(FAMILIES, size=n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    frame = pd.DataFrame({
        "dur": rng.exponential(1.0, n),
        "label": (family != "Normal").astype(np.int8),
        "attack_cat": family,
    })  # fmt: skip
    if with_ips:
        hosts = [f"10.0.{i // 256}.{i % 256}" for i in range(n_hosts)]
        frame["src_ip"] = rng.choice(hosts, size=n, p=np.arange(1, n_hosts + 1) / (n_hosts * (n_hosts + 1) / 2))
        frame["dst_ip"] = "192.168.0.1"
    return FlowTable(frame=frame, numeric_features=["dur"], categorical_features=[], source="synthetic", path="-")


@pytest.fixture(scope="module")
def raw_table(data_dir) -> FlowTable:
    from flows.loader import load_dataset

    return load_dataset("unsw-nb15-raw", data_dir, file="UNSW-NB15_1.first3000.csv")


def assert_cover(parts: list[np.ndarray], n_rows: int) -> None:
    """Disjoint, sorted, union = every row."""
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
    together = np.concatenate(parts)
    assert len(together) == n_rows
    assert np.array_equal(np.sort(together), np.arange(n_rows))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# --- coverage, seeding, min size --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "pathological", "quantity_skew"])
def test_real_table_every_row_once_and_min_size(unsw_table, scheme):
    parts = partition(unsw_table, scheme, 10, seed=0, min_size=30)
    assert len(parts) == 10
    assert_cover(parts, 82_332)
    assert min(len(p) for p in parts) >= 30


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "by_site"])  # by_site draws nothing: sites decide
def test_seeded(scheme):
    table = synthetic()
    a = partition(table, scheme, 8, seed=1, alpha=0.5)
    assert_cover(a, len(table))
    assert same(a, partition(table, scheme, 8, seed=1, alpha=0.5))
    assert not same(a, partition(table, scheme, 8, seed=2, alpha=0.5))


def test_iid_sizes_and_mix(unsw_table):
    parts = partition(unsw_table, "iid", 7, seed=3)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert mean_tv_distance(class_histogram(unsw_table, parts, "attack_cat")) < 0.03


@pytest.mark.parametrize("by", ["attack_cat", "label"])
def test_dirichlet_small_alpha_is_more_skewed(unsw_table, by):
    def skew(alpha: float) -> float:
        return float(np.mean([mean_tv_distance(class_histogram(unsw_table, partition(
            unsw_table, "dirichlet", 10, seed=s, alpha=alpha, by=by), by)) for s in range(3)]))  # fmt: skip

    low, high = skew(0.1), skew(100.0)
    assert high < 0.06  # alpha 100: close to IID
    assert low > high + 0.25  # alpha 0.1: far from it (measured about 0.6 vs 0.03 over families)


def test_dirichlet_min_size_holds(unsw_table):
    parts = partition(unsw_table, "dirichlet", 20, seed=0, alpha=0.2, min_size=500)
    assert_cover(parts, len(unsw_table))
    assert min(len(p) for p in parts) >= 500


def test_dirichlet_infeasible_names_alpha_and_min_size():
    with pytest.raises(ValueError, match=r"dirichlet partition infeasible: alpha=0\.01.*min_size=90.*50 attempts"):
        partition(synthetic(), "dirichlet", 20, seed=0, alpha=0.01, by="label", min_size=90, max_attempts=50)


@pytest.mark.parametrize(("k", "by", "n_clients"), [(1, "attack_cat", 10), (2, "attack_cat", 10), (3, "attack_cat", 25),
                                                    (1, "label", 6)])  # fmt: skip
def test_pathological_at_most_k_classes(unsw_table, k, by, n_clients):
    parts = partition(unsw_table, "pathological", n_clients, seed=0, classes_per_client=k, by=by)
    assert_cover(parts, len(unsw_table))
    histogram = class_histogram(unsw_table, parts, by)
    assert all(sum(v > 0 for v in counts.values()) <= k for counts in histogram.values())
    assert mean_tv_distance(histogram) > 0.3


def test_pathological_infeasible_settings():
    table = synthetic()
    with pytest.raises(ValueError, match="classes_per_client=6 exceeds the 5 classes in 'attack_cat'"):
        partition(table, "pathological", 4, seed=0, classes_per_client=6)
    with pytest.raises(ValueError, match=r"leave rows unassigned: 2 clients \* classes_per_client=2 < 5 classes"):
        partition(table, "pathological", 2, seed=0, classes_per_client=2)
    with pytest.raises(ValueError, match="pathological partition infeasible.*min_size=150"):
        partition(table, "pathological", 10, seed=0, classes_per_client=1, min_size=150, max_attempts=20)


def test_quantity_skew_unequal_sizes_global_mix(unsw_table):
    parts = partition(unsw_table, "quantity_skew", 10, seed=0, alpha=0.5, min_size=20)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 20 and sizes.max() > 5 * sizes.min()
    distances = client_distances(class_histogram(unsw_table, parts, "label"))
    big = [d for d, n in zip(distances.values(), sizes) if n >= 1000]
    assert len(big) >= 5 and max(big) < 0.06  # label shares of each sizeable client close to the global ones


def test_by_host_keeps_hosts_together(raw_table):
    frame = raw_table.frame
    parts = partition(raw_table, "by_host", 5, seed=0)
    assert_cover(parts, len(raw_table))
    owner = np.empty(len(frame), dtype=np.int64)
    for client, rows in enumerate(parts):
        owner[rows] = client
    assert (pd.Series(owner).groupby(frame["src_ip"].to_numpy()).nunique() == 1).all()
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= frame["src_ip"].value_counts().max()  # greedy balancing


def test_by_host_errors(unsw_table, raw_table):
    with pytest.raises(ValueError, match="by_host needs a 'src_ip' column but source 'unsw-nb15' has none"):
        partition(unsw_table, "by_host", 5, seed=0)
    hosts = raw_table.frame["src_ip"].nunique()
    with pytest.raises(ValueError, match=f"has {hosts} distinct 'src_ip' hosts, fewer than the {hosts + 1} clients"):
        partition(raw_table, "by_host", hosts + 1, seed=0, min_size=1)


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "shards"}, "unknown partition scheme 'shards'; expected one of: iid, dirichlet, pathological"),
        ({"alpha": 0.0}, "alpha must be a finite number > 0"),
        ({"alpha": -1.0}, "alpha must be a finite number > 0"),
        ({"alpha": float("nan")}, "alpha must be a finite number > 0"),
        ({"n_clients": 0}, "n_clients must be an integer >= 1"),
        ({"n_clients": 101, "min_size": 1}, r"more clients \(101\) than records \(100\)"),
        ({"n_clients": 11, "min_size": 10}, r"n_clients \* min_size = 11 \* 10 = 110 exceeds the 100 records"),
        ({"by": "proto"}, "by must be one of: attack_cat, label"),
        ({"min_size": 0}, "min_size must be an integer >= 1"),
        ({"classes_per_client": 0}, "classes_per_client must be an integer >= 1"),
    ],
)
def test_bad_input_raises(kwargs, message):
    args = {"scheme": "dirichlet", "n_clients": 4, "alpha": 0.5, "min_size": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        partition(synthetic(100), args.pop("scheme"), args.pop("n_clients"), seed=0, **args)


def test_config_validates_and_drives_partition():
    table = synthetic()
    config = PartitionConfig(scheme="dirichlet", n_clients=5, alpha=0.3, by="label", min_size=20)
    assert same(partition_from_config(table, config, seed=4),
                partition(table, "dirichlet", 5, seed=4, alpha=0.3, by="label", min_size=20))  # fmt: skip
    with pytest.raises(ValueError, match="unknown partition scheme 'natural'"):
        PartitionConfig(scheme="natural")
    with pytest.raises(ValueError, match="alpha must be"):
        PartitionConfig(alpha=0)


# --- histogram and plot -------------------------------------------------------------------------------------


def test_class_histogram_json_friendly(unsw_table):
    parts = partition(unsw_table, "dirichlet", 6, seed=0, alpha=0.5)
    histogram = class_histogram(unsw_table, parts, "attack_cat")
    assert json.loads(json.dumps(histogram)) == histogram
    assert list(histogram) == [str(i) for i in range(6)]
    orders = {tuple(counts) for counts in histogram.values()}
    assert len(orders) == 1 and next(iter(orders))[0] == "Normal"  # same class order everywhere, biggest first
    assert [sum(c.values()) for c in histogram.values()] == [len(p) for p in parts]
    totals = {c: sum(h[c] for h in histogram.values()) for c in histogram["0"]}
    assert totals == unsw_table.frame["attack_cat"].value_counts().to_dict()
    assert set(class_histogram(unsw_table, parts, "label")["0"]) == {"0", "1"}


def test_plot_and_report_write_png_and_json(tmp_path):
    from simulation.partition_plots import plot_class_histogram, write_partition_report

    table = synthetic()
    histogram = class_histogram(table, partition(table, "pathological", 6, seed=0, classes_per_client=2), "attack_cat")
    path = plot_class_histogram(histogram, tmp_path / "plots" / "hist.png", "pathological k=2")
    assert path.read_bytes()[:8] == PNG_MAGIC
    written = write_partition_report(json.loads(json.dumps(histogram)), tmp_path, "again", extra={"scheme": "x"})
    assert written["png"].read_bytes()[:8] == PNG_MAGIC
    payload = json.loads(written["json"].read_text())
    assert payload["scheme"] == "x" and payload["histogram"] == histogram
    assert payload["sizes"] == {k: sum(v.values()) for k, v in histogram.items()}
