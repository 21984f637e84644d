"""The verdict service for host-graph bundles: records -> windows (:mod:`gateway.graph_stream`) -> one LiteRT call
per window graph (:mod:`gateway.graph_engine`) -> flow verdicts (the JSON lines of :mod:`gateway.serve`, with the
window number) from the flow head and host verdicts from the host head (:mod:`gateway.graph_hosts`) to the same
host sinks. numpy + ai-edge-litert only.

A flow gets its verdict when its window closes; flows that cannot be placed (no address or time) and flows of
windows below ``min_flows`` get none and are counted in the summary's ``graph`` object, with the windows, split
windows and parts, late flows and the time spent building graphs and in the interpreter.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import IO

import numpy as np

from flows.graphs.hostgraph import HostGraph
from flows.graphs.settings import GraphSettings
from gateway.bundle import Bundle, BundleError
from gateway.graph_engine import GraphModel
from gateway.graph_hosts import GraphHostPolicy, GraphHostTracker
from gateway.graph_stream import Flows, Window, WindowCutter, encode_flows, window_graphs
from gateway.serve import HostSink, ServeReport, record_batches
from gateway.sources import FlowSource, Record
from gateway.switch import poll_switch

DEFAULT_LATENESS = 60.0  # seconds a flow may arrive after later ones and still join its training window


def bundle_settings(bundle: Bundle) -> GraphSettings:
    """The windowing the bundle's model was trained with (its manifest's ``graph.settings``)."""
    return GraphSettings(**bundle.manifest["graph"]["settings"])


class GraphVerdictService:
    """Turns records into windows and windows into verdicts."""

    def __init__(self, bundle: Bundle, model: GraphModel, out: IO[str], sinks: Sequence[HostSink],
                 policy: GraphHostPolicy | None = None, lateness: float = DEFAULT_LATENESS,
                 site: str = "") -> None:  # fmt: skip
        self.bundle, self.model, self.out, self.sinks = bundle, model, out, list(sinks)
        self.settings = bundle_settings(bundle)
        self.hosts = GraphHostTracker(policy)
        self.cutter = WindowCutter(self.settings, float(lateness), bundle.pipeline.n_outputs)
        self.report = ServeReport()
        self.site = site
        self.counts: Counter = Counter()
        self.timing = {"encode": 0.0, "build": 0.0, "interpreter": 0.0, "verdicts": 0.0}
        self.window_seconds: list[float] = []  # per scored graph: build + interpreter + verdicts
        self._accepted = 0
        self.follower = None  # a gateway.switch.BundleFollower when serving a followed bundle path

    def switch_to(self, bundle: Bundle, model: GraphModel) -> None:
        """Score the windows that close from now on with ``bundle``'s model. The flows buffered in open windows
        are encoded again with its pipeline (same input columns and windowing: :mod:`gateway.switch`); a bundle
        whose pipeline refuses one of them is refused (:class:`BundleError`) and nothing changes."""
        pending = self.cutter.pending
        rows = None
        if pending is not None and len(pending):
            refused: Counter = Counter()
            again = encode_flows(pending.records, bundle.pipeline, refused, 0)
            if len(again) != len(pending) or any(a is not b for a, b in zip(again.records, pending.records)):
                raise BundleError(f"{bundle.path}: its pipeline refuses {len(pending) - len(again)} of the "
                                  f"{len(pending)} flows buffered in open windows ({dict(refused)})")  # fmt: skip
            rows = again.rows
        self.bundle, self.model = bundle, model
        self.cutter.n_features = bundle.pipeline.n_outputs
        if rows is not None:
            pending.rows = rows

    def process(self, records: list[Record]) -> None:
        """Accept a batch of records; score every window it closes."""
        started = time.perf_counter()
        flows = encode_flows(records, self.bundle.pipeline, self.report.malformed, self._accepted)
        self._accepted += len(flows)
        self.timing["encode"] += time.perf_counter() - started
        windows, _ = self.cutter.add(flows)
        for window in windows:
            self.score_window(window)

    def finish(self) -> None:
        for window in self.cutter.finish():
            self.score_window(window)

    def score_window(self, window: Window) -> None:
        started = time.perf_counter()
        graphs = window_graphs(window, self.settings, self.site, self.model.max_nodes, self.model.max_edges,
                               self.counts)  # fmt: skip
        self.timing["build"] += time.perf_counter() - started
        self.counts["windows"] += 1
        by_seq = {int(s): r for s, r in zip(window.flows.columns["seq"], window.flows.records)}
        for graph in graphs:
            self.score_graph(graph, [by_seq[int(s)] for s in graph.flow_rows], started)
            started = time.perf_counter()

    def score_graph(self, graph: HostGraph, records: list[Record], started: float) -> None:
        """Score one graph (its flows' ``records`` in edge order); ``started``: when its building began."""
        begun = time.perf_counter()
        flow_probs, host_probs = self.model.probabilities(graph)
        done = time.perf_counter()
        self.timing["interpreter"] += done - begun
        flags = flow_probs >= self.model.threshold
        version = self.bundle.model_version
        lines = []
        for record, score, malicious in zip(records, flow_probs, flags):
            lines.append(json.dumps({"time": record.time, "src": record.src, "dst": record.dst, "line": record.line,
                                     "window": graph.window, "score": round(float(score), 5),
                                     "verdict": "attack" if malicious else "benign",
                                     "label": record.label if (record.label or 0) >= 0 else None,
                                     "model_version": version}))  # fmt: skip
            self.report.count_verdict(bool(malicious), record.label)
        self.report.malicious += int(flags.sum())
        self.report.scored += len(records)
        self.report.versions[version] += len(records)
        self.counts["graphs"] += 1
        for verdict in self.hosts.observe(graph, host_probs, flags, self.model.threshold):
            self.report.deliver(verdict, self.sinks, version)
        if lines:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
        finished = time.perf_counter()
        self.timing["verdicts"] += finished - done
        self.window_seconds.append(finished - started)

    def run(self, source: FlowSource, batch_size: int) -> ServeReport:
        started = time.perf_counter()
        for batch in record_batches(source, batch_size, self.bundle.pipeline, self.report):
            self.site = self.site or site_name(batch[0].layout.source, source.path.name)
            poll_switch(self)
            self.process(batch)
        self.finish()
        self.report.malformed.update(source.stats.malformed)
        self.report.seconds = time.perf_counter() - started
        return self.report

    def graph_summary(self) -> dict:
        """Windows, graphs, flows without a verdict and where the time went."""
        counts = {**{k: int(v) for k, v in self.counts.items()}, **{k: int(v) for k, v in self.cutter.counts.items()}}
        seconds = np.asarray(self.window_seconds)
        latency = ({"p50_ms": round(float(np.median(seconds)) * 1e3, 3),
                    "p99_ms": round(float(np.percentile(seconds, 99)) * 1e3, 3)} if len(seconds) else {})  # fmt: skip
        return {"settings": {"window": self.settings.window, "flows": self.settings.flows,
                             "seconds": self.settings.seconds, "min_flows": self.settings.min_flows,
                             "lateness": self.cutter.lateness},
                **counts, "seconds": {k: round(v, 4) for k, v in self.timing.items()}, "per_graph": latency,
                "hosts": self.hosts.counts()}  # fmt: skip


def site_name(source: str, file_name: str) -> str:
    """The site of a served file as training names it (``<source>:<file name>``: ``FlowTable.site_name``)."""
    return f"{source}:{file_name}" if source else file_name


__all__ = ["DEFAULT_LATENESS", "Flows", "GraphVerdictService", "bundle_settings", "site_name"]
