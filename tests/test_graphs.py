"""Host graphs (issue 15): the numpy builder on hand-made flows (one host, no edges, self loops, IPv6, repeated
flows, unsorted times, a source without addresses), real windows of real files counted independently with pandas,
splits that share no window, and node/edge features that no address reaches."""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd
import pytest

from flows.errors import FlowDataError
from flows.graphs import (
    NODE_FEATURES,
    FlowArrays,
    GraphSettings,
    HostGraph,
    assign_windows,
    build_host_graphs,
    canonical_hosts,
    chronological_split,
    host_scores_from_flows,
    leave_hosts_out,
    leave_one_site_out,
    window_keys,
)
from flows.graphs.from_table import flow_arrays, graphs_from_table, table_windows
from flows.table import FlowTable

F = {name: i for i, name in enumerate(NODE_FEATURES)}


def arrays(src, dst, times=None, labels=None, **extra) -> FlowArrays:
    n = len(src)
    return FlowArrays(src=np.array(src, dtype=object), dst=np.array(dst, dtype=object),
                      times=np.arange(n, dtype=float) if times is None else np.asarray(times, dtype=float),
                      labels=np.zeros(n, np.int64) if labels is None else np.asarray(labels), **extra)  # fmt: skip


def build(flow_arrays_: FlowArrays, **settings):
    attr = np.arange(len(flow_arrays_), dtype=np.float32).reshape(-1, 1)  # edge feature: the input position
    return build_host_graphs(flow_arrays_, attr, GraphSettings(**settings))


def counts(graph: HostGraph, feature: str) -> np.ndarray:
    return np.rint(np.expm1(graph.node_attr[:, F[feature]])).astype(int)


# --- hand-made flows --------------------------------------------------------------------------------------------

def test_one_host_talking_to_itself_is_one_node_with_self_loops_kept_as_edges():
    (graph,), report = build(arrays(["10.0.0.1"] * 3, ["10.0.0.1"] * 3, labels=[0, 1, 0],
                                    bytes_out=[10, 20, 30], bytes_in=[1, 2, 3]))  # fmt: skip
    assert graph.n_nodes == 1 and graph.n_edges == 3 and report["graphs"] == 1
    assert graph.edge_index.tolist() == [[0, 0, 0], [0, 0, 0]] and graph.hosts.tolist() == ["10.0.0.1"]
    assert counts(graph, "self_flows").tolist() == [3] and counts(graph, "out_flows").tolist() == [3]
    assert counts(graph, "in_flows").tolist() == [3] and counts(graph, "bytes_sent").tolist() == [66]
    assert graph.edge_label.tolist() == [0, 1, 0] and graph.node_label.tolist() == [1]


def test_no_flows_or_only_flows_without_addresses_give_no_graph_and_are_counted():
    graphs, report = build(arrays([], []))
    assert graphs == [] and report["edges"] == 0
    graphs, report = build(arrays(["", None, "-"], ["10.0.0.2", "10.0.0.3", ""]))
    assert graphs == [] and report["unplaced_flows"] == 3
    graphs, report = build(arrays(["10.0.0.1", "10.0.0.1", ""], ["10.0.0.2", "10.0.0.3", "10.0.0.4"],
                                  times=[0.0, np.nan, 1.0]))  # fmt: skip
    assert [g.n_edges for g in graphs] == [1] and report["unplaced_flows"] == 2
    empty = HostGraph(window=0, start=0.0, end=0.0, site="", n_nodes=0, edge_index=np.zeros((2, 0), np.int64),
                      edge_attr=np.zeros((0, 4), np.float32), node_attr=np.zeros((0, len(NODE_FEATURES)), np.float32),
                      edge_label=np.zeros(0, np.int64), node_label=np.zeros(0, np.int64),
                      hosts=np.zeros(0, object), flow_rows=np.zeros(0, np.int64))  # fmt: skip
    assert empty.n_edges == 0 and host_scores_from_flows([empty], np.zeros(0)).shape == (0,)


def test_repeated_flows_are_parallel_edges_and_distinct_counts_count_once():
    flows = arrays(["a", "a", "a", "b"], ["b", "b", "b", "a"], labels=[0, 0, 1, 0],
                   src_port=[1000, 1001, 1000, 80], dst_port=[80, 80, 80, 1000])  # fmt: skip
    (graph,), _ = build(flows)
    assert graph.n_nodes == 2 and graph.edge_index.tolist() == [[0, 0, 0, 1], [1, 1, 1, 0]]
    assert counts(graph, "out_flows").tolist() == [3, 1] and counts(graph, "out_peers").tolist() == [1, 1]
    assert counts(graph, "out_dst_ports").tolist() == [1, 1] and counts(graph, "out_src_ports").tolist() == [2, 1]
    assert counts(graph, "in_dst_ports").tolist() == [1, 1] and counts(graph, "in_peers").tolist() == [1, 1]
    assert graph.node_label.tolist() == [1, 0]  # "a" originates the attack flow; "b" only receives it


def test_ipv6_addresses_are_one_host_whatever_their_spelling_and_ipv4_mapped_is_ipv4():
    spelled = ["2001:DB8::1", "2001:db8:0:0:0:0:0:1", "fe80::1%eth0", "::ffff:10.0.0.7", " 10.0.0.7 "]
    assert canonical_hosts(spelled).tolist() == ["2001:db8::1", "2001:db8::1", "fe80::1", "10.0.0.7", "10.0.0.7"]
    (graph,), _ = build(arrays(["2001:DB8::1", "2001:db8::1", "::ffff:10.0.0.7"],
                               ["fe80::1%eth0", "10.0.0.7", "2001:db8:0::1"]))  # fmt: skip
    assert graph.n_nodes == 3 and graph.hosts.tolist() == ["2001:db8::1", "fe80::1", "10.0.0.7"]
    assert graph.edge_index.tolist() == [[0, 0, 2], [1, 2, 0]]


def test_unsorted_times_are_sorted_and_windows_follow_the_settings():
    flows = arrays(["a", "b", "c", "d", "e"], ["x"] * 5, times=[50.0, 10.0, 130.0, 70.0, 10.0])
    graphs, _ = build(flows, window="flows", flows=2)
    assert [g.flow_rows.tolist() for g in graphs] == [[1, 4], [0, 3], [2]]  # time order, ties by position
    assert [g.edge_attr[:, 0].tolist() for g in graphs] == [[1.0, 4.0], [0.0, 3.0], [2.0]]
    assert [(g.start, g.end) for g in graphs] == [(10.0, 10.0), (50.0, 70.0), (130.0, 130.0)]
    graphs, _ = build(flows, window="seconds", seconds=60.0)
    assert [(g.window, g.start, g.end, g.flow_rows.tolist()) for g in graphs] == [
        (0, 0.0, 60.0, [1, 4, 0]), (1, 60.0, 120.0, [3]), (2, 120.0, 180.0, [2])]
    graphs, report = build(flows, window="seconds", seconds=60.0, min_flows=2)
    assert [g.window for g in graphs] == [0] and report["windows_below_min_flows"] == 2
    window, _ = assign_windows(flows.times, flows.valid, GraphSettings(window="seconds", seconds=60.0, min_flows=2))
    assert window.tolist() == [0, 0, -1, -1, 0]


@pytest.mark.parametrize("settings, message", [
    ({"window": "hours"}, "graph window must be one of"), ({"flows": 0}, "flows per window"),
    ({"seconds": 0}, "seconds must be > 0"), ({"min_flows": 0}, "min_flows"),
])  # fmt: skip
def test_bad_window_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        GraphSettings(**settings)


def test_a_source_without_addresses_fails_with_one_clear_line(unsw_table):
    with pytest.raises(FlowDataError) as err:
        flow_arrays(unsw_table.subset(list(range(10))))
    text = str(err.value)
    assert "\n" not in text and "host graphs need host addresses" in text and "column 'src_ip'" in text
    assert "partitioned UNSW-NB15" in text


# --- real files -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def raw_unsw(data_dir):
    from flows.loader import load_file
    from flows.pipeline import FeaturePipeline

    table = load_file("unsw-nb15-raw", data_dir / "unsw-nb15" / "raw" / "UNSW-NB15_1.first3000.csv")
    return table, FeaturePipeline().fit(table).state_


def test_the_first_window_of_raw_unsw_nb15_as_counted_by_hand_and_with_pandas(raw_unsw):
    table, pipeline = raw_unsw
    graphs, report = graphs_from_table(table, pipeline, GraphSettings(flows=20))
    assert report["graphs"] == 150 and sum(g.n_edges for g in graphs) == 3000
    first = graphs[0]
    # by hand from the 20 earliest flows (times tie: file order): 19 hosts, 20 flows, two of them a self loop of
    # 192.168.241.243, 15 distinct (source, destination) pairs, one attack flow from 175.45.176.0
    assert (first.n_nodes, first.n_edges) == (19, 20)
    assert int((first.edge_index[0] == first.edge_index[1]).sum()) == 2
    assert len(set(map(tuple, first.edge_index.T.tolist()))) == 15
    assert first.hosts[first.node_label == 1].tolist() == ["175.45.176.0"]
    frame = table.frame.sort_values("start_time", kind="stable").head(20)
    assert first.flow_rows.tolist() == frame.index.tolist()
    assert first.n_nodes == len(set(frame.src_ip) | set(frame.dst_ip))
    np.testing.assert_array_equal(first.edge_attr, pipeline.transform(frame))
    node = {host: i for i, host in enumerate(first.hosts)}
    by_src = frame.groupby("src_ip")
    for host, row in by_src.agg(n=("dst_ip", "size"), peers=("dst_ip", "nunique"), attacks=("label", "sum"),
                                 ports=("dst_port", "nunique")).iterrows():  # fmt: skip
        i = node[host]
        assert (counts(first, "out_flows")[i], counts(first, "out_peers")[i]) == (row.n, row.peers), host
        assert counts(first, "out_dst_ports")[i] == row.ports and first.node_label[i] == (row.attacks > 0)
    sent = by_src.sbytes.sum().add(frame.groupby("dst_ip").dbytes.sum(), fill_value=0)
    for host, value in sent.items():
        assert first.node_attr[node[host], F["bytes_sent"]] == pytest.approx(np.log1p(value), rel=1e-6)


@pytest.mark.parametrize("source, file, seconds", [
    ("iot-23", "CTU-IoT-Malware-Capture-34-1.conn.log.labeled", 3600.0),
    ("iot-23", "csv/CTU-Malware-Capture-8-1-labeled.csv", 3600.0),
    ("stratosphere", "008-zeek-mixed.conn.log.labeled", 3600.0),
])  # fmt: skip
def test_zeek_windows_in_seconds_match_pandas_counts(data_dir, source, file, seconds):
    from flows.loader import load_dataset

    table = load_dataset(source, data_dir, file=file)
    frame = table.frame.assign(slot=np.floor(table.frame.start_time / seconds).astype(np.int64))
    arrays_ = flow_arrays(table)
    graphs, report = build_host_graphs(arrays_, np.zeros((len(table), 1), np.float32),
                                       GraphSettings(window="seconds", seconds=seconds))  # fmt: skip
    expected = frame.groupby("slot").apply(lambda w: pd.Series(
        {"nodes": len(set(w.src_ip) | set(w.dst_ip)), "edges": len(w),
         "bad_hosts": w.loc[w.label == 1, "src_ip"].nunique()}), include_groups=False)  # fmt: skip
    got = pd.DataFrame([{"slot": g.window, "nodes": g.n_nodes, "edges": g.n_edges,
                         "bad_hosts": int(g.node_label.sum())} for g in graphs]).set_index("slot")  # fmt: skip
    pd.testing.assert_frame_equal(got, expected.astype(got.dtypes.to_dict()), check_names=False)
    assert report["edges"] == len(table)
    for g in graphs:  # every window's flows are time-sorted and inside the window
        times = arrays_.times[g.flow_rows]
        assert np.all(np.diff(times) >= 0) and times.min() >= g.start and times.max() < g.end


def test_known_shapes_of_the_data(data_dir):
    from flows.loader import load_dataset

    settings = GraphSettings(flows=500)
    iot = load_dataset("iot-23", data_dir, file="CTU-IoT-Malware-Capture-34-1.conn.log.labeled")
    graphs, _ = build_host_graphs(flow_arrays(iot), np.zeros((len(iot), 1), np.float32), settings)
    device = [int(counts(g, "out_flows")[list(g.hosts).index("192.168.1.195")]) for g in graphs]
    assert sum(device) == 23144  # one device originates every flow but one
    strat = load_dataset("stratosphere", data_dir, file="008-zeek-mixed.conn.log.labeled")
    graphs, _ = build_host_graphs(flow_arrays(strat), np.zeros((len(strat), 1), np.float32), settings)
    g = graphs[0]
    victim = list(g.hosts).index("147.32.81.167")
    attackers = g.node_label == 1
    assert attackers.sum() > 100 and g.node_label[victim] == 0 and counts(g, "in_peers")[victim] >= attackers.sum()
    assert counts(g, "out_flows")[attackers].mean() < 4  # many outside hosts, a few flows each
    raw = load_dataset("unsw-nb15-raw", data_dir, file="UNSW-NB15_1.first20000.csv")
    graphs, _ = build_host_graphs(flow_arrays(raw), np.zeros((len(raw), 1), np.float32), settings)
    verdicts = {(g.window, h): int(lab) for g in graphs for h, lab in zip(g.hosts, g.node_label)
                if str(h).startswith("175.45.176.")}  # fmt: skip
    assert {h for _, h in verdicts} == {f"175.45.176.{i}" for i in range(4)}
    assert 0 in verdicts.values() and 1 in verdicts.values()  # attackers are benign in windows where they only
    labels = raw.frame.label.to_numpy()                         # send benign flows
    assert sum(int(g.node_label.sum()) for g in graphs) == sum(
        len(set(raw.frame.src_ip.to_numpy()[g.flow_rows][labels[g.flow_rows] == 1])) for g in graphs)


# --- splits -----------------------------------------------------------------------------------------------------

def test_the_chronological_split_shares_no_window_and_keeps_time_order(raw_unsw):
    table, pipeline = raw_unsw
    graphs, _ = graphs_from_table(table, pipeline, GraphSettings(flows=100))
    starts, sites = window_keys(graphs)
    split = chronological_split(starts, 0.2, 0.1, sites)
    assert split.sizes() == {"train": 21, "val": 3, "test": 6}
    assert not set(split.train) & set(split.test) and not set(split.val) & (set(split.train) | set(split.test))
    assert sorted([*split.train, *split.val, *split.test]) == list(range(30))
    assert starts[split.train].max() <= starts[split.val].min() <= starts[split.val].max() <= starts[split.test].min()
    rows = [set(np.concatenate([graphs[i].flow_rows for i in side])) for side in (split.train, split.test)]
    assert not rows[0] & rows[1]
    window, _ = table_windows(table, GraphSettings(flows=100))  # the windows before any pipeline is fitted
    assert all(set(window[g.flow_rows]) == {g.window} for g in graphs)
    with pytest.raises(ValueError, match="cannot give 1 validation and 2 test window"):
        chronological_split(starts[:3], 0.5, 0.2)


def test_leave_one_site_out_and_leave_hosts_out():
    starts = np.array([5.0, 1.0, 2.0, 3.0, 4.0, 0.0, 1.0])
    sites = np.array(["a", "a", "a", "b", "b", "b", "c"], dtype=object)
    split = leave_one_site_out(starts, sites, "b", val_fraction=0.3)
    assert split.test.tolist() == [3, 4, 5] and split.val.tolist() == [0] and split.train.tolist() == [1, 2, 6]
    with pytest.raises(ValueError, match="site 'd' has no window"):
        leave_one_site_out(starts, sites, "d")
    src = np.array(["h1"] * 6 + ["h2"] * 3 + ["h3"] * 1, dtype=object)
    train, test = leave_hosts_out(src, 0.25, seed=0)
    assert sorted([*train, *test]) == list(range(10)) and not set(src[train]) & set(src[test])
    assert leave_hosts_out(src, 0.25, seed=0)[1].tolist() == test.tolist()
    train, test = leave_hosts_out(np.array(["big"] * 9 + ["small"], dtype=object), 0.2, seed=1)
    assert len(train) and len(test)  # both sides keep a host


# --- no address reaches a feature -------------------------------------------------------------------------------

def _random_addresses(n: int, rng: np.random.Generator) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        if rng.random() < 0.5:
            out.add(str(ipaddress.IPv4Address(int(rng.integers(1, 2**32 - 1)))))
        else:
            out.add(str(ipaddress.IPv6Address(int(rng.integers(1, 2**62)) << 64 | int(rng.integers(1, 2**62)))))
    return list(out)


def remapped(table: FlowTable, seed: int) -> tuple[FlowTable, dict]:
    """``table`` with every address replaced through a random bijection (IPv4 and IPv6 mixed)."""
    rng = np.random.default_rng(seed)
    hosts = sorted(set(table.frame.src_ip) | set(table.frame.dst_ip))
    mapping = dict(zip(hosts, _random_addresses(len(hosts), rng)))
    frame = table.frame.assign(src_ip=table.frame.src_ip.map(mapping), dst_ip=table.frame.dst_ip.map(mapping))
    return FlowTable(frame, list(table.numeric_features), list(table.categorical_features), table.source,
                     table.path), mapping  # fmt: skip


@pytest.mark.parametrize("window", ["flows", "seconds"])
def test_remapping_every_address_changes_no_node_or_edge_feature(raw_unsw, window):
    table, pipeline = raw_unsw
    settings = GraphSettings(window=window, flows=250, seconds=20.0)
    graphs, _ = graphs_from_table(table, pipeline, settings)
    other, mapping = remapped(table, seed=7)
    again, _ = graphs_from_table(other, pipeline, settings)
    assert len(graphs) == len(again) > 5
    for g, h in zip(graphs, again):
        assert g.same_as(h, with_hosts=False)
        assert [mapping[a] for a in g.hosts] == [canonical_hosts([b])[0] for b in h.hosts]


def test_flow_scores_become_host_scores_of_the_originators():
    (graph,), _ = build(arrays(["a", "a", "b", "c"], ["b", "c", "a", "c"]))
    scores = host_scores_from_flows([graph, graph], np.array([0.2, 0.9, 0.4, 0.1, 0.0, 0.0, 0.3, 0.5]))
    assert scores.tolist() == [0.9, 0.4, 0.1, 0.0, 0.3, 0.5]
    with pytest.raises(ValueError, match="expected 8 flow scores"):
        host_scores_from_flows([graph, graph], np.zeros(3))
