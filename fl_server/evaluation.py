"""Central evaluation of the global model on the held-out split after every round, and the progress it reports.

Each evaluation appends one JSON line to ``<out_dir>/progress.jsonl`` (round, rounds, loss, accuracy, f1, roc_auc,
round seconds): the launcher follows that file to show progress, so nothing parses log text.

Without a central test set (``X_test`` None: a deployment whose server holds no data) only the federated metrics
are reported. ``federated(round)`` gives the round's federated evaluation (:mod:`fl_server.federated_eval`,
``fed_*`` keys; the strategy calls ``evaluate_fn`` after the clients' evaluate replies), added to the round's
metrics and progress line; the best round is the one with the highest central F1, or federated F1 without a
central test set. ``round_hooks`` are called with (round, the global state dict) after each round's evaluation
(the bundle rollout every k rounds).

A family that scores hosts (``predict_host_logits``, over host-graph windows) is also scored per host
(``host_precision``, ``host_recall``, ``host_f1`` against the windows' ``node_label``); a run with a held-out site
is scored on that site's windows too, under the same keys prefixed ``site_``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from fl_server.federated_eval import REPORTED as FEDERATED_REPORTED
from models.evaluation import bce_with_logits, detection_metrics
from models.family import ModelFamily

log = logging.getLogger("flwr.botdefender.server")
PROGRESS_FILE = "progress.jsonl"
REPORTED = ("loss", "accuracy", "precision", "recall", "f1", "roc_auc")
HOST_REPORTED = ("host_precision", "host_recall", "host_f1")
SITE_PREFIX = "site_"


def finite_or_none(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


class CentralEvaluation:
    """``evaluate_fn`` of a Flower strategy: metrics of the global model per round, the best round's weights."""

    def __init__(self, family: ModelFamily, model: torch.nn.Module, X_test: Any, y_test: np.ndarray,
                 threshold: float, num_rounds: int, out_dir: Path,
                 holdout: tuple[Any, np.ndarray] | None = None, label: str = "", fresh: bool = True,
                 federated: Callable[[int], dict] | None = None) -> None:  # fmt: skip
        """``label``: the family's name in a mixed federation (in progress lines and the log); ``fresh``: start a
        new progress file (False: a further family's evaluation appends to it)."""
        self.family, self.model, self.X_test, self.y_test = family, model, X_test, y_test
        self.federated = federated
        self.round_hooks: list[Callable[[int, dict], None]] = []
        self.holdout, self.label = holdout, label
        self.threshold, self.num_rounds = threshold, num_rounds
        self.progress = out_dir / PROGRESS_FILE
        if fresh:
            self.progress.unlink(missing_ok=True)
        self.rounds: dict[int, dict] = {}
        self.best: dict = {"round": -1, "f1": -1.0, "state_dict": None}
        self._ends: dict[int, float] = {}

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        started = time.perf_counter()
        self.model.load_state_dict(arrays.to_torch_state_dict())
        metrics = {} if self.X_test is None else self.score(self.X_test, self.y_test)
        if self.holdout is not None:
            metrics.update({SITE_PREFIX + k: v for k, v in self.score(*self.holdout).items()})
        metrics["central_eval_seconds"] = time.perf_counter() - started
        if self.federated is not None and server_round > 0:
            metrics.update(self.federated(server_round))
        self._ends[server_round] = time.perf_counter()
        if server_round - 1 in self._ends:  # one whole round: train, client evaluate, central evaluation
            metrics["round_seconds"] = self._ends[server_round] - self._ends[server_round - 1]
        self.rounds[server_round] = metrics
        f1 = metrics.get("f1" if self.X_test is not None else "fed_f1")
        if server_round > 0 and f1 is not None and f1 > self.best["f1"]:
            self.best.update(round=server_round, f1=f1, state_dict=copy.deepcopy(self.model.state_dict()))
        self._report(server_round, metrics)
        for hook in self.round_hooks:
            hook(server_round, self.model.state_dict())
        return MetricRecord({k: float(metrics[k]) for k in self.reported(metrics)})

    @staticmethod
    def reported(metrics: dict) -> list[str]:
        """The keys of ``metrics`` that the strategy and progress.jsonl carry."""
        keys = [*REPORTED, *HOST_REPORTED]
        return [k for k in [*keys, *(SITE_PREFIX + k for k in keys), *FEDERATED_REPORTED, "dp_epsilon"] if k in metrics]

    def score(self, X: Any, y: np.ndarray) -> dict:
        """Flow metrics (and host metrics for a family that scores hosts) of the loaded model on (X, y)."""
        logits = self.family.predict_logits(self.model, X).astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-logits))
        metrics = detection_metrics(y, scores, threshold=self.threshold)
        metrics["loss"] = bce_with_logits(logits, y)
        host_logits = getattr(self.family, "predict_host_logits", None)
        if host_logits is not None:
            host_scores = 1.0 / (1.0 + np.exp(-host_logits(self.model, X).astype(np.float64)))
            host_labels = np.concatenate([g.node_label for g in X]) if len(X) else np.zeros(0, np.int64)
            host = detection_metrics(host_labels, host_scores, threshold=self.threshold)
            metrics.update({f"host_{k}": host[k] for k in ("precision", "recall", "f1")})
            metrics["hosts"] = int(len(host_labels))
        return metrics

    def _report(self, server_round: int, metrics: dict) -> None:
        line = {"round": server_round, "rounds": self.num_rounds, **({"family": self.label} if self.label else {}),
                **{k: finite_or_none(float(metrics[k])) for k in self.reported(metrics)},
                "round_seconds": metrics.get("round_seconds")}  # fmt: skip
        with open(self.progress, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
        parts = [f"{label} {metrics[key]:.4f}" for key, label in (
            ("loss", "global loss"), ("accuracy", "acc"), ("f1", "f1"), ("roc_auc", "auc"), ("host_f1", "host f1"),
            ("site_f1", "| held-out site f1"), ("site_host_f1", "host f1"), ("fed_loss", "| federated loss"),
            ("fed_accuracy", "acc"), ("fed_f1", "f1"), ("dp_epsilon", "| epsilon")) if metrics.get(key) is not None]  # fmt: skip
        if self.X_test is None and server_round == 0:
            parts.append("no central test set (federated evaluation from round 1)")
        log.info("%sround %d/%d: %s (%.1f s)", f"{self.label}: " if self.label else "", server_round,
                 self.num_rounds, " ".join(parts), metrics.get("round_seconds", 0.0))  # fmt: skip
