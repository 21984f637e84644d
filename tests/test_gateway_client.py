"""A gateway's ClientApp (issue 16, items 1, 3 and 4): the node config names its captures and evidence, only
labelled flows train, a run config that asks for an attack is refused in every handler, and federated
evaluation returns the confusion counts. The handlers are called directly with a Context, as Flower does.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_gateway_labels import CAPTURE, json_lines, live_copy

from flows.errors import ConfigError

HONEYPOT = "iot-23/CTU-Honeypot-Capture-4-1.conn.log.labeled"  # 452 flows, all benign


def spec_of(data_dir):
    import dataclasses

    from conf.schema import RunSpec

    spec = RunSpec()
    spec.dataset = dataclasses.replace(spec.dataset, data_dir=str(data_dir))
    return spec


@pytest.fixture
def live(data_dir, tmp_path) -> Path:
    return live_copy(data_dir / CAPTURE, tmp_path / "conn.log")


def flows_of(spec, node_config: dict):
    from fl_client.data import local_table

    partition_id, table = local_table(spec, node_config)
    assert partition_id == -1
    return table


# ---- data-path ----------------------------------------------------------------------------------------------


def test_data_path_names_one_file_several_files_or_a_folder(data_dir, tmp_path, caplog):
    spec = spec_of(data_dir)
    one, other = data_dir / HONEYPOT, data_dir / CAPTURE
    assert len(flows_of(spec, {"data-path": str(one), "dataset": "iot-23"})) == 452
    both = flows_of(spec, {"data-path": f"{one} , {other}", "dataset": "iot-23"})
    assert len(both) == 452 + 1374 and both.frame.src_ip.iloc[0] == "192.168.1.132"  # in the order given
    folder = tmp_path / "zeek"
    folder.mkdir()
    shutil.copy(other, folder / "conn.10-00.log")
    shutil.copy(one, folder / "conn.09-00.log")
    (folder / "dns.log").write_text("#separator \\x09\n#path\tdns\n#fields\tts\tuid\tquery\n1.0\tCx\ta.example\n")
    (folder / "conn.08-00.log.gz").write_bytes(gzip.compress(one.read_bytes()))
    (folder / ".conn.log.swp").write_text("junk")
    with caplog.at_level(logging.WARNING, logger="flwr.botdefender.client"):
        table = flows_of(spec, {"data-path": str(folder), "dataset": "iot-23"})
    assert len(table) == 452 + 1374 and table.frame.src_ip.iloc[0] == "192.168.1.132"  # sorted: 09-00 first
    assert "conn.08-00.log.gz skipped (gzip-compressed)" in caplog.text
    assert "dns.log skipped (not a capture of this dataset)" in caplog.text


@pytest.mark.parametrize("setup, node, message", [
    ("empty", {}, r"node config data-path: folder .*empty is empty; expected iot-23 capture files"),
    ("only-dns", {}, r"node config data-path: folder .*only-dns holds no iot-23 capture file \(dns.log: not a "
                     r"capture of this dataset\)"),
    ("missing", {}, r"node config data-path: .*missing.log: file not found"),
    ("garbage", {}, r"node config data-path: .*garbage.log:1: not a Zeek conn log"),
    ("ok", {"dataset": "zeek"}, r"node config dataset: unknown reader 'zeek'; one of unsw-nb15, unsw-nb15-raw, "
                                r"iot-23, stratosphere"),
    ("ok", {"labels": "MISSING"}, r"node config labels: .*absent.jsonl: file not found"),
    ("ok", {"unlabelled": "yes"}, r"node config unlabelled: 'yes' is not one of drop, benign"),
    ("ok", {"bad-records": "ignore"}, r"node config bad-records: 'ignore' is not one of skip, error"),
    ("ok", {"labels": "BAD", "bad-records": "error"}, r"node config labels: .*bad.jsonl:1: bad evidence "
                                                      r"\(malformed_json\)"),
])  # fmt: skip
def test_a_bad_node_config_is_one_config_error_naming_the_key(data_dir, tmp_path, setup, node, message):
    path = tmp_path / setup
    if setup in ("empty", "only-dns"):
        path.mkdir()
        if setup == "only-dns":
            (path / "dns.log").write_text("#separator \\x09\n#fields\tts\tuid\tquery\n1.0\tCx\ta.example\n")
    elif setup == "missing":
        path = tmp_path / "missing.log"
    elif setup == "garbage":
        path = tmp_path / "garbage.log"
        path.write_text("hello, world\n")
    else:
        path = data_dir / HONEYPOT
    node = dict(node)
    if node.get("labels") == "MISSING":
        node["labels"] = str(tmp_path / "absent.jsonl")
    if node.get("labels") == "BAD":
        node["labels"] = str(json_lines(tmp_path / "bad.jsonl", ["{oops"]))
    with pytest.raises(ConfigError, match=message) as err:
        flows_of(spec_of(data_dir), {"data-path": str(path), "dataset": "iot-23", **node})
    assert "\n" not in str(err.value)


# ---- labels ---------------------------------------------------------------------------------------------------


def test_a_live_capture_without_evidence_has_no_training_rows_and_says_so(data_dir, live):
    with pytest.raises(ConfigError, match=r"node config data-path: none of the 1374 flows has a label .* give "
                                          r"evidence with labels=FILE\[,FILE\], a labelled capture, or "
                                          r"unlabelled=benign"):  # fmt: skip
        flows_of(spec_of(data_dir), {"data-path": str(live), "dataset": "iot-23"})


def test_only_flows_covered_by_evidence_reach_training_and_benign_is_an_explicit_switch(data_dir, live, tmp_path,
                                                                                       caplog):  # fmt: skip
    from fl_client.gateway_data import gateway_data
    from fl_client.matrices import client_matrices
    from flows.pipeline import FeaturePipeline, PipelineConfig

    spec = spec_of(data_dir)
    decisions = json_lines(tmp_path / "decisions.jsonl", [
        {"host": "192.168.2.1", "label": "malicious", "by": "alice"},
        {"host": "169.254.15.115", "label": "benign", "by": "alice"}])  # fmt: skip
    node = {"data-path": str(live), "dataset": "iot-23", "labels": str(decisions)}
    table = flows_of(spec, node)
    assert len(table) == 102 and set(table.frame.src_ip) == {"192.168.2.1", "169.254.15.115"}
    assert table.frame.groupby("src_ip").label.unique().map(list).to_dict() == {"192.168.2.1": [1],
                                                                                "169.254.15.115": [0]}
    counts = gateway_data(node, spec.dataset.name).counts
    assert (counts.malicious, counts.benign, counts.unlabelled_dropped, counts.unlabelled_as_benign) == (51, 51,
                                                                                                         1272, 0)
    state = FeaturePipeline(PipelineConfig()).fit(table).state_.to_json()
    m = client_matrices(spec, node, state)
    assert m.n_real + len(m.y_val) == 102 and int(m.y_fit.sum() + m.y_val.sum()) == 51  # the rows that train
    with caplog.at_level(logging.WARNING, logger="flwr.botdefender.client"):
        everything = flows_of(spec, {**node, "unlabelled": "benign"})
    assert len(everything) == 1374 and int(everything.frame.label.sum()) == 51
    assert "unlabelled=benign: flows without a label or evidence TRAIN AS BENIGN" in caplog.text


def test_new_evidence_is_read_when_its_file_changes(data_dir, live, tmp_path):
    spec = spec_of(data_dir)
    decisions = json_lines(tmp_path / "decisions.jsonl", [{"host": "192.168.2.1", "label": "malicious"}])
    node = {"data-path": str(live), "dataset": "iot-23", "labels": str(tmp_path)}  # a folder of evidence files
    assert len(flows_of(spec, node)) == 51
    with decisions.open("a") as handle:
        handle.write(json.dumps({"host": "169.254.15.115", "label": "benign"}) + "\n")
    assert len(flows_of(spec, node)) == 102


# ---- the handlers ------------------------------------------------------------------------------------------------


def context_of(data_dir, node_config: dict, **run_config):
    from flwr.app import Context, RecordDict

    from conf.schema import to_run_config

    config = {**to_run_config(spec_of(data_dir)), "simulation.val-fraction": 0.2, **run_config}
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=config)


def messages(table, family: str = "cnn_lstm"):
    """A query, a train and an evaluate message as the server sends them, for a model of ``family``."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

    from flows.pipeline import FeaturePipeline, PipelineConfig
    from models.checkpoint import ModelSpec

    state = FeaturePipeline(PipelineConfig()).fit(table).state_
    model_spec = ModelSpec(family, state.n_outputs, {"conv_channels": 4, "lstm_hidden": 8, "dense": 8, "pool": 8})
    torch.manual_seed(0)
    arrays = ArrayRecord(model_spec.build().state_dict())
    config = ConfigRecord({"pipeline-state": state.to_json(), "model-spec": model_spec.to_json(), "server-round": 1})
    return {
        "query": Message(RecordDict({"config": ConfigRecord({"log-transform": True})}), dst_node_id=7,
                         message_type=MessageType.QUERY),
        "train": Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=7,
                         message_type=MessageType.TRAIN),
        "evaluate": Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=7,
                            message_type=MessageType.EVALUATE),
    }  # fmt: skip


def test_a_gateway_refuses_a_run_that_asks_it_to_attack_in_every_handler(data_dir, task_identity):
    import fl_client.app as client

    node = {"data-path": str(data_dir / HONEYPOT), "dataset": "iot-23"}
    msgs = messages(flows_of(spec_of(data_dir), node))
    for attack in ("label_flip", "sign_flip", "absent"):
        context = context_of(data_dir, node, **{"attack.name": attack, "attack.fraction": 0.2})
        for name, handler in (("query", client.query), ("train", client.train), ("evaluate", client.evaluate)):
            with pytest.raises(ConfigError) as err:
                handler(msgs[name], context)
            assert str(err.value) == (f"this gateway refuses the run: attack.name='{attack}' asks for a simulated "
                                      "attack, which runs in simulation only (nodes with a partition-id); set "
                                      "attack.name=none")  # fmt: skip
    # Flower's SuperNode runtime turns it into the error reply the server logs: "<class '...ConfigError'>:<'...'>"
    with pytest.raises(ConfigError, match="refuses the run"):
        client.app(msgs["query"], context_of(data_dir, node, **{"attack.name": "backdoor"}))
    simulated = context_of(data_dir, {"partition-id": 0, "num-partitions": 3}, **{"attack.name": "label_flip"})
    assert client._spec(simulated).attack.name == "label_flip"  # simulation keeps its attacks


def test_a_gateway_answers_query_train_and_evaluate_with_label_counts_and_confusion_counts(data_dir, live, tmp_path,
                                                                                          task_identity):  # fmt: skip
    import fl_client.app as client

    decisions = json_lines(tmp_path / "decisions.jsonl", [
        {"host": "192.168.2.3", "label": "benign", "by": "alice"},
        {"host": "192.168.2.1", "label": "malicious", "by": "alice"}])  # fmt: skip
    node = {"data-path": str(live), "dataset": "iot-23", "labels": str(decisions)}
    table = flows_of(spec_of(data_dir), node)
    msgs, context = messages(table), context_of(data_dir, node)
    reply = client.query(msgs["query"], context)
    labels = {k: v for k, v in reply.content["node"].items() if k.startswith("labels-")}
    assert labels["labels-flows"] == 1374 and labels["labels-evidence-labelled"] == len(table) == 979 + 51
    assert (labels["labels-malicious"], labels["labels-benign"], labels["labels-unlabelled-dropped"]) == (51, 979,
                                                                                                         344)
    assert reply.content["stats"]["n"] == len(table)
    trained = client.train(msgs["train"], context).content["metrics"]
    evaluated = client.evaluate(msgs["evaluate"], context).content["metrics"]
    n_val = evaluated["num-examples"]
    assert trained["num-examples"] + n_val == len(table) and n_val == round(0.2 * len(table))
    counts = [evaluated[k] for k in ("eval_tp", "eval_fp", "eval_fn", "eval_tn")]
    assert all(isinstance(c, int) for c in counts) and sum(counts) == n_val
    assert np.isclose(evaluated["eval_accuracy"], (counts[0] + counts[3]) / n_val)  # threshold 0.5 = logit 0
    assert evaluated["eval_tp"] + evaluated["eval_fn"] > 0  # validation holds malicious flows
