"""Screening of client updates before aggregation: the numpy core (no Flower, no torch).

Each round, every client's update is the difference between the weights it returns and the broadcast global
weights, flattened to one vector. Four views score it:

* ``norm``: its L2 norm (scaling, noise and model-replacement updates are large);
* ``cosine``: cosine similarity to the coordinate-wise median update, a reference that a minority of
  attackers cannot drag (sign flipping, IPM and label flipping point away from it);
* ``krum``: Krum's score, the summed squared distance to its n - f - 2 nearest neighbours (Blanchard et al.,
  "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017);
* ``cluster``: whether it falls outside the majority cluster of an HDBSCAN over pairwise cosine distances with
  a minimum cluster size of n/2 + 1, as in FLAME (Nguyen et al., "FLAME: Taming Backdoors in Federated
  Learning", USENIX Security 2022).

A view flags a client when the client's robust z-score (distance from the median in units of 1.4826 x MAD,
never a fixed threshold on the raw score) exceeds ``z_threshold`` in the view's bad direction. A client is
rejected when at least ``min_votes`` views flag it or when its reputation (an exponential moving average of its
clean rounds) falls below ``reputation_floor``. Accepted updates are clipped to the median norm of the accepted
updates. Every decision carries the scores and the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation


@dataclass(frozen=True)
class ScreeningConfig:
    z_threshold: float = 3.0  # robust z-score beyond which a view flags a client
    min_votes: int = 2  # views that must flag a client to reject it this round
    assumed_malicious: float = 0.3  # share f/n used by the Krum score
    reputation_decay: float = 0.6  # weight of the past in the reputation's moving average
    reputation_floor: float = 0.7  # below this a client stays rejected until it earns trust back (with decay
    # 0.6: a single flagged round costs nothing more; after two, a client needs two clean rounds to return)
    clip: bool = True  # clip accepted updates to the median accepted norm
    use_clustering: bool = True
    # spread floors, so that near-identical benign updates do not turn tiny differences into huge z-scores
    relative_spread_floor: float = 0.05  # of |median| for norm and krum
    cosine_spread_floor: float = 0.05

    def __post_init__(self) -> None:
        if self.z_threshold <= 0:
            raise ValueError(f"z_threshold must be > 0, got {self.z_threshold}")
        if not 1 <= self.min_votes <= 4:
            raise ValueError(f"min_votes must be in 1..4, got {self.min_votes}")
        if not 0.0 <= self.assumed_malicious < 0.5:
            raise ValueError(f"assumed_malicious must be in [0, 0.5), got {self.assumed_malicious}")
        if not 0.0 <= self.reputation_decay < 1.0:
            raise ValueError(f"reputation_decay must be in [0, 1), got {self.reputation_decay}")


@dataclass
class Decision:
    """One client's verdict in one round."""

    client: int
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    reputation: float = 1.0
    clip_factor: float = 1.0

    def as_dict(self) -> dict:
        return {"client": self.client, "verdict": "accept" if self.accepted else "reject",
                "reasons": list(self.reasons), "scores": dict(self.scores), "reputation": self.reputation,
                "clip_factor": self.clip_factor}  # fmt: skip


def robust_z(values: np.ndarray, spread_floor: float = 0.0) -> np.ndarray:
    """(x - median) / (1.4826 * MAD), with the spread never below ``spread_floor`` (and never zero)."""
    values = np.asarray(values, dtype=np.float64)
    median = np.median(values)
    spread = max(MAD_SCALE * float(np.median(np.abs(values - median))), spread_floor, 1e-12)
    return (values - median) / spread


def cosine_to(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(reference)), 1e-12)
    return (vectors @ reference) / np.maximum(norms, 1e-12)


def krum_scores(vectors: np.ndarray, n_malicious: int) -> np.ndarray:
    """Krum's score of each vector: the sum of squared distances to its n - f - 2 nearest others."""
    n = len(vectors)
    squared = np.sum(vectors**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * vectors @ vectors.T, 0.0)
    k = max(n - n_malicious - 2, 1)
    np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, : min(k, n - 1)].sum(axis=1)


def majority_cluster(vectors: np.ndarray, min_epsilon: float = 0.0) -> np.ndarray:
    """True for members of the largest HDBSCAN cluster over cosine distances (min cluster size n/2 + 1).

    HDBSCAN calls some points of any single blob noise; clusters closer than 1.1 times the typical distance
    from a point to its (n/2)-th nearest neighbour are merged (``cluster_selection_epsilon``), a scale taken
    from the data: for a member of the majority that neighbour is in the majority too. (On synthetic rounds of
    10 heterogeneous benign updates, factors 1.0 / 1.1 / 1.5 gave 11 / 0 / 0 false-positive rounds in 100 and
    caught 3 sign flippers in 100 / 95 / 53 of them.) ``min_epsilon`` keeps near-identical directions together."""
    n = len(vectors)
    if n < 3:
        return np.ones(n, dtype=bool)
    from sklearn.cluster import HDBSCAN

    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    distances = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    typical = float(np.median(np.sort(distances, axis=1)[:, n // 2]))
    epsilon = max(1.1 * typical, min_epsilon, 1e-12)
    labels = HDBSCAN(min_cluster_size=n // 2 + 1, min_samples=1, metric="precomputed", allow_single_cluster=True,
                     cluster_selection_epsilon=epsilon, copy=True).fit(distances).labels_  # fmt: skip
    clustered = labels[labels >= 0]
    if len(clustered) == 0:
        return np.ones(n, dtype=bool)  # no structure found: the view abstains
    return labels == np.bincount(clustered).argmax()


def view_scores(deltas: np.ndarray, config: ScreeningConfig) -> dict[str, np.ndarray]:
    """Raw scores of every view for the (n, d) matrix of flattened updates."""
    n = len(deltas)
    scores = {
        "norm": np.linalg.norm(deltas, axis=1),
        "cosine": cosine_to(deltas, np.median(deltas, axis=0)),
        "krum": krum_scores(deltas, int(config.assumed_malicious * n)),
    }
    if config.use_clustering:
        scores["cluster"] = majority_cluster(deltas, config.cosine_spread_floor).astype(np.float64)
    return scores


def view_flags(scores: dict[str, np.ndarray], config: ScreeningConfig) -> dict[str, np.ndarray]:
    """Per view, True where a client is an outlier in the view's bad direction."""
    k = config.z_threshold
    flags = {
        "norm": robust_z(scores["norm"], config.relative_spread_floor * float(np.median(scores["norm"]))) > k,
        "cosine": robust_z(scores["cosine"], config.cosine_spread_floor) < -k,
        "krum": robust_z(scores["krum"], config.relative_spread_floor * float(np.median(scores["krum"]))) > k,
    }
    if "cluster" in scores:
        flags["cluster"] = scores["cluster"] < 0.5
    return flags


class UpdateScreen:
    """Stateful screening across rounds (the reputations); ``screen`` is one round."""

    def __init__(self, config: ScreeningConfig | None = None) -> None:
        self.config = config or ScreeningConfig()
        self.reputation: dict[int, float] = {}

    def screen(self, clients: list[int], deltas: np.ndarray) -> tuple[list[Decision], np.ndarray]:
        """Decisions for ``clients`` (ids, in the rows' order) and the clipped deltas of the accepted ones.

        Returns (decisions in input order, array (n_accepted, d) of clipped accepted deltas in input order).
        With fewer than 3 updates no statistics are possible: all are accepted (and clipped) unless a
        reputation says otherwise.
        """
        config = self.config
        deltas = np.asarray(deltas, dtype=np.float64)
        n = len(clients)
        if deltas.shape[0] != n:
            raise ValueError(f"{n} clients but {deltas.shape[0]} updates")
        scores = view_scores(deltas, config) if n >= 3 else {"norm": np.linalg.norm(deltas, axis=1)}
        flags = view_flags(scores, config) if n >= 3 else {}
        decisions = []
        for i, client in enumerate(clients):
            flagged = [view for view, mask in flags.items() if mask[i]]
            clean_round = len(flagged) < config.min_votes
            previous = self.reputation.get(client, 1.0)
            reputation = config.reputation_decay * previous + (1 - config.reputation_decay) * float(clean_round)
            self.reputation[client] = reputation
            rejections = []
            if not clean_round:
                rejections.append("outlier in " + ", ".join(flagged))
            if reputation < config.reputation_floor:
                rejections.append(f"reputation {reputation:.2f} < {config.reputation_floor}")
            notes = list(rejections)
            if not rejections and flagged:
                notes.append(f"flagged by {', '.join(flagged)} only (below min_votes)")
            decisions.append(Decision(client=client, accepted=not rejections, reasons=notes,
                                      scores={k: float(v[i]) for k, v in scores.items()},
                                      reputation=reputation))  # fmt: skip
        accepted = np.array([d.accepted for d in decisions], dtype=bool)
        kept = deltas[accepted]
        if config.clip and len(kept):
            norms = np.linalg.norm(kept, axis=1)
            bound = float(np.median(norms))
            factors = np.minimum(1.0, bound / np.maximum(norms, 1e-12))
            kept = kept * factors[:, None]
            for decision, factor in zip([d for d in decisions if d.accepted], factors):
                decision.clip_factor = float(factor)
        return decisions, kept
