"""Host-graph models on the gateway: per-window latency on one thread, flows per second, and where the time goes.

    python benchmarks/gateway_graphs.py [--checkpoint RUN/final.pt] [--variant egraphsage] [--runs 3]
    python benchmarks/gateway_graphs.py --source DATA/stratosphere/011-zeek-mixed.conn.log.labeled \
        --train-on-source stratosphere

Without ``--checkpoint`` it trains a GCN of the default architecture (hidden 64, 2 layers) for a few epochs on raw
UNSW-NB15 (rows 3000 onwards of ``raw/UNSW-NB15_1.first20000.csv``, windows of 256 flows): speed does not depend
on how well it learned. The bundle is exported as ``python -m gateway export`` does, then:

* **per window, in process**: :class:`gateway.graph_serve.GraphVerdictService` (the code ``serve`` runs) on the
  source with no host sink and verdict lines to /dev/null, one interpreter thread; per scored graph the time from
  building its graph to its last verdict line (graph building + interpreter + verdicts; the per-batch
  normalisation and encoding is reported apart, per flow). Median and p99 over the full 256-flow windows of
  ``--runs`` runs after one warm-up run;
* **the parts**: graph building (:func:`gateway.graph_stream.window_graphs`), the numpy inputs
  (:func:`gateway.graph_inputs.model_inputs`: the normalised adjacency or incidence matrices, padding) and the
  interpreter alone, each timed on the same windows;
* **through ``python -m gateway serve``** (a subprocess, the real path): flows per second from its summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train_checkpoint(data_dir: Path, out: Path, variant: str, dataset: str = "unsw-nb15-raw",
                     train_file: Path | None = None) -> Path:  # fmt: skip
    """A default-architecture host-graph model, a few epochs on windows of 256 flows: raw UNSW-NB15 rows 3000 on,
    or all of ``train_file`` (a ``dataset`` file, say a Zeek capture to serve)."""
    import torch

    from flows.graphs import GraphSettings
    from flows.graphs.from_table import graphs_from_table
    from flows.loader import load_file
    from flows.pipeline import FeaturePipeline, PipelineConfig
    from models.checkpoint import ModelSpec, save_checkpoint
    from models.registry import get_family

    torch.set_num_threads(1)
    settings = GraphSettings(flows=256)
    if train_file is None:
        table = load_file("unsw-nb15-raw", data_dir / "unsw-nb15" / "raw" / "UNSW-NB15_1.first20000.csv")
        table = table.subset(list(range(3000, len(table))))
    else:
        table = load_file(dataset, train_file)
    pipeline = FeaturePipeline(PipelineConfig(nonfinite="impute")).fit(table).state_
    graphs, _ = graphs_from_table(table, pipeline, settings)
    spec = ModelSpec("gcn", pipeline.n_outputs, {"variant": variant})
    torch.manual_seed(0)
    model = spec.build()
    get_family("gcn").train_local(model, graphs, np.concatenate([g.edge_label for g in graphs]), epochs=5,
                                  batch_size=4, lr=0.01, seed=0)  # fmt: skip
    path = out / "final.pt"
    save_checkpoint(path, spec, model.state_dict(), pipeline.to_json(), 1, graph=asdict(settings))
    return path


def percentiles(seconds: list[float]) -> str:
    a = np.asarray(seconds) * 1e3
    return f"{np.median(a):.3f} / {np.percentile(a, 99):.3f} ms" if len(a) else "n/a"


def in_process(bundle_dir: Path, source: Path, variant: str, runs: int) -> dict:
    """Per-window latency and its parts through GraphVerdictService, one thread."""
    from gateway.bundle import load_bundle
    from gateway.graph_engine import GraphModel
    from gateway.graph_inputs import model_inputs
    from gateway.graph_serve import GraphVerdictService
    from gateway.graph_stream import window_graphs
    from gateway.sources import FlowSource

    bundle = load_bundle(bundle_dir)
    model = GraphModel(bundle, variant, num_threads=1)
    full, encode, flows, totals = [], 0.0, 0, {"build": 0.0, "interpreter": 0.0, "verdicts": 0.0}
    windows = []
    for run in range(runs + 1):
        with open(os.devnull, "w") as sink:
            service = GraphVerdictService(bundle, model, sink, [])
            closed = []
            original = service.score_window

            def keep(window, original=original, closed=closed):
                closed.append(window)
                original(window)

            service.score_window = keep
            report = service.run(FlowSource(source), 256)
        if run == 0:
            windows = closed  # warm-up: its windows are reused below for the parts
            continue
        sizes = [len(w.flows) for w in closed]
        per_graph = service.window_seconds
        full += [s for s, n in zip(per_graph, sizes) if n == 256] if len(per_graph) == len(sizes) else per_graph
        encode += service.timing["encode"]
        flows += report.scored
        for key in totals:
            totals[key] += service.timing[key]
    settings = service.settings
    build, inputs, invoke = [], [], []
    for window in windows:
        if len(window.flows) != 256:
            continue
        for _ in range(runs):
            a = time.perf_counter()
            graphs = window_graphs(window, settings, "bench", model.max_nodes, model.max_edges, service.counts)
            b = time.perf_counter()
            graph = graphs[0]
            runner = next(r for r in model.runners if graph.n_edges <= r.edges and graph.n_nodes <= r.nodes)
            values = model_inputs(graph, model.structure, runner.nodes, runner.edges)
            c = time.perf_counter()
            for detail, value in zip(runner.inputs, values):
                runner.interpreter.set_tensor(detail["index"], value)
            runner.interpreter.invoke()
            d = time.perf_counter()
            build.append(b - a)
            inputs.append(c - b)
            invoke.append(d - c)
    hosts = [window_graphs(w, settings, "bench", 10**6, 10**6, service.counts)[0].n_nodes
             for w in windows if len(w.flows) == 256]  # fmt: skip
    return {"window": percentiles(full), "windows": len(full), "encode_per_flow_us": 1e6 * encode / max(flows, 1),
            "build": percentiles(build), "inputs": percentiles(inputs), "invoke": percentiles(invoke),
            "share": {k: v / max(sum(totals.values()), 1e-12) for k, v in totals.items()},
            "hosts": f"{int(np.median(hosts))} (max {max(hosts)})" if hosts else "n/a",
            "flows_per_second": flows / max(encode + sum(totals.values()), 1e-12)}  # fmt: skip


def through_serve(bundle_dir: Path, source: Path, variant: str) -> float:
    """flows per second reported by ``python -m gateway serve`` (a subprocess, one thread, no host sink)."""
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--bundle", str(bundle_dir), "--source",
                           str(source), "--variant", variant, "--host-sink", "", "--out", os.devnull],
                          cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    summary = json.loads(next(line for line in done.stderr.splitlines() if line.startswith("summary: "))[9:])
    return float(summary["flows_per_second"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a host-graph run's final.pt (default: train one briefly)")
    parser.add_argument("--variant", default="gcn", choices=["gcn", "egraphsage"], help="network when training")
    parser.add_argument("--source", help="capture to serve (default: raw/UNSW-NB15_1.first20000.csv)")
    parser.add_argument("--train-on-source", metavar="DATASET",
                        help="train the model on --source itself, read as this data set (iot-23, stratosphere)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    data_dir = Path(os.environ.get("BOTDEFENDER_DATA_DIR", REPO.parent / "shared" / "data"))
    source = Path(args.source) if args.source else data_dir / "unsw-nb15" / "raw" / "UNSW-NB15_1.first20000.csv"
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            checkpoint = Path(args.checkpoint)
        elif args.train_on_source:
            checkpoint = train_checkpoint(data_dir, Path(tmp), args.variant, args.train_on_source, source)
        else:
            checkpoint = train_checkpoint(data_dir, Path(tmp), args.variant)
        from gateway.export import export_bundle

        bundle = Path(tmp) / "bundle"
        manifest = export_bundle(checkpoint, bundle)
        print(f"checkpoint {checkpoint.name}: {manifest['family']} {manifest['graph']['variant']}, params "
              f"{json.dumps(manifest['family_params'], sort_keys=True)}; capacities {manifest['batch_sizes']}; "
              f"source {source.name}; one thread")  # fmt: skip
        print("| model | 256-flow window p50 / p99 | windows | graph build p50 / p99 | inputs p50 / p99 | "
              "interpreter p50 / p99 | time share build / inputs+interpreter / verdicts | encode per flow | hosts per "
              "window | flows/s in process | flows/s through serve |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for variant in sorted({e["variant"] for e in manifest["models"].values()}):
            r = in_process(bundle, source, variant, args.runs)
            served = through_serve(bundle, source, variant)
            share = " / ".join(f"{100 * r['share'][k]:.0f}%" for k in ("build", "interpreter", "verdicts"))
            print(f"| {variant} | {r['window']} | {r['windows']} | {r['build']} | {r['inputs']} | {r['invoke']} | "
                  f"{share} | {r['encode_per_flow_us']:.1f} us | {r['hosts']} | {r['flows_per_second']:,.0f} | "
                  f"{served:,.0f} |")  # fmt: skip
        print("Target of issue 15: gateway scoring of a 256-flow window p99 <= 10 ms on one thread (the window "
              "column: graph building + numpy inputs + interpreter + verdict lines).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
