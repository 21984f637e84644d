"""Flower adapter of the screening: wraps any Flower strategy and screens every training reply first.

``ScreeningStrategy(inner)`` delegates sampling, evaluation and aggregation to ``inner`` (one of
:mod:`strategies.registry`), but in ``aggregate_train`` it

1. sorts the replies (``inner.reply_key``) and rejects malformed ones with a reason (:mod:`strategies.reply_checks`);
2. turns the rest into update vectors (reply - broadcast global model) and screens them
   (:class:`strategies.screening.UpdateScreen`: scores, votes, reputation, clipping);
3. hands the accepted, clipped updates (as global + clipped delta) to ``inner.aggregate_train``, each with its
   weight (``num-examples``) capped at ``max_weight_ratio`` x the median claim of the round's well-formed
   replies (:func:`strategies.weights.cap_weights`), so that no inner strategy sees a client's own claim when
   it exceeds the cap.

If every update is rejected the previous global model stands (Flower keeps it when arrays are None).
Every decision is kept in ``decisions[round]`` for the run outputs. With ``updates_dir`` set, every round's
update vectors are also written there (``round_NNN.npz``: clients, deltas, accepted) for offline forensics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from strategies.declines import without_declined
from strategies.screening import Decision, ScreeningConfig, UpdateScreen
from strategies.updates import cap_reply_weights, claimed_weights, collect_updates, unflatten, with_weights
from strategies.weights import cap_weights

log = logging.getLogger(__name__)


class ScreeningStrategy(Strategy):
    """Screen every client update, then aggregate the accepted ones with ``inner``."""

    def __init__(self, inner: Strategy, config: ScreeningConfig | None = None) -> None:
        self.inner = inner
        self.screen = UpdateScreen(config)
        self.decisions: dict[int, list[dict]] = {}
        self.updates_dir: Path | None = None
        self._global: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:  # sampled, client_train, node_ranks ... live on the inner strategy
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        self._global = {name: array.numpy().copy() for name, array in arrays.items()}
        return self.inner.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The inner strategy's evaluation average, with the replies' weights capped as in training."""
        weight_key = str(getattr(self.inner, "weighted_by_key", "num-examples"))
        replies = list(replies)
        capped = cap_reply_weights(replies, self.screen.config.max_weight_ratio, weight_key)
        result = self.inner.aggregate_evaluate(server_round, capped)
        record = getattr(self.inner, "record_replies", None)
        if record:  # the report keeps what every client claimed
            self.inner.client_evaluate[server_round] = record(sorted(replies, key=self.inner.reply_key))
        return result

    def _client_id(self, reply: Message) -> int:
        client_id = getattr(self.inner, "client_id", None)  # registry strategies rank nodes; others: node id
        return client_id(reply) if client_id else int(reply.metadata.src_node_id)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        key = getattr(self.inner, "reply_key", lambda r: int(r.metadata.src_node_id))
        replies = sorted(replies, key=key)
        weight_key = str(getattr(self.inner, "weighted_by_key", "num-examples"))
        batch = collect_updates(without_declined(replies), self._global, self._client_id, weight_key)
        decisions: list[Decision] = list(batch.rejected)
        accepted_replies: list[Message] = []
        if batch.replies:
            screened, kept = self.screen.screen(batch.clients, batch.deltas)
            decisions.extend(screened)
            claims = claimed_weights(batch.replies, weight_key)
            weights = cap_weights(claims, self.screen.config.max_weight_ratio)
            for decision, claim, weight in zip(screened, claims, weights):
                decision.scores["weight_claimed"], decision.scores["weight"] = float(claim), float(weight)
                if weight < claim:
                    decision.reasons.append(f"{weight_key} {claim:g} capped at {weight:g}")
            if self.updates_dir is not None:
                save_updates(self.updates_dir, server_round, batch.clients, batch.deltas,
                             [d.accepted for d in screened], claims)  # fmt: skip
            good = [(reply, claim, weight) for reply, decision, claim, weight
                    in zip(batch.replies, screened, claims, weights) if decision.accepted]  # fmt: skip
            for (reply, claim, weight), delta in zip(good, kept):
                arrays = unflatten(batch.base + delta, self._global, batch.names)
                accepted_replies.append(with_weights(reply, arrays, (weight_key, weight) if weight < claim else None))
        decisions.sort(key=lambda d: d.client)
        self.decisions[server_round] = [{"round": server_round, **d.as_dict()} for d in decisions]
        record = getattr(self.inner, "record_replies", None)
        rejected = [d for d in decisions if not d.accepted]
        log.info("round %d screening: %d accepted, %d rejected %s", server_round, len(accepted_replies),
                 len(rejected), [(d.client, d.reasons[0]) for d in rejected])  # fmt: skip
        if not accepted_replies:
            log.warning("round %d: every update rejected; the previous global model stands", server_round)
            if record:
                self.inner.client_train[server_round] = record(replies)
            return None, None
        result = self.inner.aggregate_train(server_round, accepted_replies)
        if record:  # keep every reply's metrics, not only the accepted ones'
            self.inner.client_train[server_round] = record(replies)
        return result



def save_updates(folder: Path, server_round: int, clients: list[int], deltas: np.ndarray, accepted: list[bool],
                 claims: np.ndarray | None = None) -> None:  # fmt: skip
    """One round's update vectors (and the weights the clients claimed) as ``folder/round_NNN.npz`` (read by
    benchmarks/screening_replay.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = {} if claims is None else {"claims": np.asarray(claims, dtype=np.float64)}
    np.savez_compressed(folder / f"round_{server_round:03d}.npz", clients=np.asarray(clients),
                        deltas=np.asarray(deltas, dtype=np.float32), accepted=np.asarray(accepted),
                        **extra)  # fmt: skip
