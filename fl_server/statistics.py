"""Decode and screen clients' feature-statistics replies (format: ``fl_client.statistics``); fit the pipeline state.

No client is trusted with what it reports. Each reply is

1. decoded and checked on its own (:func:`check_statistics`): a record count ``n`` that is a whole number in
   ``0..max_records``; finite sums; ``sumsq / n <= 1e200`` (so that merged sums stay finite);
   ``sumsq >= sum^2 / n`` (Cauchy-Schwarz, to a relative 1e-9) and, with the log
   transform, means and mean squares within what ``signed_log1p`` of a float64 can give (|x| <= 709.8);
   per categorical column, whole non-negative counts that sum to ``n``, at most ``max_categories`` distinct
   values of at most ``max_value_length`` characters;
2. compared with the others: the feature lists most replies report (a strict majority) win, the others are
   left out; every count is capped at ``max_weight_ratio`` x the median count of the accepted replies
   (:func:`strategies.weights.cap_weights`: a capped reply's sums and category counts are scaled by the same
   factor, so its mean and variance are kept but its weight is bounded); with at least ``min_clients``
   replies, a reply whose mean on some feature lies more than ``max_deviation`` standard deviations from the
   others' pooled mean, or whose standard deviation exceeds ``max_spread_ratio`` times theirs, is left out,
   worst first, until none is (the others: every accepted reply but itself and exact copies of its
   statistics, so that colluders sending one crafted reply do not vouch for each other);
3. merged (:func:`flows.pipeline.merge_statistics` with the weights) into the pipeline state.

The defaults were measured on UNSW-NB15 Dirichlet partitions (alpha 0.1/0.5/1.0, seeds 0-2, 10 and 20 clients,
with and without the log transform): the largest honest deviation of a client's mean from the others' pooled
mean was 2.2 standard deviations; the largest ratio of a client's standard deviation to the others' was 3.4
with the log transform and 16.8 without (raw byte counts), hence a spread bound of 10 with the log transform
and 50 without unless ``max_spread_ratio`` says otherwise. A reply left out is reported
(:attr:`StatisticsVerdict.reasons`, the state's ``info["statistics_screening"]``) and never stops the run
unless no reply remains.

A self-reported partition id ranks nodes for seeded sampling; it is trusted only in simulation, where the
runtime assigns it (:func:`node_ranks`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import RecordDict

from flows.pipeline import PipelineSettings, merge_statistics, state_from_statistics
from flows.pipeline_state import PipelineState
from strategies.weights import cap_weights

log = logging.getLogger("flwr.botdefender.server")
LOG_BOUND = math.log1p(np.finfo(np.float64).max)  # the largest |signed_log1p(x)| of a finite float64: 709.78
MAX_MEAN_SQUARE = 1e200  # a feature's mean square per record at most this: merged sums of 1e12 records stay finite


class StatisticsError(ValueError):
    """A statistics reply that is malformed or inconsistent, or a set of replies nothing can be fitted from."""


@dataclass(frozen=True)
class StatisticsScreening:
    """Bounds of the statistics round (see the module docstring for how they were chosen)."""

    max_weight_ratio: float | None = 6.0  # a client's record count counts at most this x the median count
    max_deviation: float = 6.0  # a client's mean this many pooled standard deviations from the others': left out
    max_spread_ratio: float | None = None  # a client's std above this x the others': left out (None: 10 with the
    # log transform, 50 without)
    min_clients: int = 3  # fewer accepted replies: no comparison with the others (checks and the cap only)
    max_records: int = 10**12
    max_categories: int = 10_000  # distinct values of one categorical column in one reply
    max_value_length: int = 256  # characters of one category value

    def __post_init__(self) -> None:
        if self.max_weight_ratio is not None and not 1.0 <= float(self.max_weight_ratio) < math.inf:
            raise ValueError(f"max_weight_ratio must be a finite number >= 1 or None, got {self.max_weight_ratio}")
        if not 0.0 < float(self.max_deviation) < math.inf:
            raise ValueError(f"max_deviation must be a finite number > 0, got {self.max_deviation}")
        if self.max_spread_ratio is not None and not 1.0 <= float(self.max_spread_ratio) < math.inf:
            raise ValueError(f"max_spread_ratio must be a finite number >= 1 or None, got {self.max_spread_ratio}")
        if self.min_clients < 3:
            raise ValueError(f"min_clients must be >= 3 (one client against the others), got {self.min_clients}")

    def spread_ratio(self, log_transform: bool) -> float:
        if self.max_spread_ratio is not None:
            return float(self.max_spread_ratio)
        return 10.0 if log_transform else 50.0


@dataclass
class StatisticsVerdict:
    """What the screening made of one reply (``index``: its position among the replies)."""

    index: int
    accepted: bool = True
    reasons: list[str] = field(default_factory=list)
    claimed: float = 0.0  # the record count it reported
    weight: float = 1.0  # the factor its statistics enter the merge with (< 1: capped)

    def as_dict(self) -> dict:
        return {"reply": self.index, "verdict": "accept" if self.accepted else "reject", "reasons": list(self.reasons),
                "claimed_records": self.claimed, "weight": self.weight}  # fmt: skip


def _whole(value: object, what: str) -> int:
    """``value`` as an int if it is a whole number (not a bool), else a StatisticsError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise StatisticsError(f"{what} must be a whole number, got {type(value).__name__} {value!r:.60}")
    if not math.isfinite(float(value)) or float(value) != math.floor(float(value)):
        raise StatisticsError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def _floats(value: object, what: str) -> list[float]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise StatisticsError(f"{what} must be a list of numbers, got {type(value).__name__}")
    return [float(v) for v in value]


def _names(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StatisticsError(f"{what} must be a list of strings, got {type(value).__name__}")
    if len(set(value)) != len(value):
        raise StatisticsError(f"{what} lists a name twice: {sorted(n for n, c in Counter(value).items() if c > 1)[:5]}")
    return list(value)


def statistics_from_records(content: RecordDict, screening: StatisticsScreening | None = None
                            ) -> tuple[dict, list[str], list[str]]:  # fmt: skip
    """(statistics dict as :func:`flows.pipeline.feature_statistics` returns it, numeric, categorical).

    Raises :class:`StatisticsError` naming what is missing or of the wrong type (nothing else)."""
    screening = screening or StatisticsScreening()
    try:
        stats, features = content["stats"], content["features"]
        values, counts = content["category-values"], content["category-counts"]
        numeric = _names(features["numeric"], "features.numeric")
        categorical = _names(features["categorical"], "features.categorical")
        if set(numeric) & set(categorical):
            both = sorted(set(numeric) & set(categorical))[:5]
            raise StatisticsError(f"features both numeric and categorical: {both}")
        categories = {}
        for column in categorical:
            column_values, column_counts = values[column], counts[column]
            if not isinstance(column_values, list) or not isinstance(column_counts, list):
                raise StatisticsError(f"column {column!r}: category values and counts must be lists")
            if len(column_values) != len(column_counts):
                raise StatisticsError(f"column {column!r}: {len(column_values)} values but {len(column_counts)} counts")
            if len(column_values) > screening.max_categories:
                raise StatisticsError(f"column {column!r}: {len(column_values)} distinct values, at most "
                                      f"{screening.max_categories} expected")  # fmt: skip
            names = _names(column_values, f"column {column!r} values")
            if any(len(v) > screening.max_value_length for v in names):
                raise StatisticsError(f"column {column!r}: a value longer than {screening.max_value_length} characters")
            categories[column] = {v: _whole(c, f"column {column!r} count of {v[:40]!r}")
                                  for v, c in zip(names, column_counts)}  # fmt: skip
        result = {"n": _whole(stats["n"], "n"), "sum": _floats(stats["sum"], "sum"),
                  "sumsq": _floats(stats["sumsq"], "sumsq"), "categories": categories}  # fmt: skip
    except StatisticsError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StatisticsError(f"statistics reply lacks or garbles {exc!s:.120}") from None
    if len(result["sum"]) != len(numeric) or len(result["sumsq"]) != len(numeric):
        raise StatisticsError(f"statistics reply: {len(numeric)} numeric features but {len(result['sum'])} sums "
                              f"and {len(result['sumsq'])} sums of squares")  # fmt: skip
    return result, numeric, categorical


def check_statistics(stats: dict, numeric: list[str], log_transform: bool,
                     screening: StatisticsScreening | None = None) -> str | None:  # fmt: skip
    """None if one decoded reply is consistent in itself, else the reason it is not."""
    screening = screening or StatisticsScreening()
    n = stats["n"]
    if not 0 <= n <= screening.max_records:
        return f"n = {n} records, expected 0..{screening.max_records}"
    sums, squares = np.asarray(stats["sum"], dtype=np.float64), np.asarray(stats["sumsq"], dtype=np.float64)
    for name, array in (("sum", sums), ("sumsq", squares)):
        if not np.all(np.isfinite(array)):
            return f"{name} of {numeric[int(np.flatnonzero(~np.isfinite(array))[0])]!r} is not finite"
    if np.any(squares < 0):
        return f"sumsq of {numeric[int(np.flatnonzero(squares < 0)[0])]!r} is negative"
    if n == 0:
        if np.any(sums != 0) or np.any(squares != 0):
            return "n = 0 records but non-zero sums"
    else:
        with np.errstate(over="ignore"):
            floor = sums**2 / n
        huge = squares > n * MAX_MEAN_SQUARE
        if np.any(huge):
            return (f"feature {numeric[int(np.flatnonzero(huge)[0])]!r}: root mean square beyond "
                    f"{math.sqrt(MAX_MEAN_SQUARE):.0e}, which no flow feature reaches")  # fmt: skip
        short = ~np.isfinite(floor) | (squares < floor * (1 - 1e-9) - 1e-9)
        if np.any(short):
            j = int(np.flatnonzero(short)[0])
            return f"feature {numeric[j]!r}: sumsq {squares[j]:.6g} < sum^2/n {floor[j]:.6g} (no records give that)"
        if log_transform:
            beyond = (np.abs(sums) > n * LOG_BOUND * (1 + 1e-9)) | (squares > n * LOG_BOUND**2 * (1 + 1e-9))
            if np.any(beyond):
                return (f"feature {numeric[int(np.flatnonzero(beyond)[0])]!r}: mean beyond {LOG_BOUND:.1f}, which "
                        "no log-transformed float64 reaches")  # fmt: skip
    for column, counts in stats["categories"].items():
        if any(c < 0 for c in counts.values()):
            return f"column {column!r}: a negative category count"
        if sum(counts.values()) != n:
            return f"column {column!r}: category counts sum to {sum(counts.values())}, expected n = {n}"
    return None


@dataclass
class _Pool:
    """The weighted numeric statistics of the active shards, as arrays (row i: shard i)."""

    n: np.ndarray  # (k,) weighted record counts
    sums: np.ndarray  # (k, f)
    squares: np.ndarray  # (k, f)
    means: np.ndarray  # (k, f), each shard's own
    stds: np.ndarray  # (k, f)

    @classmethod
    def of(cls, shards: list[dict], weights: np.ndarray) -> "_Pool":
        n = np.array([s["n"] for s in shards], dtype=np.float64)
        sums = np.array([s["sum"] for s in shards], dtype=np.float64).reshape(len(shards), -1)
        squares = np.array([s["sumsq"] for s in shards], dtype=np.float64).reshape(len(shards), -1)
        means = sums / n[:, None]
        stds = np.sqrt(np.maximum(squares / n[:, None] - means**2, 0.0))
        return cls(n * weights, sums * weights[:, None], squares * weights[:, None], means, stds)


def _outlier(i: int, active: list[int], pool: _Pool, numeric: list[str], screening: StatisticsScreening,
             log_transform: bool) -> tuple[float, str]:  # fmt: skip
    """(score, reason) of shard ``i`` against the pooled statistics of the other active shards (score > 1: out)."""
    mean_i, std_i = pool.means[i], pool.stds[i]
    others = [k for k in active if k != i and not (np.array_equal(pool.means[k], mean_i)
                                                     and np.array_equal(pool.stds[k], std_i))]  # fmt: skip
    if not others:
        return 0.0, ""
    total = float(pool.n[others].sum())
    mean = pool.sums[others].sum(axis=0) / total
    std = np.sqrt(np.maximum(pool.squares[others].sum(axis=0) / total - mean**2, 0.0))
    judged = std > 1e-9 * np.maximum(np.abs(mean), 1.0)  # a feature constant for all others cannot be judged
    if not np.any(judged):
        return 0.0, ""
    scale = np.where(judged, std, 1.0)
    deviation = np.where(judged, np.abs(mean_i - mean) / scale, 0.0) / screening.max_deviation
    spread = np.where(judged, std_i / scale, 0.0) / screening.spread_ratio(log_transform)
    j_dev, j_spread = int(np.argmax(deviation)), int(np.argmax(spread))
    if deviation[j_dev] >= spread[j_spread]:
        return float(deviation[j_dev]), (f"feature {numeric[j_dev]!r}: mean {mean_i[j_dev]:.6g} is "
                                         f"{deviation[j_dev] * screening.max_deviation:.1f} standard deviations from "
                                         f"the others' {mean[j_dev]:.6g}")  # fmt: skip
    return float(spread[j_spread]), (f"feature {numeric[j_spread]!r}: standard deviation {std_i[j_spread]:.6g} is "
                                     f"{spread[j_spread] * screening.spread_ratio(log_transform):.1f} x the "
                                     f"others' {std[j_spread]:.6g}")  # fmt: skip


def screen_statistics(replies: Iterable[RecordDict], log_transform: bool,
                      screening: StatisticsScreening | None = None
                      ) -> tuple[dict, list[str], list[str], list[StatisticsVerdict]]:  # fmt: skip
    """(merged statistics, numeric, categorical, one verdict per reply) of the screened replies.

    Raises :class:`StatisticsError` only when no reply can be used or no strict majority agrees on the features."""
    screening = screening or StatisticsScreening()
    decoded: list[tuple[dict, list[str], list[str]] | None] = []
    verdicts: list[StatisticsVerdict] = []
    for index, content in enumerate(replies):
        verdict = StatisticsVerdict(index=index)
        verdicts.append(verdict)
        try:
            stats, numeric, categorical = statistics_from_records(content, screening)
        except StatisticsError as err:
            verdict.accepted, verdict.reasons = False, [str(err)]
            decoded.append(None)
            continue
        verdict.claimed = float(stats["n"])
        reason = check_statistics(stats, numeric, log_transform, screening)
        if reason:
            verdict.accepted, verdict.reasons = False, [reason]
            decoded.append(None)
            continue
        decoded.append((stats, numeric, categorical))
    votes = Counter((tuple(d[1]), tuple(d[2])) for d in decoded if d is not None)
    if not votes:
        raise StatisticsError("no usable statistics reply: " + "; ".join(v.reasons[0] for v in verdicts)[:2000])
    features, count = votes.most_common(1)[0]
    if count * 2 <= len(verdicts):
        raise StatisticsError(f"no strict majority of the {len(verdicts)} replies agrees on the features "
                              f"(largest group: {count})")  # fmt: skip
    for verdict, item in zip(verdicts, decoded):
        if item is not None and (tuple(item[1]), tuple(item[2])) != features:
            verdict.accepted, verdict.reasons = False, [f"features differ from the majority's: {item[1]}, {item[2]}"]
    active = [v.index for v in verdicts if v.accepted and decoded[v.index][0]["n"] > 0]
    shards = [item[0] if item is not None else {} for item in decoded]
    numeric, categorical = list(features[0]), list(features[1])
    weights = np.zeros(len(verdicts))
    if active:
        claims = np.array([float(shards[i]["n"]) for i in active])
        capped = cap_weights(claims, screening.max_weight_ratio)
        for i, claim, cap in zip(active, claims, capped):
            weights[i] = cap / claim
            verdicts[i].weight = float(weights[i])
            if cap < claim:
                verdicts[i].reasons.append(f"n = {claim:g} records capped at {cap:g}")
    pool = _Pool.of([shards[i] if i in active else {"n": 1, "sum": [0.0] * len(numeric), "sumsq": [0.0] * len(numeric)}
                     for i in range(len(shards))], weights)  # fmt: skip
    while len(active) >= screening.min_clients:
        scored = [(_outlier(i, active, pool, numeric, screening, log_transform), i) for i in active]
        (score, reason), worst = max(scored, key=lambda item: item[0][0])
        if score <= 1.0:
            break
        verdicts[worst].accepted = False
        verdicts[worst].reasons.insert(0, reason)
        active.remove(worst)
    used = [v.index for v in verdicts if v.accepted]
    if not active:
        raise StatisticsError("no accepted statistics reply holds a record: " +
                              "; ".join(f"reply {v.index}: {v.reasons}" for v in verdicts)[:2000])  # fmt: skip
    merged = merge_statistics([shards[i] for i in used], [weights[i] for i in used])
    return merged, numeric, categorical, verdicts


def node_rank(content: RecordDict, *, trust_partition_id: bool = True) -> int | None:
    """The partition id a simulated client reports in its query reply (``"node"`` record); None on a gateway,
    for a malformed value, or when ``trust_partition_id`` is False (deployment: a client chooses its own)."""
    if not trust_partition_id:
        return None
    try:
        record = content["node"] if "node" in content else None
        value = record.get("partition-id", -1) if record is not None else -1
    except (TypeError, AttributeError, KeyError):
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value >= 0 else None


def node_ranks(contents: Mapping[int, RecordDict], *, simulation: bool,
               num_partitions: int | None = None) -> dict[int, int]:  # fmt: skip
    """node id -> partition id, from the query replies, only in simulation (the runtime assigns the ids; a
    real gateway reports -1 and may lie). Raises :class:`StatisticsError` when two nodes report the same id or
    an id is outside ``0..num_partitions - 1`` (a broken simulation: reports and reputations are keyed by it)."""
    if not simulation:
        return {}
    ranks = {int(node): rank for node, content in contents.items()
             if (rank := node_rank(content, trust_partition_id=True)) is not None}  # fmt: skip
    repeated = sorted(rank for rank, count in Counter(ranks.values()).items() if count > 1)
    if repeated:
        raise StatisticsError(f"several nodes report the same partition id: {repeated[:10]}")
    if num_partitions is not None:
        outside = sorted(rank for rank in ranks.values() if rank >= num_partitions)
        if outside:
            raise StatisticsError(f"partition ids {outside[:10]} outside 0..{num_partitions - 1}")
    return ranks


def fit_pipeline_state(replies: Iterable[RecordDict], config: PipelineSettings, source: str = "", *,
                       screening: StatisticsScreening | None = None) -> PipelineState:  # fmt: skip
    """Screen and merge the clients' statistics (:func:`screen_statistics`) and fit the pipeline state; the
    verdicts go to ``state.info["statistics_screening"]`` (replies left out or capped are also logged)."""
    merged, numeric, categorical, verdicts = screen_statistics(replies, config.log_transform, screening)
    for verdict in verdicts:
        if not verdict.accepted:
            log.warning("statistics reply %d left out: %s", verdict.index, "; ".join(verdict.reasons))
        elif verdict.reasons:
            log.warning("statistics reply %d: %s", verdict.index, "; ".join(verdict.reasons))
    state = state_from_statistics(merged, numeric, categorical, config, source=source)
    state.info["statistics_screening"] = {
        "replies": len(verdicts), "accepted": sum(v.accepted for v in verdicts),
        "flagged": [v.as_dict() for v in verdicts if not v.accepted or v.reasons],
    }  # fmt: skip
    return state
