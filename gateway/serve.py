"""The verdict service: a flow source -> batches -> the bundle's model -> flow verdicts (JSON lines) and host
verdicts to a pluggable sink. numpy + ai-edge-litert only: nothing here imports torch, flwr, sklearn or pandas.

Host sinks (``--host-sink``, repeatable: each host verdict goes to every sink, in the order given): ``stdout``,
``file:PATH`` (JSON lines, appended), ``sdn:URL`` (the isolation hook, :mod:`sdn.hook`); :func:`register_sink` adds
more.
"""

from __future__ import annotations

import dataclasses

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from gateway.bundle import Bundle
from gateway.encode import check_columns, encode_batch
from gateway.engine import VerdictModel
from gateway.hosts import HostPolicy, HostTracker, HostVerdict
from gateway.sources import FlowSource, Record
from gateway.switch import BundleFollower, open_bundle, poll_switch


class HostSink(Protocol):
    def emit(self, verdict: HostVerdict) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """Host verdicts as JSON lines on a stream (stdout) or an appended file."""

    def __init__(self, stream: IO[str], owned: bool = False) -> None:
        self.stream, self.owned = stream, owned

    def emit(self, verdict: HostVerdict) -> None:
        self.stream.write(json.dumps({"type": "host", **verdict.as_dict()}) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.owned:
            self.stream.close()


def _sdn_hook(spec: str) -> HostSink:
    from sdn.hook import hook_from_spec  # standard library only, like this module

    return hook_from_spec(spec)


SINKS: dict[str, Callable[[str], HostSink]] = {
    "stdout": lambda _: JsonLinesSink(sys.stdout),
    "file": lambda path: JsonLinesSink(open(path, "a", encoding="utf-8"), owned=True),
    "sdn": _sdn_hook,
}


def register_sink(kind: str, factory: Callable[[str], HostSink]) -> None:
    SINKS[kind] = factory


def make_sink(spec: str) -> HostSink:
    """``stdout``, ``file:PATH`` or ``KIND:ARG`` of a registered sink."""
    kind, _, argument = spec.partition(":")
    if kind not in SINKS:
        raise ValueError(f"unknown host sink {kind!r}: available {', '.join(sorted(SINKS))}")
    if kind == "file" and not argument:
        raise ValueError("host sink file needs a path: file:PATH")
    return SINKS[kind](argument)


@dataclass
class ServeReport:
    """Counts of one run; ``confusion`` compares flow verdicts with the source's labels where it has them
    (keys tp, fp, fn, tn; records without a verdict, such as Background, are counted under ``unlabelled``)."""

    records: int = 0
    scored: int = 0
    malicious: int = 0
    malformed: Counter = field(default_factory=Counter)
    host_verdicts: Counter = field(default_factory=Counter)
    confusion: Counter = field(default_factory=Counter)
    unlabelled: int = 0
    isolated: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    seconds: float = 0.0
    versions: Counter = field(default_factory=Counter)  # flow verdicts per model version
    switches: list[dict] = field(default_factory=list)  # live switches to a newly installed bundle

    def labelled(self) -> dict | None:
        """Per-flow precision and recall against the source's labels (None when no scored flow had one)."""
        c = self.confusion
        n = c["tp"] + c["fp"] + c["fn"] + c["tn"]
        if not n:
            return None
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else None
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else None
        return {"flows": n, "precision": None if precision is None else round(precision, 5),
                "recall": None if recall is None else round(recall, 5),
                **{k: c[k] for k in ("tp", "fp", "fn", "tn")}}  # fmt: skip

    def as_dict(self, lines: int) -> dict:
        return {"lines": lines, "records": self.records, "scored": self.scored, "malicious": self.malicious,
                "malformed": dict(self.malformed), "host_verdicts": dict(self.host_verdicts),
                "labelled": self.labelled(), "unlabelled": self.unlabelled,
                "hosts": {"isolated": self.isolated, "released": self.released},
                "seconds": round(self.seconds, 3), "model_versions": dict(self.versions), "switches": self.switches,
                "flows_per_second": round(self.scored / self.seconds, 1) if self.seconds else None}  # fmt: skip

    def deliver(self, verdict: HostVerdict, sinks: Sequence[HostSink], model_version: str = "") -> None:
        """Count a host verdict (each host listed once; re-assertions counted in ``host_verdicts``) and send it,
        naming ``model_version`` (the bundle serving when it was taken), to every sink, in the order given: each
        has the verdict before the next."""
        if model_version:
            verdict = dataclasses.replace(verdict, model_version=model_version)
        self.host_verdicts[verdict.action] += 1
        hosts = self.isolated if verdict.action == "isolate" else self.released
        if verdict.host not in hosts:
            hosts.append(verdict.host)
        for sink in sinks:
            sink.emit(verdict)

    def count_verdict(self, malicious: bool, label: int | None) -> None:
        if label is None or label < 0:
            self.unlabelled += 1
        else:
            self.confusion[("t" if malicious == bool(label) else "f") + ("p" if malicious else "n")] += 1


class VerdictService:
    """Turns records into verdicts, batch by batch."""

    def __init__(self, bundle: Bundle, model: VerdictModel, out: IO[str], sinks: Sequence[HostSink],
                 policy: HostPolicy | None = None) -> None:  # fmt: skip
        self.bundle, self.model, self.out, self.sinks = bundle, model, out, list(sinks)
        self.hosts = HostTracker(policy)
        self.report = ServeReport()
        self.follower = None  # a gateway.switch.BundleFollower when serving a followed bundle path

    def switch_to(self, bundle: Bundle, model: VerdictModel) -> None:
        """Score the next batch with ``bundle``'s model (the host windows carry on)."""
        self.bundle, self.model = bundle, model

    def process(self, records: list[Record]) -> None:
        encoded = encode_batch(records, self.bundle.pipeline, self.report.malformed)
        kept = encoded.records
        if not kept:
            return
        scores = self.model.probabilities(encoded.rows)
        now = time.time()
        version = self.bundle.model_version
        lines = []
        for record, score in zip(kept, scores):
            malicious = bool(score >= self.model.threshold)
            moment = record.time if record.time is not None else now
            lines.append(json.dumps({"time": moment, "src": record.src, "dst": record.dst, "line": record.line,
                                     "score": round(float(score), 5), "verdict": "attack" if malicious else "benign",
                                     "label": record.label if (record.label or 0) >= 0 else None,
                                     "model_version": version}))  # fmt: skip
            self.report.malicious += int(malicious)
            self.report.count_verdict(malicious, record.label)
            if record.src is not None:
                for verdict in self.hosts.observe(record.src, moment, malicious):
                    self.report.deliver(verdict, self.sinks, version)
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.report.scored += len(kept)
        self.report.versions[version] += len(kept)

    def run(self, source: FlowSource, batch_size: int) -> ServeReport:
        started = time.perf_counter()
        for batch in record_batches(source, batch_size, self.bundle.pipeline, self.report):
            poll_switch(self)
            self.process(batch)
        self.report.malformed.update(source.stats.malformed)
        self.report.seconds = time.perf_counter() - started
        return self.report


def record_batches(source: FlowSource, batch_size: int, pipeline, report: ServeReport) -> Iterator[list[Record]]:
    """Batches of at most ``batch_size`` records of ``source`` (a shorter one whenever a followed source idles, and
    at its end), counted in ``report``; the first record's columns are checked against ``pipeline``."""
    pending: list[Record] = []
    checked = False
    for record in source:
        if record is not None:
            if not checked:
                check_columns(pipeline, record.layout.features, f"source {source.path} ({source.fmt})")
                checked = True
            pending.append(record)
            report.records += 1
        if pending and (record is None or len(pending) >= batch_size):
            yield pending
            pending = []
    if pending:
        yield pending


def make_sinks(specs: str | Sequence[str] | None) -> list[HostSink]:
    """The host sinks of ``specs`` (one spec, several, or None/'' for none); on a bad spec, the sinks already
    opened are closed again before the error is raised."""
    specs = [specs] if isinstance(specs, str) else list(specs or [])
    sinks: list[HostSink] = []
    try:
        for spec in specs:
            if spec:
                sinks.append(make_sink(spec))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def serve(bundle_dir: str | Path, source_path: str | Path, *, fmt: str = "auto", follow: bool = False,
          idle_exit: float = 0.0, batch_size: int = 256, variant: str | None = None, out: IO[str] | None = None,
          host_sink: str | Sequence[str] | None = "stdout", policy: HostPolicy | None = None,
          num_threads: int = 1, graph_policy=None, graph_lateness: float | None = None,
          public_key: str | Path | None = None, watch: bool | None = None,
          switch_interval: float = 1.0) -> dict:  # fmt: skip
    """Run the service to the end of the source (or, following, until idle for ``idle_exit`` s); returns the
    report as a dict. ``host_sink``: one sink spec or several (each host verdict goes to all, in order).

    A bundle whose gateway input is ``host_graphs`` is served by :class:`gateway.graph_serve.GraphVerdictService`
    (``graph_policy``: its :class:`gateway.graph_hosts.GraphHostPolicy`, ``graph_lateness``: seconds a window
    stays open for late flows); flow-row bundles by :class:`VerdictService` with ``policy``.

    ``public_key``: the pinned key; the bundle's signature must verify with it (:mod:`gateway.signing`).
    ``watch`` (default: ``follow``): look at most every ``switch_interval`` s, between batches, whether
    ``bundle_dir`` (a link such as ``ROOT/current`` of :mod:`gateway.install`) points at a new bundle, and switch
    to it once verified (:mod:`gateway.switch`)."""
    watch = follow if watch is None else watch
    bundle = open_bundle(os.path.realpath(bundle_dir) if watch else bundle_dir, public_key)
    source = FlowSource(source_path, fmt, follow=follow, idle_exit=idle_exit)
    if bundle.gateway_input == "host_graphs":
        from gateway.graph_engine import GraphModel
        from gateway.graph_serve import DEFAULT_LATENESS, GraphVerdictService

        def make_model(bundle: Bundle):
            return GraphModel(bundle, variant, num_threads=num_threads)

        model = make_model(bundle)
        sinks = make_sinks(host_sink)
        lateness = DEFAULT_LATENESS if graph_lateness is None else graph_lateness
        service = GraphVerdictService(bundle, model, out or sys.stdout, sinks, graph_policy, lateness)
    else:
        def make_model(bundle: Bundle):
            return VerdictModel(bundle, variant, num_threads=num_threads)

        model = make_model(bundle)
        sinks = make_sinks(host_sink)
        service = VerdictService(bundle, model, out or sys.stdout, sinks, policy)
    if watch:
        service.follower = BundleFollower(bundle_dir, bundle, make_model, public_key, switch_interval)
    try:
        report = service.run(source, batch_size)
    finally:
        for sink in sinks:
            sink.close()
    result = report.as_dict(source.stats.lines)
    if service.follower is not None:
        result["refused_switches"] = service.follower.refusals
    result["host_time"] = service.hosts.counts()  # records set aside by the stream's watermark, late ones
    if hasattr(service, "graph_summary"):  # windows, split windows, flows without a verdict, where time went
        result["graph"] = service.graph_summary()
    summaries = [sink.summary() for sink in sinks if hasattr(sink, "summary")]
    if summaries:  # the isolation hook: delivered, retried, dead-lettered, pending
        result["host_sink"] = summaries[0] if len(summaries) == 1 else summaries
    return result
