"""The host-graph model family (issue 15): registered by discovery, both variants learn on real windows, their
verdicts do not change when every address is remapped, checkpoints round trip, and the federated interface
(train_local / evaluate_local / predict_logits) works on windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flows.graphs import HOST_GRAPHS, GraphSettings, chronological_split, select, window_keys
from flows.graphs.from_table import graphs_from_table
from models.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from models.registry import family_names, get_family
from test_graphs import remapped

FAMILY = "gcn"
SMALL = {"hidden": 16, "head_hidden": 16, "layers": 2}
SETTINGS = GraphSettings(flows=200)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def windows(data_dir):
    """A real capture's windows (the first 6,000 flows of raw UNSW-NB15), split in time order, and the pipeline
    fitted on the training windows' flows."""
    from flows.loader import load_file
    from flows.pipeline import FeaturePipeline

    table = load_file("unsw-nb15-raw", data_dir / "unsw-nb15" / "raw" / "UNSW-NB15_1.first20000.csv")
    table = table.subset(list(np.argsort(table.frame.start_time.to_numpy(), kind="stable")[:6000]))
    pipeline = FeaturePipeline().fit(table).state_  # refitted on the training windows below
    graphs, _ = graphs_from_table(table, pipeline, SETTINGS)
    split = chronological_split(*window_keys(graphs)[:1], 0.2, 0.15)
    train_rows = np.concatenate([graphs[i].flow_rows for i in split.train])
    pipeline = FeaturePipeline().fit(table.subset(list(np.sort(train_rows)))).state_
    graphs, _ = graphs_from_table(table, pipeline, SETTINGS)
    return table, pipeline, [select(graphs, getattr(split, side)) for side in ("train", "val", "test")]


def test_the_family_is_found_by_discovery_and_names_its_input():
    assert FAMILY in family_names()
    family = get_family(FAMILY)
    assert family.gateway_input == HOST_GRAPHS and family.modules == ("models.gcn",)
    assert family.default_params()["variant"] == "gcn"
    from models.baselines import make_detector

    detector = make_detector(FAMILY, seed=0, epochs=3)
    assert type(detector) is family.detector_class() and detector.input_kind == HOST_GRAPHS
    assert detector.params["epochs"] == 3 and detector.params["lr"] == 0.01 and detector.params["patience"] == 10
    assert make_detector(FAMILY).params["epochs"] == 100
    with pytest.raises(ValueError, match=r"unknown gcn parameter\(s\) \['width'\]"):
        make_detector(FAMILY, width=3)
    with pytest.raises(ValueError, match="variant must be one of"):
        family.build(16, {"variant": "gat"})


@pytest.mark.parametrize("variant", ["gcn", "egraphsage"])
def test_both_variants_learn_flows_and_hosts_on_real_windows(windows, variant):
    from models.evaluation import detection_metrics

    _, _, (train, val, test) = windows
    detector = get_family(FAMILY).detector_class()(seed=0, variant=variant, epochs=20, patience=20, progress=False)
    detector.fit(train, np.concatenate([g.edge_label for g in train]), val, np.concatenate([g.edge_label for g in val]))
    assert detector.history_.epochs_run == 20
    flows = detection_metrics(np.concatenate([g.edge_label for g in test]), detector.predict_proba(test))
    hosts = detection_metrics(np.concatenate([g.node_label for g in test]), detector.predict_host_proba(test))
    assert flows["roc_auc"] > 0.9 and flows["recall"] > 0.5, flows
    assert hosts["f1"] > 0.8, hosts  # the 175.45.176.0/24 attackers, window by window


def test_remapping_every_address_gives_identical_predictions(windows):
    table, pipeline, (train, _, test) = windows
    family = get_family(FAMILY)
    for variant in ("gcn", "egraphsage"):
        torch.manual_seed(0)
        model = family.build(pipeline.n_outputs, {**SMALL, "variant": variant})
        family.train_local(model, train, np.concatenate([g.edge_label for g in train]), epochs=1, batch_size=4,
                           lr=0.01, seed=0)  # fmt: skip
        graphs, _ = graphs_from_table(table, pipeline, SETTINGS)
        other, _ = remapped(table, seed=3)
        graphs_remapped, _ = graphs_from_table(other, pipeline, SETTINGS)
        assert not np.array_equal(graphs[0].hosts, graphs_remapped[0].hosts)
        np.testing.assert_array_equal(family.predict_logits(model, graphs),
                                      family.predict_logits(model, graphs_remapped))  # fmt: skip
        np.testing.assert_array_equal(family.predict_host_logits(model, graphs),
                                      family.predict_host_logits(model, graphs_remapped))  # fmt: skip


def test_the_federated_interface_on_windows(windows):
    table, pipeline, (train, val, _) = windows
    family = get_family(FAMILY)
    X, y = family.batches(table, pipeline, SETTINGS)
    assert sum(g.n_edges for g in X) == len(y) == len(table) and y.dtype == np.int64
    assert np.array_equal(np.sort(np.concatenate([g.flow_rows for g in X])), np.arange(len(table)))
    y_train, y_val = (np.concatenate([g.edge_label for g in side]) for side in (train, val))
    torch.manual_seed(0)
    model = family.build(pipeline.n_outputs, SMALL)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    before, _ = family.evaluate_local(model, val, y_val)
    loss = family.train_local(model, train, y_train, epochs=3, batch_size=4, lr=0.01, seed=1)
    after, accuracy = family.evaluate_local(model, val, y_val)
    assert np.isfinite(loss) and after < before and accuracy > 0.85
    logits = family.predict_logits(model, val)
    assert logits.shape == (len(y_val),) and logits.dtype == np.float32
    again = family.build(pipeline.n_outputs, SMALL)
    again.load_state_dict(start)
    family.train_local(again, train, y_train, epochs=3, batch_size=4, lr=0.01, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="expected .* flow labels"):
        family.train_local(model, train, y_train[:-1], epochs=1, batch_size=4, lr=0.01, seed=0)
    with pytest.raises(ValueError, match="local-epochs must be >= 1"):
        family.train_local(model, train, y_train, epochs=0, batch_size=4, lr=0.01, seed=0)


def test_a_window_without_edges_and_a_lone_host_go_through_the_network(windows):
    _, pipeline, (train, _, _) = windows
    family = get_family(FAMILY)
    from flows.graphs import HostGraph

    lone = train[0]

    one = HostGraph(window=0, start=0.0, end=0.0, site="", n_nodes=1, edge_index=np.zeros((2, 2), np.int64),
                    edge_attr=lone.edge_attr[:2], node_attr=lone.node_attr[:1], edge_label=np.array([0, 1]),
                    node_label=np.array([1]), hosts=np.array(["h"], object), flow_rows=np.array([0, 1]))  # fmt: skip
    empty = HostGraph(window=1, start=0.0, end=0.0, site="", n_nodes=1, edge_index=np.zeros((2, 0), np.int64),
                      edge_attr=lone.edge_attr[:0], node_attr=lone.node_attr[:1], edge_label=np.zeros(0, np.int64),
                      node_label=np.zeros(1, np.int64), hosts=np.array(["h"], object),
                      flow_rows=np.zeros(0, np.int64))  # fmt: skip
    for variant in ("gcn", "egraphsage"):
        model = family.build(pipeline.n_outputs, {**SMALL, "variant": variant})
        assert family.predict_logits(model, [one, empty]).shape == (2,)
        assert family.predict_host_logits(model, [one, empty]).shape == (2,)
        assert np.isfinite(family.train_local(model, [one, empty], np.array([0, 1]), epochs=1, batch_size=2,
                                              lr=0.01, seed=0))  # fmt: skip


def test_a_checkpoint_round_trips(windows, tmp_path):
    _, pipeline, (_, val, _) = windows
    spec = ModelSpec(FAMILY, pipeline.n_outputs, {**SMALL, "variant": "egraphsage"})
    torch.manual_seed(0)
    model = spec.build().eval()
    save_checkpoint(tmp_path / "final.pt", spec, model.state_dict(), pipeline.to_json(), 3)
    loaded = load_checkpoint(tmp_path / "final.pt")
    assert loaded.spec == spec and loaded.family is get_family(FAMILY) and loaded.round == 3
    family = get_family(FAMILY)
    np.testing.assert_array_equal(family.predict_logits(loaded.model(), val), family.predict_logits(model, val))
