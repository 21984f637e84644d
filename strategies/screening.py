"""Screening of client updates before aggregation: the numpy core (no Flower, no torch).

Each round, every client's update is the difference between the weights it returns and the broadcast global
weights, flattened to one vector. Five views score it:

* ``norm``: its L2 norm, on a log scale (honest norms grow with the client's data; scaling, noise and
  model-replacement updates are large);
* ``cosine``: cosine similarity to a robust reference, by default the mean of the best-aligned majority refined
  from the coordinate-wise median (:func:`majority_reference`), which a minority of attackers cannot drag (sign
  flipping and IPM point away from it);
* ``krum``: Krum's score over the updates' directions, the summed squared distance to its n - f - 2 nearest
  neighbours (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent",
  NeurIPS 2017);
* ``cluster``: whether it falls outside the majority cluster of an HDBSCAN over pairwise cosine distances with
  a minimum cluster size of n/2 + 1, as in FLAME (Nguyen et al., "FLAME: Taming Backdoors in Federated
  Learning", USENIX Security 2022);
* ``isolation``: the cosine to its most similar other update (low: like no other client's; random noise in
  hundreds of thousands of dimensions is near-orthogonal to everything, while an honest client, even of a
  minority, shares its direction with the clients whose data resemble its own).

A view flags a client when the client's robust z-score (distance from the median in units of 1.4826 x MAD,
never a fixed threshold on the raw score) exceeds ``z_threshold`` in the view's bad direction. A client is
rejected when

* at least ``min_votes`` views flag it, or its log norm is beyond twice the threshold;
* its update is a near-copy of another client's (colluding attacks send one crafted vector from every attacker),
  unless every update of the round is a copy of every other: with no update disagreeing, identical updates are
  agreement (clients of the same data, a converged model), not collusion;
* its cosine to the reference, averaged over rounds, is below ``alignment_floor``: with non-IID clients the
  cosine of a single round is too noisy to convict (honest minority clients dip below 0 now and then), but a sign
  flipper points against the majority round after round;
* or its reputation (an exponential moving average of its clean rounds) is below ``reputation_floor``.

Accepted updates are clipped to a robust bound of the accepted norms. Every decision carries the scores and the
reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
REFERENCES = ("median", "majority")


@dataclass(frozen=True)
class ScreeningConfig:
    """Defaults chosen on recorded rounds of 20 Dirichlet-0.5 UNSW-NB15 clients (``simulation.save_updates``):
    attack-free, and with 20% sign flipping, label flipping, ALIE and IPM attackers (see the README)."""

    z_threshold: float = 3.0  # robust z-score beyond which a view flags a client
    min_votes: int = 2  # views that must flag a client to reject it this round (views: norm, cosine, krum, cluster,
    # isolation)
    assumed_malicious: float = 0.3  # share f/n used by the Krum score and the majority reference
    reputation_decay: float = 0.6  # weight of the past in the moving averages (reputation, alignment)
    reputation_floor: float = 0.7  # below this a client stays rejected until it earns trust back (with decay
    # 0.6: a single flagged round costs nothing more; after two, a client needs two clean rounds to return)
    reputation_recovery: float | None = None  # weight of the past when a round is clean (None: reputation_decay);
    # above reputation_decay, trust is lost faster than it is regained
    reference: str = "majority"  # cosine reference: "majority" (see majority_reference) or "median" (coordinate-wise)
    krum_on_directions: bool = True  # Krum score over unit vectors (direction only; the norm view sees size)
    log_norm: bool = True  # norm view on log norms (honest norms spread multiplicatively with data size); a
    # log-norm z-score beyond 2 x z_threshold rejects on its own (scaling, boosted model replacement)
    duplicate_cosine: float = 0.9999  # this close in direction to another client's update: a colluder's copy (honest
    # non-IID clients here: at most 0.974; ALIE and IPM copies: 1.0)
    alignment_memory: bool = True  # reject clients whose cosine to the reference averages below a floor
    alignment_prior: float = 0.5  # the starting value of that average (a new client is given the benefit)
    alignment_floor: float = -0.1  # honest minority clients of non-IID data dip to about 0, sign flippers below
    clip: bool = True  # clip accepted updates to a robust bound of the accepted norms
    clip_mads: float = 3.0  # the bound: median + clip_mads x 1.4826 x MAD of the accepted norms (0: the median,
    # as FLAME; that halves the largest honest clients' updates)
    use_clustering: bool = True
    use_isolation: bool = True
    min_clients: int = 5  # fewer updates than this: no statistics (only duplicates, reputation and clipping)
    max_weight_ratio: float | None = 6.0  # a client's weight (num-examples) is at most this x the round's median
    # claim (strategies.weights.cap_weights); None: claims are used as they are
    # spread floors, so that near-identical benign updates do not turn tiny differences into huge z-scores
    relative_spread_floor: float = 0.05  # of |median| for norm and krum (of 1 for log norms)
    cosine_spread_floor: float = 0.05

    def __post_init__(self) -> None:
        if self.z_threshold <= 0:
            raise ValueError(f"z_threshold must be > 0, got {self.z_threshold}")
        if not 1 <= self.min_votes <= 5:
            raise ValueError(f"min_votes must be in 1..5, got {self.min_votes}")
        if not 0.0 <= self.assumed_malicious < 0.5:
            raise ValueError(f"assumed_malicious must be in [0, 0.5), got {self.assumed_malicious}")
        if self.min_clients < 3:
            raise ValueError(f"min_clients must be >= 3, got {self.min_clients}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if not 0.0 <= self.reputation_decay < 1.0:
            raise ValueError(f"reputation_decay must be in [0, 1), got {self.reputation_decay}")
        if self.reputation_recovery is not None and not 0.0 <= self.reputation_recovery < 1.0:
            raise ValueError(f"reputation_recovery must be in [0, 1), got {self.reputation_recovery}")
        if self.max_weight_ratio is not None and not 1.0 <= float(self.max_weight_ratio) < float("inf"):
            raise ValueError(f"max_weight_ratio must be a finite number >= 1 or null, got {self.max_weight_ratio}")


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


def majority_reference(vectors: np.ndarray, assumed_malicious: float, iterations: int = 2) -> np.ndarray:
    """The mean direction (mean of unit vectors) of the (1 - assumed_malicious) share of updates best aligned with
    the reference, refined from the coordinate-wise median ``iterations`` times.

    With non-IID clients the coordinate-wise median points away from the mean of the honest updates (on
    UNSW-NB15 with 20 Dirichlet-0.5 clients some honest updates have cosine below 0 to it, while their cosine
    to the honest mean is about 0.5); the mean of the best-aligned majority follows the honest mean, and a
    minority of attackers cannot enter that majority without pointing where the honest clients point."""
    reference = np.median(vectors, axis=0)
    unit = unit_rows(vectors)
    keep = max(int(np.ceil((1.0 - assumed_malicious) * len(vectors))), 1)
    for _ in range(iterations):
        aligned = np.argsort(-cosine_to(vectors, reference), kind="stable")[:keep]
        reference = unit[aligned].mean(axis=0)  # one vote per client: large (or scaled) updates do not dominate
    return reference


def nearest_twins(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(index of, cosine to) each vector's most similar other vector, and the lowest cosine between any two.

    Colluding attacks (ALIE, IPM, min-max, min-sum) have every attacker send the same crafted update; honest
    clients with their own data and seeds never send copies (the FoolsGold observation: Fung et al., "The
    Limitations of Federated Learning in Sybil Settings", RAID 2020). When even the lowest pairwise cosine is a
    copy's, no update disagrees: the round is agreement (the same data, a converged model), not collusion."""
    unit = unit_rows(vectors)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, np.inf)
    lowest = float(similarity.min()) if len(vectors) >= 2 else -1.0
    np.fill_diagonal(similarity, -np.inf)
    twins = np.argmax(similarity, axis=1)
    return twins, similarity[np.arange(len(vectors)), twins], lowest


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


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

    unit = unit_rows(vectors)
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


def view_scores(deltas: np.ndarray, config: ScreeningConfig,
                similarity: np.ndarray | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Raw scores of every view for the (n, d) matrix of flattened updates (``similarity``: each update's cosine
    to its nearest other, when the caller has it already)."""
    n = len(deltas)
    scores = {
        "norm": np.linalg.norm(deltas, axis=1),
        "cosine": cosine_to(deltas, np.median(deltas, axis=0) if config.reference == "median"
                            else majority_reference(deltas, config.assumed_malicious)),
        "krum": krum_scores(unit_rows(deltas) if config.krum_on_directions else deltas,
                            int(config.assumed_malicious * n)),
    }
    if config.use_clustering:
        scores["cluster"] = majority_cluster(deltas, config.cosine_spread_floor).astype(np.float64)
    if config.use_isolation:
        scores["isolation"] = nearest_twins(deltas)[1] if similarity is None else similarity
    return scores


def view_badness(scores: dict[str, np.ndarray], config: ScreeningConfig) -> dict[str, np.ndarray]:
    """Per view, each client's robust z-score in the view's bad direction (0 or below: unremarkable).

    The norm view is scored on log norms when ``log_norm``: honest norms spread multiplicatively with the
    clients' data sizes. The cluster view has no z-score: outside the majority cluster scores ``z_threshold``."""
    norms = np.log(np.maximum(scores["norm"], 1e-12)) if config.log_norm else scores["norm"]
    norm_floor = config.relative_spread_floor * (1.0 if config.log_norm else float(np.median(norms)))
    badness = {
        "norm": robust_z(norms, norm_floor),
        "cosine": -robust_z(scores["cosine"], config.cosine_spread_floor),
        "krum": robust_z(scores["krum"], config.relative_spread_floor * float(np.median(scores["krum"]))),
    }
    if "cluster" in scores:
        badness["cluster"] = np.where(scores["cluster"] < 0.5, config.z_threshold, 0.0)
    if "isolation" in scores:
        badness["isolation"] = -robust_z(scores["isolation"], config.cosine_spread_floor)
    return badness


class UpdateScreen:
    """Stateful screening across rounds (the reputations); ``screen`` is one round."""

    def __init__(self, config: ScreeningConfig | None = None) -> None:
        self.config = config or ScreeningConfig()
        self.reputation: dict[int, float] = {}
        self.alignment: dict[int, float] = {}

    def _align(self, client: int, cosine: float) -> float:
        """The client's moving average of its cosine to the round's reference (same decay as the reputation)."""
        decay = self.config.reputation_decay
        value = decay * self.alignment.get(client, self.config.alignment_prior) + (1 - decay) * cosine
        self.alignment[client] = value
        return value

    def screen(self, clients: list[int], deltas: np.ndarray) -> tuple[list[Decision], np.ndarray]:
        """Decisions for ``clients`` (ids, in the rows' order) and the clipped deltas of the accepted ones.

        Returns (decisions in input order, array (n_accepted, d) of clipped accepted deltas in input order).
        With fewer than ``min_clients`` updates no statistics are meaningful: all are accepted (and clipped)
        unless a reputation or a duplicate says otherwise.
        """
        config = self.config
        deltas = np.asarray(deltas, dtype=np.float64)
        n = len(clients)
        if deltas.shape[0] != n:
            raise ValueError(f"{n} clients but {deltas.shape[0]} updates")
        enough = n >= config.min_clients
        twins, similarity, lowest = (nearest_twins(deltas) if n >= 2
                                     else (np.zeros(n, dtype=int), np.full(n, -1.0), -1.0))  # fmt: skip
        agreement = n >= 2 and lowest >= config.duplicate_cosine  # every update a copy of every other
        scores = view_scores(deltas, config, similarity) if enough else {"norm": np.linalg.norm(deltas, axis=1)}
        scores["similarity"] = similarity
        badness = view_badness(scores, config) if enough else {}
        decisions = []
        for i, client in enumerate(clients):
            mine = {view: float(bad[i]) for view, bad in badness.items()}
            flagged = [view for view, bad in mine.items() if bad >= config.z_threshold]
            extreme_norm = mine.get("norm", 0.0) >= 2 * config.z_threshold and config.log_norm
            clean_round = len(flagged) < config.min_votes and not extreme_norm
            previous = self.reputation.get(client, 1.0)
            past = config.reputation_decay
            if clean_round and config.reputation_recovery is not None:
                past = config.reputation_recovery
            reputation = past * previous + (1 - past) * float(clean_round)
            self.reputation[client] = reputation
            rejections = []
            if not clean_round:
                rejections.append(("extreme norm; " if extreme_norm else "") + "outlier in " + ", ".join(flagged))
            if similarity[i] >= config.duplicate_cosine and not agreement:
                rejections.append(f"near-duplicate of client {clients[int(twins[i])]} "
                                  f"(cosine {similarity[i]:.4f})")  # fmt: skip
            if config.alignment_memory and "cosine" in scores:
                alignment = self._align(client, float(scores["cosine"][i]))
                if alignment < config.alignment_floor:
                    rejections.append(f"points against the majority on average over rounds ({alignment:+.2f})")
            if reputation < config.reputation_floor:
                rejections.append(f"reputation {reputation:.2f} < {config.reputation_floor}")
            notes = list(rejections)
            if agreement:
                notes.append(f"identical to every other update of the round (cosine >= {lowest:.4f}): agreement")
            if not rejections and flagged:
                notes.append(f"flagged by {', '.join(flagged)} only (below min_votes)")
            decisions.append(Decision(client=client, accepted=not rejections, reasons=notes,
                                      scores={k: float(v[i]) for k, v in scores.items()},
                                      reputation=reputation))  # fmt: skip
        accepted = np.array([d.accepted for d in decisions], dtype=bool)
        kept = deltas[accepted]
        if config.clip and len(kept):
            norms = np.linalg.norm(kept, axis=1)
            median = float(np.median(norms))
            bound = median + config.clip_mads * MAD_SCALE * float(np.median(np.abs(norms - median)))
            factors = np.minimum(1.0, bound / np.maximum(norms, 1e-12))
            kept = kept * factors[:, None]
            for decision, factor in zip([d for d in decisions if d.accepted], factors):
                decision.clip_factor = float(factor)
        return decisions, kept
