"""Evaluation splits of host-graph windows (numpy only): chronological, leave-one-site-out, leave-hosts-out.

Window splits return positions into a list of windows (graphs, or window keys before the graphs exist): a window
is never on two sides. Leave-hosts-out splits flows (rows) by their originating host, before the graphs are built:
build each side's graphs from its own rows, so no node feature of a training graph counts a held-out host's flows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flows.graphs.hostgraph import HostGraph

__all__ = ["WindowSplit", "chronological_split", "leave_hosts_out", "leave_one_site_out", "select", "window_keys"]


@dataclass(frozen=True)
class WindowSplit:
    """Positions (sorted int64) of the training, validation and test windows."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def __post_init__(self) -> None:
        sides = [set(self.train.tolist()), set(self.val.tolist()), set(self.test.tolist())]
        if sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2]:
            raise ValueError("a window is on two sides of the split")

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def window_keys(graphs: list[HostGraph]) -> tuple[np.ndarray, np.ndarray]:
    """(start times, sites) of ``graphs``: what the window splits read."""
    return (np.array([g.start for g in graphs], dtype=np.float64), np.array([g.site for g in graphs], dtype=object))


def select(graphs: list[HostGraph], positions: np.ndarray) -> list[HostGraph]:
    return [graphs[int(i)] for i in positions]


def _count(n: int, fraction: float, what: str) -> int:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {fraction}")
    return 0 if fraction == 0 else max(1, int(round(fraction * n)))


def _chronological(positions: np.ndarray, starts: np.ndarray, test_fraction: float, val_fraction: float,
                   strict: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    ordered = positions[np.argsort(starts[positions], kind="stable")]
    n_test, n_val = _count(len(ordered), test_fraction, "test_fraction"), _count(len(ordered), val_fraction,
                                                                               "val_fraction")  # fmt: skip
    n_train = len(ordered) - n_test - n_val
    if n_train < 1 and not strict:  # a site too small to give up windows keeps them all for training
        return ordered, ordered[:0], ordered[:0]
    if n_train < 1:
        raise ValueError(f"{len(ordered)} window(s) cannot give {n_val} validation and {n_test} test window(s) and "
                         "still leave one for training: use smaller windows or fractions")  # fmt: skip
    return ordered[:n_train], ordered[n_train:n_train + n_val], ordered[n_train + n_val:]


def chronological_split(starts: np.ndarray, test_fraction: float = 0.2, val_fraction: float = 0.1,
                        sites: np.ndarray | None = None, *, strict: bool = True) -> WindowSplit:  # fmt: skip
    """Per site, its earliest windows train, the next ones validate and its latest ones test (shares of its
    windows, at least one where the share is > 0). ``starts`` are the windows' start times. A site with too few
    windows raises ValueError, or with ``strict=False`` keeps all its windows for training."""
    starts = np.asarray(starts, dtype=np.float64)
    sites = np.zeros(len(starts), dtype=object) if sites is None else np.asarray(sites, dtype=object)
    parts: list[list[np.ndarray]] = [[], [], []]
    for site in sorted(set(sites.tolist()), key=str):
        for part, side in zip(parts, _chronological(np.flatnonzero(sites == site), starts, test_fraction,
                                                    val_fraction, strict)):  # fmt: skip
            part.append(side)
    return WindowSplit(*(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts))


def leave_one_site_out(starts: np.ndarray, sites: np.ndarray, test_site: str,
                       val_fraction: float = 0.1) -> WindowSplit:  # fmt: skip
    """Every window of ``test_site`` tests; the other sites train on their earlier windows and validate on their
    latest ``val_fraction`` (per site; a site with too few windows trains on all of them)."""
    sites = np.asarray(sites, dtype=object)
    if test_site not in set(sites.tolist()):
        raise ValueError(f"site {test_site!r} has no window; sites: {sorted(set(map(str, sites.tolist())))}")
    test = np.flatnonzero(sites == test_site).astype(np.int64)
    rest = np.flatnonzero(sites != test_site)
    if len(rest) == 0:
        raise ValueError(f"leave-one-site-out needs a second site besides {test_site!r}")
    inner = chronological_split(np.asarray(starts)[rest], 0.0, val_fraction, sites[rest], strict=False)
    return WindowSplit(rest[inner.train].astype(np.int64), rest[inner.val].astype(np.int64), test)


def leave_hosts_out(src: np.ndarray, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows) of flows: originating hosts are drawn (seeded) into the test side until it holds
    ``test_fraction`` of the flows; every flow goes with its source host. The addresses only group flows here.
    A host that alone sends more than the share (IoT-23 34-1: one device sends all but one flow) makes the test
    side larger than asked; both sides must keep at least one flow."""
    src = np.asarray(src, dtype=object)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    hosts, inverse, counts = np.unique(src, return_inverse=True, return_counts=True)
    if len(hosts) < 2:
        raise ValueError(f"leave-hosts-out needs at least two originating hosts, got {len(hosts)}")
    order = np.random.default_rng(seed).permutation(len(hosts))
    reached = np.cumsum(counts[order]) >= test_fraction * len(src)
    n_test_hosts = int(np.argmax(reached)) + 1 if reached.any() else len(hosts)
    n_test_hosts = min(n_test_hosts, len(hosts) - 1)
    in_test = np.zeros(len(hosts), dtype=bool)
    in_test[order[:n_test_hosts]] = True
    return np.flatnonzero(~in_test[inverse]).astype(np.int64), np.flatnonzero(in_test[inverse]).astype(np.int64)
