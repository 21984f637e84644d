"""Labels on a gateway (issue 16, item 3): live captures carry no verdicts; evidence (operator decisions, Zeek
notices, Suricata alerts) labels the flows it covers, and unlabelled flows never train as benign by default.

The live capture is IoT-23's honeypot capture 5-1 with its label fields cut off (what a gateway's Zeek writes);
the evidence names real flows of it (uids, addresses, ports, times).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from flows.errors import FlowDataError
from flows.labels import apply_evidence, read_evidence, read_evidence_files
from flows.labels.evidence import NOTICE_WINDOW
from flows.readers.iot23 import read_zeek_conn_log

CAPTURE = "iot-23/CTU-Honeypot-Capture-5-1.conn.log.labeled"
NOTICE_FIELDS = ("ts uid id.orig_h id.orig_p id.resp_h id.resp_p fuid file_mime_type file_desc proto note msg sub "
                 "src dst p n peer_descr actions suppress_for").split()  # fmt: skip


def live_copy(source: Path, target: Path) -> Path:
    """``source`` without its label and detailed-label fields: a live Zeek conn.log."""
    out = []
    for line in source.read_text().splitlines():
        if line.startswith(("#fields", "#types")):
            out.append("\t".join(re.split(r"[ \t]+", line)[:-2]))
        elif line.startswith("#close"):
            out.append(line.split("   ")[0])
        elif line.startswith("#") or not line.strip():
            out.append(line)
        else:
            out.append(line.rsplit("   ", 2)[0])
    target.write_text("\n".join(out) + "\n")
    return target


@pytest.fixture(scope="module")
def live(data_dir, tmp_path_factory) -> Path:
    return live_copy(data_dir / CAPTURE, tmp_path_factory.mktemp("live") / "conn.log")


@pytest.fixture(scope="module")
def live_table(live):
    return read_zeek_conn_log(live, keep_unlabelled=True)


def notice_log(path: Path, rows: list[dict]) -> Path:
    head = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", "#path\tnotice",
            "#fields\t" + "\t".join(NOTICE_FIELDS), "#types\t" + "\t".join("string" for _ in NOTICE_FIELDS)]
    body = ["\t".join(str(row.get(f, "-")) for f in NOTICE_FIELDS) for row in rows]
    path.write_text("\n".join(head + body + ["#close\t2019-01-03-20-02-05"]) + "\n")
    return path


def json_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")  # Suricata's format


# ---- the live capture ---------------------------------------------------------------------------------


def test_a_live_conn_log_reads_with_labels_unknown_and_the_training_reader_still_refuses_it(data_dir, live,
                                                                                           live_table):  # fmt: skip
    labelled = read_zeek_conn_log(data_dir / CAPTURE)
    assert len(live_table) == len(labelled) == 1374 and (live_table.frame["label"] == -1).all()
    assert live_table.frame[labelled.features].equals(labelled.frame[labelled.features])
    assert live_table.frame["uid"].iloc[0] == "CJAF5z3MDFg4XVDXB"
    assert "no label field: every record's label is unknown" in live_table.notes
    with pytest.raises(FlowDataError, match="missing column label"):
        read_zeek_conn_log(live)  # simulation's reader: labels are required


def test_without_evidence_no_live_flow_trains_and_benign_needs_the_explicit_switch(live_table):
    training, counts = apply_evidence(live_table, read_evidence_files([]))
    assert len(training) == 0 and counts.unlabelled_dropped == 1374 and counts.benign == 0
    everything, counts = apply_evidence(live_table, read_evidence_files([]), unlabelled="benign")
    assert len(everything) == 1374 and (everything.frame["label"] == 0).all()
    assert counts.unlabelled_as_benign == 1374 and counts.benign == 1374
    with pytest.raises(ValueError, match="unlabelled must be one of"):
        apply_evidence(live_table, read_evidence_files([]), unlabelled="normal")


def test_stratosphere_background_is_kept_unlabelled_then_dropped_like_the_training_reader(data_dir):
    path = data_dir / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
    kept = read_zeek_conn_log(path, source="stratosphere", keep_unlabelled=True)
    assert int((kept.frame["label"] == -1).sum()) == 60 and set(kept.frame.loc[kept.frame.label < 0,
                                                                               "attack_cat"]) == {"Background"}
    training, counts = apply_evidence(kept, read_evidence_files([]))
    reader = read_zeek_conn_log(path, source="stratosphere")
    assert counts.unlabelled_dropped == 60 and counts.capture_labelled == 5603
    assert training.frame[reader.frame.columns].equals(reader.frame)


# ---- the three sources ----------------------------------------------------------------------------------


def test_operator_decisions_label_the_hosts_originated_flows_in_their_span(tmp_path, live_table):
    frame = live_table.frame
    host = frame[frame.src_ip == "192.168.2.3"]
    t0, t1 = float(host.start_time.quantile(0.25)), float(host.start_time.quantile(0.75))
    decisions = json_lines(tmp_path / "decisions.jsonl", [
        {"host": "192.168.2.3", "label": "malicious", "start": t0, "end": t1, "by": "alice", "note": "confirmed"},
        {"host": "192.168.2.1", "label": "benign", "start": iso(0.0), "by": "bob"},  # open end, ISO time
    ])  # fmt: skip
    training, counts = apply_evidence(live_table, read_evidence(decisions))
    covered = host[(host.start_time >= t0) & (host.start_time <= t1)]
    router = frame[frame.src_ip == "192.168.2.1"]
    assert counts.malicious == len(covered) > 100 and counts.benign == len(router) == 51
    assert len(training) == len(covered) + len(router) and counts.unlabelled_dropped == 1374 - len(training)
    assert set(training.frame.loc[training.frame.label == 1, "uid"]) == set(covered.uid)
    assert set(training.frame.loc[training.frame.label == 1, "attack_cat"]) == {"Operator"}
    assert set(training.frame.loc[training.frame.label == 0, "attack_cat"]) == {"Normal"}
    assert counts.by_source == {"operator": len(training)} and counts.evidence_unmatched == 0


def test_zeek_notices_label_by_uid_by_connection_and_by_scanning_source(tmp_path, live_table):
    frame = live_table.frame
    by_uid, by_tuple = frame.iloc[10], frame[frame.proto == "tcp"].iloc[3]
    scanner = frame[frame.src_ip == "192.168.2.1"]
    scan_ts = float(scanner.start_time.max()) + 10.0
    path = notice_log(tmp_path / "notice.log", [
        {"ts": by_uid.start_time, "uid": by_uid.uid, "note": "Weird::Activity", "msg": "by uid"},
        {"ts": by_tuple.start_time + 0.1, "id.orig_h": by_tuple.src_ip, "id.orig_p": by_tuple.src_port,
         "id.resp_h": by_tuple.dst_ip, "id.resp_p": by_tuple.dst_port, "proto": "tcp",
         "note": "SSH::Password_Guessing"},
        {"ts": scan_ts, "note": "Scan::Port_Scan", "msg": "scanned", "src": "192.168.2.1"},
        {"ts": 1.0, "note": "Scan::Address_Scan", "src": "10.9.9.9"},  # covers no flow of this capture
    ])  # fmt: skip
    training, counts = apply_evidence(live_table, read_evidence(path))
    scanned = scanner[scanner.start_time >= scan_ts - NOTICE_WINDOW]
    families = dict(zip(training.frame.uid, training.frame.attack_cat))
    assert families[by_uid.uid] == "Weird::Activity" and families[by_tuple.uid] == "SSH::Password_Guessing"
    assert {families[u] for u in scanned.uid} == {"Scan::Port_Scan"} and len(scanned) < len(scanner)
    assert len(training) == 2 + len(scanned) == counts.malicious and counts.benign == 0
    assert counts.evidence_items == 4 and counts.evidence_unmatched == 1 and counts.by_source == {
        "zeek-notice": len(training)}


def test_suricata_alerts_label_the_flow_open_at_the_alert_in_either_direction(tmp_path, live_table):
    frame = live_table.frame
    tcp = frame[(frame.proto == "tcp") & (frame.duration > 1)].iloc[0]
    v6 = frame[frame.src_ip.str.contains(":") & (frame.proto == "udp")].iloc[0]
    import ipaddress

    path = json_lines(tmp_path / "eve.json", [
        {"timestamp": iso(tcp.start_time + tcp.duration / 2), "flow_id": 1, "event_type": "alert",
         "src_ip": tcp.dst_ip, "src_port": int(tcp.dst_port), "dest_ip": tcp.src_ip, "dest_port": int(tcp.src_port),
         "proto": "TCP", "alert": {"signature": "ET MALWARE reply", "severity": 1}},  # the response's direction
        {"timestamp": iso(v6.start_time), "event_type": "alert", "proto": "UDP",
         "src_ip": ipaddress.ip_address(v6.src_ip).exploded, "src_port": int(v6.src_port),  # Suricata: expanded
         "dest_ip": ipaddress.ip_address(v6.dst_ip).exploded, "dest_port": int(v6.dst_port),
         "alert": {"signature": "ET SCAN mdns", "severity": 3}},
        {"timestamp": iso(tcp.start_time + tcp.duration + 60), "event_type": "alert", "src_ip": tcp.src_ip,
         "src_port": int(tcp.src_port), "dest_ip": tcp.dst_ip, "dest_port": int(tcp.dst_port), "proto": "TCP",
         "alert": {"signature": "too late"}},  # after the flow ended: covers nothing
        {"timestamp": iso(tcp.start_time), "event_type": "flow", "src_ip": tcp.src_ip, "dest_ip": tcp.dst_ip},
        {"timestamp": iso(tcp.start_time), "event_type": "dns", "src_ip": tcp.src_ip, "dest_ip": tcp.dst_ip},
    ])  # fmt: skip
    evidence = read_evidence(path)
    assert len(evidence.items) == 3 and any("2 Suricata events other than alerts ignored: dns (1), flow (1)" in n
                                            for n in evidence.notes)  # fmt: skip
    training, counts = apply_evidence(live_table, evidence)
    families = dict(zip(training.frame.uid, training.frame.attack_cat))
    assert families[tcp.uid] == "ET MALWARE reply" and families[v6.uid] == "ET SCAN mdns"
    expected = frame[(frame.src_ip == v6.src_ip) & (frame.dst_ip == v6.dst_ip) & (frame.src_port == v6.src_port)
                     & (frame.dst_port == v6.dst_port) & (frame.start_time - 1 <= v6.start_time)
                     & (v6.start_time <= frame.start_time + frame.duration + 1)]  # fmt: skip
    assert len(training) == 1 + len(expected) and counts.evidence_unmatched == 1


def test_an_operators_rejection_overrides_an_alert_and_a_later_decision_an_earlier_one(tmp_path, live_table):
    frame = live_table.frame
    flow = frame[frame.src_ip == "192.168.2.1"].iloc[0]
    alert = notice_log(tmp_path / "notice.log", [{"ts": flow.start_time, "uid": flow.uid, "note": "X::Y"}])
    decisions = json_lines(tmp_path / "decisions.jsonl", [
        {"host": "192.168.2.1", "label": "malicious", "by": "alice"},
        {"host": "192.168.2.1", "label": "benign", "by": "bob", "note": "false positive: the router"}])
    training, counts = apply_evidence(live_table, read_evidence_files([decisions, alert]))
    assert counts.benign == 51 and counts.malicious == 0 and training.frame.uid.tolist().count(flow.uid) == 1


def test_a_labelled_captures_labels_stand_and_contradicting_evidence_is_counted(data_dir, tmp_path):
    table = read_zeek_conn_log(data_dir / "iot-23" / "CTU-IoT-Malware-Capture-42-1.conn.log.labeled",
                               keep_unlabelled=True)  # fmt: skip
    bad = table.frame[table.frame.label == 1]
    decisions = json_lines(tmp_path / "d.jsonl", [{"host": h, "label": "benign"} for h in set(bad.src_ip)])
    training, counts = apply_evidence(table, read_evidence(decisions))
    assert training.frame.label.tolist() == table.frame.label.tolist()  # nothing was unlabelled, nothing changed
    assert counts.capture_labelled == 4426 and counts.evidence_labelled == 0 and counts.disagreeing == len(bad) > 0


# ---- malformed evidence ------------------------------------------------------------------------------------


BAD_LINES = [
    "not json at all {",
    '{"host": "10.0.0.300", "label": "malicious"}',
    '{"host": "10.0.0.5", "label": "maybe"}',
    '{"label": "malicious"}',
    '{"host": "10.0.0.5", "label": "benign", "start": 20, "end": 10}',
    '{"event_type": "alert", "timestamp": "yesterday", "src_ip": "10.0.0.5", "dest_ip": "10.0.0.6", "alert": {}}',
    '{"event_type": "alert", "timestamp": 5, "src_ip": "10.0.0.5", "dest_ip": "10.0.0.6"}',
    '{"something": "else"}',
    '[1, 2]',
]


def test_malformed_evidence_lines_are_counted_skips_or_one_error_naming_file_line_and_field(tmp_path):
    good = {"host": "10.0.0.5", "label": "malicious", "start": 1, "end": 2}
    path = json_lines(tmp_path / "mixed.jsonl", [good, *BAD_LINES, good])
    skipped = read_evidence(path, "skip")
    assert len(skipped.items) == 2 and skipped.skipped == {
        "evidence_malformed_json": 2, "evidence_bad_value": 4, "evidence_missing_field": 2,
        "evidence_unknown_record": 1}  # fmt: skip
    with pytest.raises(FlowDataError, match=r"mixed.jsonl:2: bad evidence \(malformed_json\)"):
        read_evidence(path, "error")
    with pytest.raises(FlowDataError, match=r"one.jsonl:1: bad evidence \(bad_value\); column 'host'; expected an "
                                            r"IPv4 or IPv6 address; got '10.0.0.300'"):  # fmt: skip
        read_evidence(json_lines(tmp_path / "one.jsonl", [BAD_LINES[1]]), "error")
    notices = notice_log(tmp_path / "notice.log", [{"ts": 5, "note": "A::B", "src": "10.0.0.5"}])
    notices.write_text(notices.read_text() + "1.0\tonly\tthree\n")
    assert read_evidence(notices, "skip").skipped == {"evidence_wrong_field_count": 1}
    with pytest.raises(FlowDataError, match=r"notice.log:\d+: bad evidence \(wrong_field_count\)"):
        read_evidence(notices, "error")


def test_an_empty_evidence_file_holds_no_evidence_and_a_missing_one_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert read_evidence(tmp_path / "empty.jsonl").items == []
    with pytest.raises(FlowDataError, match="file not found"):
        read_evidence(tmp_path / "absent.jsonl")


def test_times_are_epoch_seconds_or_iso_8601():
    from flows.labels.evidence import timestamp

    assert timestamp("2019-10-25T12:08:22.5+0000", "t") == timestamp(1572005302.5, "t") == timestamp("1572005302.5",
                                                                                                     "t")
    assert timestamp("2019-10-25T12:08:22.5", "t") == 1572005302.5  # no offset: UTC
    assert math.isfinite(timestamp(0, "t")) and np.isclose(timestamp("2019-10-25T14:08:22.5+02:00", "t"),
                                                           1572005302.5)  # fmt: skip


def test_the_gateways_source_reads_a_live_conn_log_as_unlabelled_and_encodes_it_as_training_does(data_dir, live):
    """Before: the verdict service refused a live Zeek log ("lacks column(s) label")."""
    from collections import Counter

    from flows.pipeline import FeaturePipeline, PipelineConfig
    from gateway.encode import encode
    from gateway.sources import FlowSource

    labelled = read_zeek_conn_log(data_dir / CAPTURE)
    state = FeaturePipeline(PipelineConfig()).fit(labelled).state_
    malformed: Counter = Counter()
    X, kept = encode([r for r in FlowSource(live) if r is not None], state, malformed)
    assert not malformed and {r.label for r in kept} == {-1}
    np.testing.assert_array_equal(X, state.transform(labelled.frame))
