"""Published robust aggregators that Flower 1.42 does not ship, as numpy functions over update vectors.

Each takes the (n, d) matrix of client updates (client weights - global weights) and returns the aggregated
update and the indices of the updates it let in (for the run report).

* FLTrust (Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping",
  NDSS 2021): trust score ReLU(cos(g_i, g_0)) against the server's own update g_0 on a small clean root
  dataset; every update rescaled to ||g_0||; the trust-weighted mean.
* FLAME (Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX Security 2022): HDBSCAN over
  cosine distances (min cluster size n/2 + 1) keeps the majority cluster; updates clipped to the median norm
  S of all updates; the mean plus Gaussian noise of standard deviation lambda * S.
* Centered clipping (Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust Optimization",
  ICML 2021): v <- v + mean_i clip(x_i - v, tau), iterated from the previous round's aggregate; tau defaults
  to the median distance ||x_i - v|| (adaptive) unless given.
"""

from __future__ import annotations

import numpy as np

from strategies.screening import majority_cluster


def _clip(vectors: np.ndarray, bound: float) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors * np.minimum(1.0, bound / np.maximum(norms, 1e-12))


def fltrust(updates: np.ndarray, server_update: np.ndarray) -> tuple[np.ndarray, list[int]]:
    server_norm = float(np.linalg.norm(server_update))
    norms = np.linalg.norm(updates, axis=1)
    cos = (updates @ server_update) / np.maximum(norms * server_norm, 1e-12)
    trust = np.maximum(cos, 0.0)
    if trust.sum() <= 0:
        return np.zeros_like(server_update), []
    rescaled = updates * (server_norm / np.maximum(norms, 1e-12))[:, None]
    return (trust[:, None] * rescaled).sum(axis=0) / trust.sum(), [int(i) for i in np.flatnonzero(trust > 0)]


def flame(updates: np.ndarray, noise_lambda: float, rng: np.random.Generator,
          min_epsilon: float = 0.05) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    admitted = np.flatnonzero(majority_cluster(updates, min_epsilon))
    bound = float(np.median(np.linalg.norm(updates, axis=1)))
    aggregate = _clip(updates[admitted], bound).mean(axis=0)
    return aggregate + rng.normal(0.0, noise_lambda * bound, size=aggregate.shape), [int(i) for i in admitted]


def centered_clipping(updates: np.ndarray, previous: np.ndarray | None, iterations: int = 3,
                      tau: float | None = None) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    v = np.zeros(updates.shape[1]) if previous is None else np.asarray(previous, dtype=np.float64)
    for _ in range(iterations):
        offsets = updates - v
        radius = float(np.median(np.linalg.norm(offsets, axis=1))) if tau is None else float(tau)
        v = v + _clip(offsets, radius).mean(axis=0)
    return v, list(range(len(updates)))
