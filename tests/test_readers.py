"""Readers on the real data (acceptance counts) and on every kind of bad input (the messages)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.errors import FlowDataError
from flows.loader import load_dataset, resolve_data_dir
from flows.readers import read_iot23_conn_log, read_unsw_partitioned, read_unsw_raw
from flows.table import SRC_IP, START_TIME

UNSW_HEADER = (
    "id,dur,proto,service,state,spkts,dpkts,sbytes,dbytes,rate,sttl,dttl,sload,dload,sloss,dloss,sinpkt,dinpkt,"
    "sjit,djit,swin,stcpb,dtcpb,dwin,tcprtt,synack,ackdat,smean,dmean,trans_depth,response_body_len,ct_srv_src,"
    "ct_state_ttl,ct_dst_ltm,ct_src_dport_ltm,ct_dst_sport_ltm,ct_dst_src_ltm,is_ftp_login,ct_ftp_cmd,"
    "ct_flw_http_mthd,ct_src_ltm,ct_srv_dst,is_sm_ips_ports,attack_cat,label"
)
ROW_NORMAL = "1,0.000011,udp,-,INT,2,0,496,0,90909.0902,254,0,180363632,0,0,0,0.011,0,0,0,0,0,0,0,0,0,0,248,0,0,0,2,2,1,1,1,2,0,0,0,1,2,0,Normal,0"
ROW_ATTACK = "2,0.5,tcp,http,FIN,10,8,900,1200,30.5,62,252,1000,2000,0,0,5.1,4.2,1,1,255,1,2,255,0.1,0.05,0.05,90,150,1,0,3,1,1,1,1,1,0,0,1,1,3,0,Exploits,1"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def unsw_file(tmp_path: Path, rows: list[str], header: str = UNSW_HEADER, bom: bool = True) -> Path:
    text = ("\ufeff" if bom else "") + header + "\r\n" + "\r\n".join(rows) + "\r\n"
    return write(tmp_path, "any-name.csv", text)


# ---- real data ------------------------------------------------------------------------------------------
def test_unsw_partition_counts(unsw_table):
    frame = unsw_table.frame
    assert len(unsw_table) == 82_332
    assert frame["label"].value_counts().to_dict() == {0: 37_000, 1: 45_332}
    assert frame["attack_cat"].value_counts()["Backdoor"] == 583
    assert len(unsw_table.numeric_features) == 39 and unsw_table.categorical_features == ["proto", "service", "state"]
    assert unsw_table.n_skipped == 0
    assert "82,332" in unsw_table.notes[0]


def test_raw_unsw_sample_has_hosts_and_times(data_dir):
    table = load_dataset("unsw-nb15-raw", data_dir, file="UNSW-NB15_1.first3000.csv")
    assert len(table) == 3000 and table.has_hosts
    assert table.frame["label"].sum() == 98
    assert table.frame[SRC_IP].str.match(r"^\d+\.\d+\.\d+\.\d+$").all()
    assert table.frame[START_TIME].min() > 1.4e9
    assert "Backdoors" not in set(table.frame["attack_cat"])
    assert not any(f.startswith(" ") for f in table.frame["attack_cat"])
    # names are mapped onto the partitioned vocabulary
    assert {"smean", "response_body_len", "ct_src_ltm", "sinpkt"} <= set(table.numeric_features)


def test_iot23_capture_34_1(data_dir):
    table = load_dataset("iot-23", data_dir, file="CTU-IoT-Malware-Capture-34-1.conn.log.labeled")
    assert len(table) == 23_145 and table.has_hosts
    families = table.frame["attack_cat"].value_counts().to_dict()
    assert families == {"DDoS": 14_394, "C&C": 6_706, "Normal": 1_923, "PartOfAHorizontalPortScan": 122}
    assert table.frame[START_TIME].notna().all() and table.frame[SRC_IP].nunique() > 1
    assert any("unset duration" in note for note in table.notes)  # filled values are reported, not hidden


# ---- partitioned UNSW-NB15: bad input -------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FlowDataError, match=r"nope\.csv: file not found"):
        read_unsw_partitioned(tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    with pytest.raises(FlowDataError, match=r"empty\.csv: empty file"):
        read_unsw_partitioned(write(tmp_path, "empty.csv", ""))


def test_missing_column_is_named(tmp_path):
    header = UNSW_HEADER.replace(",sttl,", ",",)
    path = unsw_file(tmp_path, [ROW_NORMAL.replace(",254,0,180363632", ",0,180363632")], header=header)
    with pytest.raises(FlowDataError, match=r"any-name\.csv:1: missing column sttl; column 'sttl'"):
        read_unsw_partitioned(path)


def test_wrong_column_is_named(tmp_path):
    path = unsw_file(tmp_path, [ROW_NORMAL], header=UNSW_HEADER.replace("dttl", "dtll"))
    with pytest.raises(FlowDataError, match=r"missing column dttl"):
        read_unsw_partitioned(path)


def test_non_numeric_value_names_line_and_column(tmp_path):
    path = unsw_file(tmp_path, [ROW_NORMAL, ROW_ATTACK.replace(",900,1200,", ",9x0,1200,")])
    with pytest.raises(FlowDataError) as err:
        read_unsw_partitioned(path)
    assert re.search(r"any-name\.csv:3: non-numeric value; column 'sbytes'; expected a finite number; got '9x0'",
                     str(err.value))  # fmt: skip


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_nan_and_inf_are_refused(tmp_path, bad):
    path = unsw_file(tmp_path, [ROW_NORMAL.replace(",0.000011,", f",{bad},")])
    with pytest.raises(FlowDataError, match=r":2: non-finite value \(NaN or inf\); column 'dur'"):
        read_unsw_partitioned(path)


def test_skip_policy_counts_bad_records(tmp_path):
    rows = [ROW_NORMAL, ROW_ATTACK.replace(",900,", ",nan,"), ROW_ATTACK, ROW_ATTACK[:-1] + "7"]  # label 7
    table = read_unsw_partitioned(unsw_file(tmp_path, rows), bad_records="skip")
    assert len(table) == 2
    assert table.skipped == {"non_numeric_or_non_finite": 1, "bad_label": 1}
    assert table.summary()["skipped"] == table.skipped


def test_truncated_last_line(tmp_path):
    text = "\ufeff" + UNSW_HEADER + "\n" + ROW_NORMAL + "\n" + ROW_ATTACK[:40]
    with pytest.raises(FlowDataError) as err:
        read_unsw_partitioned(write(tmp_path, "cut.csv", text))
    assert "cut.csv:3: wrong number of fields (truncated last line?); expected 45 fields" in str(err.value)
    table = read_unsw_partitioned(write(tmp_path, "cut.csv", text), bad_records="skip")
    assert len(table) == 1 and table.skipped == {"wrong_field_count": 1}


def test_wrong_encoding_names_line(tmp_path):
    rows = [ROW_NORMAL, ROW_ATTACK.replace("Exploits", "Expl\u00f6its")]
    text = (UNSW_HEADER + "\n" + "\n".join(rows) + "\n").encode("cp1252")
    with pytest.raises(FlowDataError, match=r"latin\.csv:3: not valid UTF-8 text at byte \d+.*expected UTF-8"):
        read_unsw_partitioned(write(tmp_path, "latin.csv", text))


def test_bad_label(tmp_path):
    path = unsw_file(tmp_path, [ROW_NORMAL[:-1] + "yes"])
    with pytest.raises(FlowDataError, match=r":2: bad label; column 'label'; expected 0 or 1; got 'yes'"):
        read_unsw_partitioned(path)


def test_header_only(tmp_path):
    with pytest.raises(FlowDataError, match="no flow records"):
        read_unsw_partitioned(unsw_file(tmp_path, []))


def test_no_bom_and_family_spelling(tmp_path):
    table = read_unsw_partitioned(unsw_file(tmp_path, [ROW_NORMAL, ROW_ATTACK.replace("Exploits", " Backdoors")],
                                            bom=False))  # fmt: skip
    assert table.frame["attack_cat"].tolist() == ["Normal", "Backdoor"]


# ---- raw UNSW-NB15 --------------------------------------------------------------------------------------
RAW_ROW = ("59.166.0.0,{sport},149.171.126.6,{dport},udp,CON,0.001055,132,164,31,29,0,0,dns,500473.9375,"
           "621800.9375,2,2,0,0,0,0,66,82,0,0,0,0,1421927414,1421927414,0.017,0.013,0,0,0,0,0,{http},{ftp},0,3,7,"
           "1,3,1,1,1,{cat},{label}")  # fmt: skip


def raw_row(sport="1390", dport="53", http="0", ftp="0", cat="", label="0") -> str:
    return RAW_ROW.format(sport=sport, dport=dport, http=http, ftp=ftp, cat=cat, label=label)


def test_raw_quirks(tmp_path):
    rows = [raw_row(), raw_row(sport="0x000b", dport="-", http=" ", ftp="", cat=" Fuzzers", label="1"),
            raw_row(cat="Backdoors", label="1")]  # fmt: skip
    table = read_unsw_raw(write(tmp_path, "UNSW-NB15_9.csv", "\r\n".join(rows) + "\r\n"))
    frame = table.frame
    assert frame["src_port"].tolist()[:2] == [1390, 11]
    assert frame["dst_port"].isna().tolist() == [False, True, False]
    assert frame["attack_cat"].tolist() == ["Normal", "Fuzzers", "Backdoor"]
    assert frame["ct_flw_http_mthd"].tolist() == [0.0, 0.0, 0.0]
    assert any("blank or unset ct_flw_http_mthd read as 0" in n for n in table.notes)
    assert any("published 49 names" in n for n in table.notes)  # no features file next to it


def test_raw_bad_port(tmp_path):
    path = write(tmp_path, "UNSW-NB15_9.csv", raw_row() + "\n" + raw_row(sport="0xZZ") + "\n")
    with pytest.raises(FlowDataError, match=r":2: bad port; column 'src_port'.*got '0xZZ'"):
        read_unsw_raw(path)


def test_raw_with_header_is_refused(tmp_path):
    path = write(tmp_path, "UNSW-NB15_9.csv", "srcip,sport\n" + raw_row() + "\n")
    with pytest.raises(FlowDataError, match="unexpected header row"):
        read_unsw_raw(path)


# ---- IoT-23 ---------------------------------------------------------------------------------------------
ZEEK_HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\t"
    "resp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\t"
    "resp_ip_bytes\ttunnel_parents   label   detailed-label\n"
)
ZEEK_ROW = ("1545403816.962094\tCrDn63\t192.168.1.195\t41040\t185.244.25.235\t80\ttcp\t-\t{dur}\t0\t0\tS0\t-\t-\t0\t"
            "S\t3\t180\t0\t0\t-   {label}   {family}")  # fmt: skip


def test_iot23_quirks_and_truncation(tmp_path):
    rows = [ZEEK_ROW.format(dur="3.1", label="Benign", family="-"),
            ZEEK_ROW.format(dur="-", label="Malicious", family="DDoS")]  # fmt: skip
    table = read_iot23_conn_log(write(tmp_path, "c.conn.log.labeled", ZEEK_HEADER + "\n".join(rows)))
    assert table.frame["attack_cat"].tolist() == ["Normal", "DDoS"]
    assert table.frame["duration"].tolist() == [3.1, 0.0]
    cut = ZEEK_HEADER + rows[0] + "\n" + rows[1][:30]
    with pytest.raises(FlowDataError, match=r"c2\.conn\.log\.labeled:8: wrong number of fields \(truncated"):
        read_iot23_conn_log(write(tmp_path, "c2.conn.log.labeled", cut))


def test_iot23_bad_value(tmp_path):
    row = ZEEK_ROW.format(dur="abc", label="Benign", family="-")
    with pytest.raises(FlowDataError, match=r"c.conn.log.labeled:7: non-numeric value; column 'duration'"):
        read_iot23_conn_log(write(tmp_path, "c.conn.log.labeled", ZEEK_HEADER + row + "\n"))


def test_iot23_without_fields_header(tmp_path):
    with pytest.raises(FlowDataError, match="before the #fields header"):
        read_iot23_conn_log(write(tmp_path, "c.conn.log.labeled", ZEEK_ROW.format(dur="1", label="Benign",
                                                                                  family="-")))  # fmt: skip


# ---- data location --------------------------------------------------------------------------------------
def test_data_dir_from_env_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTDEFENDER_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    monkeypatch.delenv("BOTDEFENDER_DATA_DIR")
    with pytest.raises(FlowDataError, match="no data directory configured.*BOTDEFENDER_DATA_DIR"):
        resolve_data_dir(None)
    with pytest.raises(FlowDataError, match="data directory not found"):
        resolve_data_dir(tmp_path / "missing")
    with pytest.raises(FlowDataError, match="unknown dataset 'kdd99'"):
        load_dataset("kdd99", tmp_path)
    (tmp_path / "unsw-nb15").mkdir()
    with pytest.raises(FlowDataError, match="no CSV files found"):
        load_dataset("unsw-nb15", tmp_path)


# ---- the inspect command --------------------------------------------------------------------------------
def test_inspect_command_reads_any_format_and_reports_errors(data_dir, tmp_path, capsys):
    from flows.inspect import main

    assert main([str(data_dir / "iot-23" / "CTU-Honeypot-Capture-4-1.conn.log.labeled")]) == 0
    assert '"records": 452' in capsys.readouterr().out
    bad = unsw_file(tmp_path, [ROW_NORMAL, ROW_ATTACK.replace(",900,", ",oops,")])
    assert main([str(bad)]) == 2
    assert "any-name.csv:3: non-numeric value; column 'sbytes'" in capsys.readouterr().err
    assert main([str(bad), "--skip-bad"]) == 0
    assert '"non_numeric_or_non_finite": 1' in capsys.readouterr().out
    assert main([str(data_dir / "iot-23" / "csv" / "CTU-Malware-Capture-20-1-labeled.csv")]) == 0  # Zeek CSV export
    assert '"records": 3209' in capsys.readouterr().out
    assert main([str(data_dir / "stratosphere" / "008-zeek-mixed.conn.log.labeled")]) == 0
    assert '"records": 5603' in capsys.readouterr().out  # 5,663 less the 60 unlabelled Background flows


# ---- Zeek in both shapes, Stratosphere, Background ------------------------------------------------------
ZEEK_CSV_HEADER = ("ts,uid,id.orig_h,id.orig_p,id.resp_h,id.resp_p,proto,service,duration,orig_bytes,resp_bytes,"
                   "conn_state,local_orig,local_resp,missed_bytes,history,orig_pkts,orig_ip_bytes,resp_pkts,"
                   "resp_ip_bytes,tunnel_parents,label,detailed-label")  # fmt: skip
ZEEK_CSV_ROW = "1533042911.474174,C5J,192.168.100.113,123,81.2.254.224,123,udp,,{dur},48,48,SF,,,0,Dd,1,76,1,76,(empty),{label},{family}"


def test_zeek_csv_export_reads_like_the_tab_separated_log(tmp_path):
    rows = [ZEEK_CSV_ROW.format(dur="0.005490", label="Benign", family="-"),
            ZEEK_CSV_ROW.format(dur="", label="Malicious", family="C&C")]  # fmt: skip
    table = read_iot23_conn_log(write(tmp_path, "x-labeled.csv", ZEEK_CSV_HEADER + "\n" + "\n".join(rows) + "\n"))
    frame = table.frame
    assert frame["service"].tolist() == ["-", "-"]  # blank = unset in the CSV export
    assert frame["duration"].tolist() == [0.00549, 0.0] and frame["attack_cat"].tolist() == ["Normal", "C&C"]
    assert frame["src_port"].tolist() == [123, 123] and any("unset duration" in n for n in table.notes)
    bad = ZEEK_CSV_ROW.format(dur="1", label="Maybe", family="-")
    with pytest.raises(FlowDataError, match=r"y\.csv:2: bad label; column 'label'; expected Benign, Malicious or B"):
        read_iot23_conn_log(write(tmp_path, "y.csv", ZEEK_CSV_HEADER + "\n" + bad + "\n"))


def test_background_is_unlabelled_dropped_and_counted(tmp_path):
    header = ZEEK_HEADER.replace("detailed-label", "detailedlabel")
    rows = [ZEEK_ROW.format(dur="1", label="Background", family="(empty)"),
            ZEEK_ROW.format(dur="1", label="benign", family="Microsoft"),
            ZEEK_ROW.format(dur="1", label="Malicious", family="External-Attack-to-Device")]  # fmt: skip
    table = read_iot23_conn_log(write(tmp_path, "s.conn.log.labeled", header + "\n".join(rows) + "\n"))
    assert table.frame["label"].tolist() == [0, 1]
    assert table.frame["attack_cat"].tolist() == ["Normal", "External-Attack-to-Device"]
    assert table.skipped == {"unlabelled_background": 1} and table.summary()["skipped"] == table.skipped
    assert any("1 Background (unlabelled) records dropped" in n for n in table.notes)


def test_loader_honours_file_for_every_dataset(data_dir):
    strat = load_dataset("stratosphere", data_dir, file="008-zeek-mixed.conn.log.labeled")
    assert len(strat) == 5663 - 60 and strat.skipped == {"unlabelled_background": 60}
    assert strat.source == "stratosphere" and strat.frame["label"].sum() == 4201
    csv_capture = load_dataset("iot-23", data_dir, file="csv/CTU-Malware-Capture-20-1-labeled.csv")
    assert len(csv_capture) == 3209 and csv_capture.frame["label"].sum() == 16
    assert len(load_dataset("unsw-nb15-raw", data_dir, file="UNSW-NB15_1.first20000.csv")) == 20_000
    with pytest.raises(FlowDataError, match="nope.csv: file not found; expected a file of data set unsw-nb15"):
        load_dataset("unsw-nb15", data_dir, file="nope.csv")


def test_raw_records_get_the_partitioned_rate(tmp_path):
    table = read_unsw_raw(write(tmp_path, "UNSW-NB15_9.csv", raw_row() + "\n"))
    assert table.numeric_features[:6] == ["dur", "spkts", "dpkts", "sbytes", "dbytes", "rate"]
    assert table.frame["rate"].iloc[0] == pytest.approx((2 + 2 - 1) / 0.001055)
    assert table.frame["state"].iloc[0] == "con"  # upper case in the raw files
