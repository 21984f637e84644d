"""The centralized benchmark's chronological split: host-graph windows in time order, every model on the same ones.

The flows are cut into windows (:class:`flows.graphs.GraphSettings`) before anything is fitted; the earliest
windows train, the next ``val_fraction`` validate (early stopping) and the latest ``protocol.test_size`` test, so
no window (and no flow) is on two sides. The pipeline is fitted on the training windows' flows only. A detector
that reads host graphs (``input_kind == "host_graphs"``) gets the windows' graphs; the others get the same flows
as encoded rows, in the graphs' edge order. Every model is scored per flow and per host (a host of a test window
is malicious when it originates an attack flow in it; a flow classifier's host score is the highest score of the
flows the host originates there).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from flows.graphs import HOST_GRAPHS, GraphSettings, HostGraph, chronological_split, host_scores_from_flows
from flows.graphs.from_table import graphs_from_table, table_windows
from flows.oversampling import smote
from flows.pipeline import FeaturePipeline, PipelineConfig
from flows.pipeline_state import PipelineState
from flows.protocols import ProtocolConfig, working_table
from flows.table import FlowTable
from models.baselines import make_detector
from models.evaluation import detection_metrics

__all__ = ["HOST_KEYS", "WindowedData", "prepare_windows", "split_windows", "train_and_score_windows",
           "windowed_data"]

log = logging.getLogger(__name__)
HOST_KEYS = ("host_precision", "host_recall", "host_f1")
SIDES = ("train", "val", "test")


@dataclass
class WindowedData:
    """The windows of each side (their graphs), the pipeline fitted on the training flows, provenance counts."""

    train: list[HostGraph]
    val: list[HostGraph]
    test: list[HostGraph]
    pipeline: PipelineState
    info: dict = field(default_factory=dict)

    def rows(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(encoded rows, labels) of one side's flows, in the graphs' edge order."""
        graphs = getattr(self, side)
        return (np.concatenate([g.edge_attr for g in graphs]), np.concatenate([g.edge_label for g in graphs]))

    def host_labels(self) -> np.ndarray:
        return np.concatenate([g.node_label for g in self.test])


def prepare_windows(table: FlowTable, protocol: ProtocolConfig, pipeline_config: PipelineConfig,
                    settings: GraphSettings, val_fraction: float, seed: int) -> WindowedData:  # fmt: skip
    """Cut ``table`` into windows, split them in time order, fit the pipeline on the training flows, build the
    graphs. A leaky protocol, or ``clean`` (its duplicate removal would take flows out of the graphs), is refused."""
    if protocol.leaky or protocol.name == "clean":
        why = "oversamples before splitting" if protocol.leaky else "removes duplicate flows, changing the host graphs"
        raise ValueError(f"protocol={protocol.name} does not combine with the chronological split (it {why}): use "
                         "protocol=paper, with protocol.drop_ttl=true if wanted")  # fmt: skip
    table, info = working_table(table, protocol)
    window, _ = table_windows(table, settings)
    ids = np.unique(window[window >= 0])  # window numbers increase with time
    split = chronological_split(ids.astype(np.float64), protocol.test_size, val_fraction)
    data = split_windows(table, window, ids, split, pipeline_config, settings, seed, info)
    info["split"] = "chronological"
    log.info("chronological split: %d/%d/%d windows (%d/%d/%d flows)", *(info[f"{s}_windows"] for s in SIDES),
             *(info[f"{s}_records"] for s in SIDES))  # fmt: skip
    return data


def split_windows(table: FlowTable, window: np.ndarray, ids: np.ndarray, split, pipeline_config: PipelineConfig,
                  settings: GraphSettings, seed: int, info: dict) -> WindowedData:  # fmt: skip
    """The windows of ``table`` (``window``: each row's window number, -1 for none; ``ids``: the window numbers
    that ``split``'s train/val/test positions index) on their sides, with the pipeline fitted on the training
    windows' flows only; the sides' counts go into ``info``."""
    side_ids = {side: set(ids[getattr(split, side)].tolist()) for side in SIDES}
    train_rows = np.flatnonzero(np.isin(window, ids[split.train]))
    pipeline = FeaturePipeline(pipeline_config, seed=seed).fit(table.subset(list(train_rows))).state_
    graphs, report = graphs_from_table(table, pipeline, settings)
    sides = {side: [g for g in graphs if g.window in side_ids[side]] for side in SIDES}
    info.update(graph=asdict(settings), graph_report=report, features_out=pipeline.n_outputs)
    return windowed_data(sides, pipeline, info)


def windowed_data(sides: dict[str, list[HostGraph]], pipeline: PipelineState, info: dict) -> WindowedData:
    """:class:`WindowedData` of the graphs of each side, their window, flow and test-host counts added to ``info``."""
    info.update(**{f"{side}_windows": len(sides[side]) for side in SIDES},
                **{f"{side}_records": int(sum(g.n_edges for g in sides[side])) for side in SIDES},
                test_hosts=int(sum(g.n_nodes for g in sides["test"])),
                test_malicious_hosts=int(sum(g.node_label.sum() for g in sides["test"])),
                test_attack_flows=int(sum(g.edge_label.sum() for g in sides["test"])))  # fmt: skip
    return WindowedData(sides["train"], sides["val"], sides["test"], pipeline, info)


def train_and_score_windows(name: str, params: dict, data: WindowedData, seed: int,
                            use_smote: bool = False) -> tuple[dict, np.ndarray, np.ndarray]:  # fmt: skip
    """Fit one detector on the training windows (validation windows for early stopping) and score it on the test
    windows, per flow and per host: (metrics, flow scores, host scores of the test windows' nodes); SMOTE
    (``use_smote``) applies to a flow classifier's training rows only."""
    detector = make_detector(name, seed=seed, **params)
    (X_train, y_train), (X_val, y_val), (X_test, y_test) = (data.rows(side) for side in SIDES)
    started = time.perf_counter()
    if detector.input_kind == HOST_GRAPHS:
        detector.fit(data.train, y_train, data.val, y_val)
        seconds = time.perf_counter() - started
        scores = detector.predict_proba(data.test)
        host_proba = getattr(detector, "predict_host_proba", None)
        host_scores = host_proba(data.test) if host_proba else host_scores_from_flows(data.test, scores)
    else:
        if use_smote:
            X_train, y_train, _ = smote(X_train, y_train, seed)
        detector.fit(X_train, y_train, X_val, y_val)
        seconds = time.perf_counter() - started
        scores = detector.predict_proba(X_test)
        host_scores = host_scores_from_flows(data.test, scores)
    metrics = detection_metrics(y_test, scores, threshold=data.pipeline.threshold)
    host = detection_metrics(data.host_labels(), host_scores, threshold=data.pipeline.threshold)
    metrics.update(train_seconds=round(seconds, 2), model_bytes=detector.n_bytes(), host=host,
                   **{key: host[key.removeprefix("host_")] for key in HOST_KEYS})  # fmt: skip
    if getattr(detector, "history_", None) is not None:
        metrics["epochs_run"] = detector.history_.epochs_run
    return metrics, scores, host_scores
