"""Host-graph models on the gateway (issue 15): the fixed-shape export form equals the trained network on real
windows, the LiteRT models agree with PyTorch, the gateway cuts the same windows and builds the same graphs as
training, host_graphs manifests are checked, windows over capacity are cut and counted, the host-head policy,
and `python -m gateway export / verify / serve` end to end with torch blocked in the serve process."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import RAW_FILE, TRAIN_FILE
from flows.graphs import GraphSettings, HostGraph
from gateway.bundle import load_bundle
from gateway.manifest import ManifestError, check_manifest
from models.gcn.export_form import STRUCTURE

REPO = Path(__file__).resolve().parents[1]
SETTINGS = GraphSettings(flows=256)
SMALL = {"hidden": 32, "head_hidden": 32, "layers": 2}
BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'torch_geometric', 'flwr', 'sklearn', 'pandas'}:
            raise ImportError(f'{name} is blocked: the gateway must not need it')
sys.meta_path.insert(0, Blocker())
from gateway.__main__ import main
code = main(sys.argv[1:])
assert not {'torch', 'torch_geometric', 'flwr', 'sklearn', 'pandas'} & {m.split('.')[0] for m in sys.modules}
raise SystemExit(code)
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def graph_runs(data_dir, tmp_path_factory):
    """Per variant: (checkpoint path, trained HostGraphNet in eval mode) — a few epochs on raw UNSW-NB15 windows of
    256 flows (rows after the first 3000, which the tests serve), the windowing recorded in the checkpoint."""
    from flows.graphs.from_table import graphs_from_table
    from flows.loader import load_file
    from flows.pipeline import FeaturePipeline, PipelineConfig
    from models.checkpoint import ModelSpec, save_checkpoint
    from models.registry import get_family

    table = load_file("unsw-nb15-raw", data_dir / "unsw-nb15" / "raw" / TRAIN_FILE)
    table = table.subset(list(range(3000, len(table))))
    pipeline = FeaturePipeline(PipelineConfig(nonfinite="error")).fit(table).state_
    graphs, _ = graphs_from_table(table, pipeline, SETTINGS)
    labels = np.concatenate([g.edge_label for g in graphs])
    runs = {}
    for variant in ("gcn", "egraphsage"):
        spec = ModelSpec("gcn", pipeline.n_outputs, {**SMALL, "variant": variant})
        torch.manual_seed(0)
        model = spec.build()
        get_family("gcn").train_local(model, graphs, labels, epochs=8, batch_size=4, lr=0.01, seed=0)
        path = tmp_path_factory.mktemp(f"run_{variant}") / "final.pt"
        save_checkpoint(path, spec, model.state_dict(), pipeline.to_json(), 3, graph=asdict(SETTINGS))
        runs[variant] = (path, model.eval())
    return runs


@pytest.fixture(scope="session")
def served_graphs(data_dir, graph_runs):
    """The training-side graphs of the served file (flows.graphs.from_table on the reader's table)."""
    from flows.graphs.from_table import graphs_from_table
    from flows.loader import load_file
    from models.checkpoint import load_checkpoint

    table = load_file("unsw-nb15-raw", data_dir / "unsw-nb15" / "raw" / RAW_FILE)
    pipeline = load_checkpoint(graph_runs["gcn"][0]).pipeline
    graphs, _ = graphs_from_table(table, pipeline, SETTINGS)
    return table, pipeline, graphs


@pytest.fixture(scope="session")
def graph_bundles(graph_runs, tmp_path_factory):
    from gateway.export import export_bundle

    out = {}
    for variant, (path, _) in graph_runs.items():
        out[variant] = tmp_path_factory.mktemp(f"bundle_{variant}")
        export_bundle(path, out[variant])
    return out


def _torch_outputs(model, graphs: list[HostGraph]) -> tuple[np.ndarray, np.ndarray]:
    from models.gcn.training import predict

    return predict(model, graphs)


def test_the_runtime_and_the_export_form_agree_on_names():
    from flows.graphs.from_table import TRAFFIC_COLUMNS
    from flows.graphs.settings import WINDOW_KINDS
    from gateway import graph_stream, manifest
    from gateway.graph_inputs import INPUTS
    from models.gcn.export_form import input_names
    from models.gcn.params import VARIANTS

    assert graph_stream.TRAFFIC_COLUMNS is TRAFFIC_COLUMNS  # one definition, in the numpy builder
    assert manifest.WINDOW_KINDS == WINDOW_KINDS and set(manifest.GRAPH_STRUCTURES) == set(STRUCTURE.values())
    assert set(STRUCTURE) == set(VARIANTS) and all(INPUTS[STRUCTURE[v]] == input_names(v) for v in VARIANTS)


@pytest.mark.parametrize("variant", ["gcn", "egraphsage"])
def test_the_fixed_shape_form_equals_the_trained_network_on_real_windows(graph_runs, served_graphs, variant):
    from gateway.graph_inputs import model_inputs
    from models.gcn.export_form import DenseHostGraphNet

    model = graph_runs[variant][1]
    _, _, graphs = served_graphs
    form = DenseHostGraphNet(model)
    edges, nodes = _torch_outputs(model, graphs)
    got_edges, got_nodes = [], []
    for graph in graphs:
        with torch.no_grad():
            out = form(*[torch.from_numpy(a) for a in model_inputs(graph, STRUCTURE[variant], 300, 256)]).numpy()
        got_edges.append(out[: graph.n_edges])
        got_nodes.append(out[256 : 256 + graph.n_nodes])
    assert len(graphs) == 12 and max(g.n_nodes for g in graphs) > 10
    np.testing.assert_allclose(np.concatenate(got_edges), edges, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.concatenate(got_nodes), nodes, atol=1e-5, rtol=0)


def test_self_loops_and_parallel_flows_are_normalised_as_gcnconv_does(graph_runs, served_graphs):
    """A window with self-loop flows and repeated flows between the same hosts (the two cases gcn_norm treats
    specially): the export form still equals the trained network."""
    from gateway.graph_inputs import model_inputs
    from models.gcn.export_form import DenseHostGraphNet

    _, _, graphs = served_graphs
    g = graphs[0]
    index = np.array([[0, 0, 0, 1, 2, 2], [0, 1, 1, 0, 2, 2]], np.int64)
    odd = HostGraph(window=0, start=0.0, end=1.0, site="", n_nodes=4, edge_index=index, edge_attr=g.edge_attr[:6],
                    node_attr=g.node_attr[:4], edge_label=np.zeros(6, np.int64), node_label=np.zeros(4, np.int64),
                    hosts=np.array(list("abcd"), object), flow_rows=np.arange(6, dtype=np.int64))  # fmt: skip
    for variant, (_, model) in graph_runs.items():
        edges, nodes = _torch_outputs(model, [odd])
        with torch.no_grad():
            out = DenseHostGraphNet(model)(*[torch.from_numpy(a) for a in model_inputs(odd, STRUCTURE[variant], 8, 8)]).numpy()
        np.testing.assert_allclose(out[:6], edges, atol=1e-5, rtol=1e-6)  # logits far from 0 here: fp32 noise
        np.testing.assert_allclose(out[8:12], nodes, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("variant", ["gcn", "egraphsage"])
def test_litert_agrees_with_pytorch_on_real_windows(graph_runs, graph_bundles, served_graphs, variant):
    from gateway.graph_engine import GraphModel

    _, _, graphs = served_graphs
    edges, nodes = _torch_outputs(graph_runs[variant][1], graphs)
    bundle = load_bundle(graph_bundles[variant])
    assert bundle.manifest["graph"]["settings"] == asdict(SETTINGS) and bundle.manifest["graph"]["structure"] == STRUCTURE[variant]
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z.astype(np.float64)))  # noqa: E731
    for name in ("fp32", "int8"):
        model = GraphModel(bundle, name)
        flows, hosts = zip(*(model.probabilities(g) for g in graphs))
        flows, hosts = np.concatenate(flows), np.concatenate(hosts)
        if name == "fp32":
            assert np.abs(flows - sigmoid(edges)).max() < 1e-4 and np.abs(hosts - sigmoid(nodes)).max() < 1e-4
        else:  # dynamic-range int8: verdicts nearly all the same
            assert np.mean((flows >= 0.5) == (sigmoid(edges) >= 0.5)) > 0.98


def _gateway_graphs(path: Path, pipeline, settings: GraphSettings, lateness: float = 60.0,
                    source_name: str = "unsw-nb15-raw") -> tuple[list, Counter]:  # fmt: skip
    """The gateway path on a file: FlowSource -> encode_flows -> WindowCutter -> window_graphs."""
    from gateway.graph_serve import site_name
    from gateway.graph_stream import WindowCutter, encode_flows, window_graphs
    from gateway.sources import FlowSource

    source = FlowSource(path)
    cutter = WindowCutter(settings, lateness, pipeline.n_outputs)
    malformed, counts, graphs, batch, seq = Counter(), Counter(), [], [], 0

    def close(windows):
        for window in windows:
            graphs.extend(window_graphs(window, settings, site_name(source_name, path.name), 10**6, 10**6,
                                        counts))  # fmt: skip

    for record in source:
        if record is not None:
            batch.append(record)
        if len(batch) == 97:  # batches that do not line up with windows
            flows = encode_flows(batch, pipeline, malformed, seq)
            seq += len(flows)
            close(cutter.add(flows)[0])
            batch = []
    flows = encode_flows(batch, pipeline, malformed, seq)
    close(cutter.add(flows)[0])
    close(cutter.finish())
    return graphs, counts + cutter.counts


@pytest.mark.parametrize("settings", [SETTINGS, GraphSettings(window="seconds", seconds=10.0)],
                         ids=["flows", "seconds"])
def test_the_gateway_builds_the_training_graphs_of_a_window(data_dir, graph_bundles, served_graphs, settings):
    from flows.graphs.from_table import graphs_from_table

    table, pipeline, _ = served_graphs
    expected, _ = graphs_from_table(table, pipeline, settings)
    path = data_dir / "unsw-nb15" / "raw" / RAW_FILE
    got, counts = _gateway_graphs(path, load_bundle(graph_bundles["gcn"]).pipeline, settings)
    assert len(got) == len(expected) > 5 and counts["late"] == 0 and counts["unplaced"] == 0
    for mine, theirs in zip(got, expected):
        assert mine.same_as(theirs), mine.window
    # a shorter lateness than the file's disorder (up to 60 s back) cuts other windows, and counts the late flows
    other, counts = _gateway_graphs(path, load_bundle(graph_bundles["gcn"]).pipeline, settings, lateness=0.0)
    assert counts["late"] > 0 and sum(g.n_edges for g in other) == len(table)


def test_a_zeek_capture_gives_the_training_graphs_when_lateness_covers_its_disorder(data_dir):
    """IoT-23 42-1: Zeek logs a connection when it ends, stamped with its start, so 20% of its flows come more than
    60 s after later ones (up to 8 hours). A lateness that covers that cuts the training windows exactly; the
    default 60 s counts the late flows and still scores every one."""
    from flows.graphs.from_table import graphs_from_table
    from flows.loader import load_file
    from flows.pipeline import FeaturePipeline

    path = data_dir / "iot-23" / "CTU-IoT-Malware-Capture-42-1.conn.log.labeled"
    table = load_file("iot-23", path)
    pipeline = FeaturePipeline().fit(table).state_
    for settings in (SETTINGS, GraphSettings(window="seconds", seconds=60.0)):
        expected, _ = graphs_from_table(table, pipeline, settings)
        got, counts = _gateway_graphs(path, pipeline, settings, lateness=1e9, source_name="iot-23")
        assert len(got) == len(expected) > 10 and counts["late"] == 0
        assert all(mine.same_as(theirs) for mine, theirs in zip(got, expected))
        streamed, counts = _gateway_graphs(path, pipeline, settings, source_name="iot-23")
        assert counts["late"] > 0 and sum(g.n_edges for g in streamed) == len(table)


def test_host_graph_manifests_are_checked(graph_bundles):
    manifest = load_bundle(graph_bundles["gcn"]).manifest
    assert manifest["gateway_input"] == "host_graphs" and manifest["batch_sizes"] == [64, 256]
    assert {e["node_capacity"] for e in manifest["models"].values()} == {64, 256}
    check_manifest(manifest)
    cases = [
        (lambda m: m.pop("graph"), "missing field\\(s\\) graph"),
        (lambda m: m["graph"]["settings"].update(window="packets"), "'graph.settings.window' must be one of"),
        (lambda m: m["graph"].update(structure="attention"), "'graph.structure' must be one of"),
        (lambda m: m["models"]["fp32_b64"].pop("node_capacity"), "'models.fp32_b64' is missing field\\(s\\) node_c"),
        (lambda m: m["models"]["fp32_b64"].update(edge_capacity=65), "'models.fp32_b64.edge_capacity' must equal"),
        (lambda m: m["models"]["int8_b256"].update(node_capacity=True), "node_capacity' must be a positive int"),
    ]  # fmt: skip
    for edit, message in cases:
        broken = copy.deepcopy(manifest)
        edit(broken)
        with pytest.raises(ManifestError, match=message):
            check_manifest(broken)


def test_a_window_over_capacity_is_cut_into_parts_and_every_flow_scored(data_dir, graph_runs, tmp_path):
    import io

    from gateway.export import ExportOptions, export_bundle
    from gateway.graph_engine import GraphModel
    from gateway.graph_serve import GraphVerdictService
    from gateway.sources import FlowSource

    out = tmp_path / "small"
    export_bundle(graph_runs["gcn"][0], out, ExportOptions(capacities=(100,), compression="none"))
    bundle = load_bundle(out)
    assert bundle.batch_sizes == [100]
    flows = io.StringIO()
    service = GraphVerdictService(bundle, GraphModel(bundle, "fp32"), flows, [])
    report = service.run(FlowSource(data_dir / "unsw-nb15" / "raw" / RAW_FILE), 256)
    summary = service.graph_summary()
    assert report.scored == 3000 == len(flows.getvalue().splitlines())
    assert summary["split_windows"] == summary["windows"] == 12  # 11 windows of 256 flows and one of 184
    assert summary["parts"] == summary["graphs"] == 11 * 3 + 2


def test_the_host_head_policy():
    from gateway.graph_hosts import GraphHostPolicy, GraphHostTracker

    tracker = GraphHostTracker(GraphHostPolicy(min_flows=3, release_windows=2, reassert=100.0))

    def window(end: float, sent: dict[int, int], probs: list[float]) -> list:
        src = np.concatenate([np.full(k, node) for node, k in sent.items()]).astype(np.int64)
        graph = HostGraph(window=int(end), start=end - 1, end=end, site="", n_nodes=3,
                          edge_index=np.stack([src, np.full(len(src), 2)]),
                          edge_attr=np.zeros((len(src), 1), np.float32),
                          node_attr=np.zeros((3, 12), np.float32), edge_label=np.zeros(len(src), np.int64),
                          node_label=np.zeros(3, np.int64), hosts=np.array(["a", "b", "c"], object),
                          flow_rows=np.arange(len(src), dtype=np.int64))  # fmt: skip
        return [(v.host, v.action, v.rule) for v in tracker.observe(graph, np.array(probs), np.ones(len(src)), 0.5)]

    assert window(1, {0: 2, 1: 5}, [0.9, 0.1, 0.0]) == []  # a flagged host with too few flows is not judged
    assert window(2, {0: 3}, [0.9, 0.0, 0.0]) == [("a", "isolate", "host_head")]
    assert window(3, {1: 3}, [0.0, 0.0, 0.0]) == []  # silence (a's absence) releases nobody
    assert window(4, {0: 2}, [0.0, 0.0, 0.0]) == []  # neither do too few flows
    assert window(5, {0: 3}, [0.1, 0.0, 0.0]) == []  # one clear window: not yet
    assert window(6, {0: 3}, [0.9, 0.0, 0.0]) == []  # flagged again (reassert waits 100 s): the count restarts
    assert window(7, {0: 3}, [0.1, 0.0, 0.0]) == []
    assert window(8, {0: 4}, [0.1, 0.0, 0.0]) == [("a", "release", "windows")]
    assert window(200, {0: 3}, [0.9, 0.0, 0.0]) == [("a", "isolate", "host_head")]
    assert window(301, {0: 3}, [0.9, 0.0, 0.0]) == [("a", "isolate", "reassert")]
    with pytest.raises(ValueError, match="min_flows must be an integer >= 1"):
        GraphHostPolicy(min_flows=0)


def _run(args: list[str], blocked: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", BLOCKER, *args] if blocked else [sys.executable, "-m", "gateway", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_export_verify_and_serve_a_capture_end_to_end(data_dir, graph_runs, served_graphs, tmp_path):
    path, model = graph_runs["gcn"]
    bundle = tmp_path / "bundle"
    done = _run(["export", str(path), "--out", str(bundle)], blocked=False)
    assert done.returncode == 0, done.stderr[-2000:]
    done = _run(["verify", "--bundle", str(bundle)])
    assert done.returncode == 0 and "4 models load (fp32, int8)" in done.stdout, done.stderr[-2000:]
    source = data_dir / "unsw-nb15" / "raw" / RAW_FILE
    flows_out, hosts_out = tmp_path / "flows.jsonl", tmp_path / "hosts.jsonl"
    done = _run(["serve", "--bundle", str(bundle), "--source", str(source), "--variant", "fp32", "--out",
                 str(flows_out), "--host-sink", f"file:{hosts_out}", "--min-flows", "3"])  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(next(line for line in done.stderr.splitlines() if line.startswith("summary: "))[9:])
    assert summary["records"] == summary["scored"] == 3000 and summary["graph"]["windows"] == 12
    assert summary["graph"]["late"] == 0 and "split_windows" not in summary["graph"]
    flows = [json.loads(line) for line in flows_out.read_text().splitlines()]
    _, _, graphs = served_graphs
    edges, nodes = _torch_outputs(model, graphs)
    by_line = {f["line"]: f["score"] for f in flows}
    table_lines = np.concatenate([g.flow_rows for g in graphs]) + 1  # the raw file has no header: line = row + 1
    scores = np.array([by_line[int(line)] for line in table_lines])
    assert np.abs(scores - 1.0 / (1.0 + np.exp(-edges.astype(np.float64)))).max() < 1e-4 + 1e-5  # JSON: 5 digits
    hosts = [json.loads(line) for line in hosts_out.read_text().splitlines()]
    isolated = {h["host"] for h in hosts if h["action"] == "isolate"}
    flagged, offset = set(), 0  # what PyTorch's host head flags, among hosts sending >= 3 flows in a window
    for g in graphs:
        sent = np.bincount(g.edge_index[0], minlength=g.n_nodes)
        flagged |= {str(g.hosts[i]) for i in range(g.n_nodes) if sent[i] >= 3 and nodes[offset + i] >= 0}
        offset += g.n_nodes
    assert isolated == flagged and {f"175.45.176.{i}" for i in range(4)} <= isolated, isolated
    assert summary["host_verdicts"].get("isolate", 0) == sum(h["action"] == "isolate" for h in hosts)


def test_serve_follows_a_growing_capture_and_closes_the_last_window_at_idle_exit(data_dir, graph_bundles, tmp_path):
    import time

    lines = (data_dir / "unsw-nb15" / "raw" / RAW_FILE).read_text().splitlines(keepends=True)
    capture = tmp_path / "growing.csv"
    capture.write_text("".join(lines[:700]))
    process = subprocess.Popen([sys.executable, "-c", BLOCKER, "serve", "--bundle", str(graph_bundles["gcn"]),
                                "--source", str(capture), "--follow", "--idle-exit", "3", "--host-sink", ""],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(1.5)
        with open(capture, "a") as handle:
            handle.write("".join(lines[700:]))
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-2000:]
    summary = json.loads(next(line for line in err.splitlines() if line.startswith("summary: "))[9:])
    assert summary["scored"] == 3000 == len(out.splitlines()) and summary["graph"]["windows"] == 12


def test_malformed_lines_are_counted_and_the_rest_windowed(data_dir, graph_bundles, tmp_path):
    import io

    from gateway.graph_engine import GraphModel
    from gateway.graph_serve import GraphVerdictService
    from gateway.sources import FlowSource

    lines = (data_dir / "unsw-nb15" / "raw" / RAW_FILE).read_text().splitlines(keepends=True)[:600]
    broken = lines[10].split(",")
    broken[3] = "99999999"  # a destination port out of range
    capture = tmp_path / "bad.csv"
    capture.write_text("".join(lines[:10]) + ",".join(broken) + "a,b,c\n" + "".join(lines[11:]))
    bundle = load_bundle(graph_bundles["gcn"])
    out = io.StringIO()
    service = GraphVerdictService(bundle, GraphModel(bundle), out, [])
    report = service.run(FlowSource(capture), 256)
    assert sum(report.malformed.values()) == 2 and report.scored == 599 == len(out.getvalue().splitlines())
    assert service.graph_summary()["windows"] == 3  # 256 + 256 + 87 flows


def test_a_live_switch_rescores_the_open_windows_with_the_new_bundle(data_dir, graph_bundles, tmp_path, caplog):
    """Issue 16: between two batches the host-graph service takes a newly installed bundle; the flows buffered in
    open windows are encoded again with its pipeline, so every window closing after the switch is the new model's
    verdict on the same window (equal to serving the file with the new bundle alone); one flow verdict per record,
    each naming its model version. A bundle with other windowing is refused and the old one kept."""
    import io
    import logging
    import os

    from gateway.graph_engine import GraphModel
    from gateway.graph_serve import GraphVerdictService
    from gateway.install import install_bundle, pack_bundle
    from gateway.serve import record_batches, serve
    from gateway.signing import generate_signing_key
    from gateway.sources import FlowSource
    from gateway.switch import BundleFollower, poll_switch
    from test_bundle_signing import make_bundle

    private, public = generate_signing_key(tmp_path / "op.key", tmp_path / "op.pub")

    def shifted(m: dict) -> None:  # the same network on another scaler: other scores on the same windows
        m.update(default_model="fp32")
        m["pipeline"]["mean"] = [x + 2 * s for x, s in zip(m["pipeline"]["mean"], m["pipeline"]["std"])]

    a = make_bundle(graph_bundles["gcn"], tmp_path / "a", private, 1, "A", edit=lambda m: m.update(default_model="fp32"))
    b = make_bundle(graph_bundles["gcn"], tmp_path / "b", private, 3, "B", edit=shifted)
    other = make_bundle(graph_bundles["gcn"], tmp_path / "w", private, 2, "W",
                        edit=lambda m: m["graph"]["settings"].update(flows=128))  # fmt: skip
    source = data_dir / "unsw-nb15" / "raw" / RAW_FILE
    reference = {}
    for name, folder in (("A", a), ("B", b)):
        out = io.StringIO()
        serve(folder, source, out=out, host_sink=None)
        reference[name] = {row["line"]: row["score"] for row in map(json.loads, out.getvalue().splitlines())}
    root = tmp_path / "root"
    install_bundle(pack_bundle(a), root, public)
    bundle = load_bundle(os.path.realpath(root / "current"))
    service = GraphVerdictService(bundle, GraphModel(bundle), io.StringIO(), [])
    service.follower = BundleFollower(root / "current", bundle, GraphModel, public, interval=0.0)
    records = FlowSource(source)
    with caplog.at_level(logging.ERROR, logger="gateway.switch"):
        for index, batch in enumerate(record_batches(records, 200, bundle.pipeline, service.report)):
            if index == 3:
                install_bundle(pack_bundle(other), root, public)
            if index == 5:
                install_bundle(pack_bundle(b), root, public)
                buffered = len(service.cutter.pending)
            poll_switch(service)
            service.process(batch)
        service.finish()
    rows = [json.loads(line) for line in service.out.getvalue().splitlines()]
    assert sorted(row["line"] for row in rows) == list(range(1, 3001))
    assert [s["to"] for s in service.report.switches] == ["B"] and buffered > 0  # flows were in open windows
    switched = service.report.switches[0]["after_scored"]
    assert service.report.versions == Counter({"A": switched, "B": 3000 - switched})
    for row in rows:
        assert abs(row["score"] - reference[row["model_version"]][row["line"]]) <= 1e-4, row
    assert sum(abs(reference["A"][n] - reference["B"][n]) > 1e-2 for n in reference["A"]) > 100
    [refusal] = service.follower.refusals
    assert "input contract differs" in refusal["reason"] and "graph.settings" in refusal["reason"]
