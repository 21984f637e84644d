"""Reproducible sampling and aggregation order for any Flower strategy, plus per-client metric records.

Flower samples nodes with the global ``random`` module over node IDs that are random per run, and aggregates
replies in arrival order. :class:`DeterministicMixin` makes both a function of the run's seed alone: nodes are
ranked by a stable key (the simulation's partition id), sampling draws from a ``random.Random`` seeded by
(seed, round, phase), and replies are sorted by that key before any float is summed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from strategies.declines import declined_row, is_declined, without_declined

UNRANKED = 1 << 40  # nodes without a known rank (e.g. real gateways) sort after ranked ones, by node id


class RankedGrid:
    """A view of a Grid whose ``get_node_ids`` lists nodes in rank order (everything else is delegated)."""

    def __init__(self, grid: Grid, rank_of: Callable[[int], int]) -> None:
        self._grid = grid
        self._rank_of = rank_of

    def get_node_ids(self) -> list[int]:
        return sorted(self._grid.get_node_ids(), key=lambda node: (self._rank_of(node), node))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


@contextmanager
def seeded_global_random(seed: int) -> Iterator[None]:
    """Seed :mod:`random` for the duration (Flower's ``sample_nodes`` draws from it), then restore its state."""
    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)


def round_seed(seed: int, server_round: int, phase: str) -> int:
    """A distinct, stable seed per (run seed, round, phase)."""
    return (seed * 1_000_003 + server_round * 7919 + (1 if phase == "train" else 2)) % (2**63)


def same_dtypes(arrays: ArrayRecord | None, dtypes: Mapping[str, np.dtype]) -> ArrayRecord | None:
    """``arrays`` with every array in the dtype the broadcast had (FedAdam's numpy arithmetic, or a numpy float
    weight, gives float64): a float64 global would make every float32 reply of the next round fail the reply
    checks."""
    if arrays is None or all(a.numpy().dtype == dtypes.get(k, a.numpy().dtype) for k, a in arrays.items()):
        return arrays
    return ArrayRecord({k: Array(a.numpy().astype(dtypes.get(k, a.numpy().dtype))) for k, a in arrays.items()})


class DeterministicMixin:
    """Put before a Flower strategy class: ``class S(DeterministicMixin, FedAvg)``.

    ``node_ranks`` maps node id -> rank (partition id in simulation); set it before ``start``.
    ``client_train[round]`` / ``client_evaluate[round]`` keep each reply's metrics (or its error), in rank order;
    ``sampled[phase][round]`` the clients asked (rank, or node id where no rank is known): a sampled client
    without a row did not answer within the round's timeout.
    """

    def __init__(self, *args: Any, seed: int = 0, node_ranks: Mapping[int, int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.seed = int(seed)
        self.node_ranks: dict[int, int] = dict(node_ranks or {})
        self.client_train: dict[int, list[dict]] = {}
        self.client_evaluate: dict[int, list[dict]] = {}
        self.sampled: dict[str, dict[int, list[int]]] = {"train": {}, "evaluate": {}}
        self._sent: list[Message] = []  # the messages of the phase under way
        self._dtypes: dict[str, np.dtype] = {}  # the broadcast arrays' dtypes, which the aggregate keeps

    # ranks ------------------------------------------------------------------------------------------------
    def rank_of_node(self, node_id: int) -> int:
        return self.node_ranks.get(int(node_id), UNRANKED)

    def source_node(self, reply: Message) -> int:
        """The node a reply answers for: its source, or, for an error the SuperLink sent in place of a node that
        stopped answering (source: the SuperLink itself), the node the answered message went to."""
        node = int(reply.metadata.src_node_id)
        if reply.has_error():
            sent = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in self._sent if m.metadata.message_id}
            node = sent.get(reply.metadata.reply_to_message_id, node)
        return node

    def client_id(self, reply: Message) -> int:
        """The id reports use for a reply's client: its rank (partition id) if known, else its node id."""
        return self.node_label(self.source_node(reply))

    def node_label(self, node_id: int) -> int:
        """A node's rank (partition id) if known, else its node id (a real gateway)."""
        rank = self.rank_of_node(node_id)
        return rank if rank != UNRANKED else int(node_id)

    def reply_key(self, reply: Message) -> tuple[int, int]:
        node = self.source_node(reply)
        return self.rank_of_node(node), node

    # sampling ---------------------------------------------------------------------------------------------
    def _configure(self, phase: str, parent: Callable, server_round: int, arrays: ArrayRecord,
                   config: ConfigRecord, grid: Grid) -> Iterable[Message]:  # fmt: skip
        with seeded_global_random(round_seed(self.seed, server_round, phase)):
            messages = list(parent(server_round, arrays, config, RankedGrid(grid, self.rank_of_node)))
        self._sent = messages  # the grid gives them their ids when it pushes them (see source_node)
        self.sampled[phase][server_round] = sorted(self.node_label(m.metadata.dst_node_id) for m in messages)
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        self._dtypes = {name: array.numpy().dtype for name, array in arrays.items()}
        return self._configure("train", super().configure_train, server_round, arrays, config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return self._configure("evaluate", super().configure_evaluate, server_round, arrays, config, grid)

    # aggregation ------------------------------------------------------------------------------------------
    def record_replies(self, replies: list[Message]) -> list[dict]:
        rows = []
        for reply in replies:
            node = self.source_node(reply)
            rank = self.rank_of_node(node)
            row: dict = {"rank": rank if rank != UNRANKED else None, "node-id": node}
            if reply.has_error():
                row["error"] = str(reply.error.reason)
            elif is_declined(reply):
                row.update(declined_row(reply))
            elif "metrics" in reply.content:
                row.update(dict(reply.content["metrics"]))
            rows.append(row)
        return rows

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = sorted(replies, key=self.reply_key)
        self.client_train[server_round] = self.record_replies(replies)
        offered = without_declined(replies)  # a client whose privacy budget is spent sends no update
        if not offered:
            return None, None
        arrays, metrics = super().aggregate_train(server_round, offered)
        return same_dtypes(arrays, self._dtypes), metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        replies = sorted(replies, key=self.reply_key)
        self.client_evaluate[server_round] = self.record_replies(replies)
        return super().aggregate_evaluate(server_round, replies)
