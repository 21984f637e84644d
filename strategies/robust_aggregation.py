"""Flower adapter for the aggregators of :mod:`strategies.defences` (FLTrust, FLAME, centered clipping).

FedAvg's sampling, configuration and metric averaging, behind the deterministic mixin; only the weighted mean
of the weights is replaced. Malformed replies are rejected first (:mod:`strategies.reply_checks`). FLTrust needs
the server's own update on its root dataset: ``server_update_fn(global arrays, client examples) -> trained
arrays`` is given by the ServerApp, which owns the model (this package never imports it); ``client examples``
is the median ``num-examples`` of the round's replies, so that the server can take as many local steps as a
client does (FLTrust, Algorithm 1: the server update uses the clients' local iterations).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies import defences
from strategies.declines import without_declined
from strategies.deterministic import DeterministicMixin
from strategies.updates import collect_updates, flatten, unflatten

log = logging.getLogger(__name__)
AGGREGATORS = ("fltrust", "flame", "centered_clipping")
ServerUpdateFn = Callable[[dict[str, np.ndarray], int], dict[str, np.ndarray]]


class RobustAggregation(DeterministicMixin, FedAvg):
    """FedAvg with ``aggregator`` in place of the weighted mean of the client weights."""

    def __init__(self, *args: Any, aggregator: str = "flame", noise_lambda: float = 0.001, iterations: int = 3,
                 tau: float | None = None, server_update_fn: ServerUpdateFn | None = None, **kwargs: Any):  # fmt: skip
        super().__init__(*args, **kwargs)
        if aggregator not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {aggregator!r}: {', '.join(AGGREGATORS)}")
        if aggregator == "fltrust" and server_update_fn is None:
            raise ValueError("fltrust needs the server's update on its root dataset (server_update_fn)")
        self.aggregator, self.noise_lambda, self.iterations, self.tau = aggregator, noise_lambda, iterations, tau
        self.server_update_fn = server_update_fn
        self.decisions: dict[int, list[dict]] = {}
        self._global: dict[str, np.ndarray] = {}
        self._previous: np.ndarray | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        self._global = {name: array.numpy().copy() for name, array in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = sorted(replies, key=self.reply_key)
        self.client_train[server_round] = self.record_replies(replies)
        batch = collect_updates(without_declined(replies), self._global, self.client_id)
        rows = [{"round": server_round, **d.as_dict()} for d in batch.rejected]
        if not batch.replies:
            self.decisions[server_round] = rows
            log.warning("round %d: no well-formed update; the previous global model stands", server_round)
            return None, None
        rng = np.random.default_rng([self.seed, server_round, 0xF1A])
        if self.aggregator == "fltrust":
            examples = int(np.median([r.content["metrics"][self.weighted_by_key] for r in batch.replies]))
            trained = self.server_update_fn(self._global, examples)  # type: ignore[misc]
            server_update = flatten(trained, batch.names) - batch.base
            update, admitted = defences.fltrust(batch.deltas, server_update)
        elif self.aggregator == "flame":
            update, admitted = defences.flame(batch.deltas, self.noise_lambda, rng)
        else:
            update, admitted = defences.centered_clipping(batch.deltas, self._previous, self.iterations, self.tau)
        self._previous = update
        for i, client in enumerate(batch.clients):
            verdict = "accept" if i in admitted else "reject"
            rows.append({"round": server_round, "client": client, "verdict": verdict,
                         "reasons": [] if i in admitted else [f"left out by {self.aggregator}"]})  # fmt: skip
        self.decisions[server_round] = sorted(rows, key=lambda r: r["client"])
        metrics = self.train_metrics_aggr_fn([r.content for r in batch.replies], self.weighted_by_key)
        return unflatten(batch.base + update, self._global, batch.names), metrics
