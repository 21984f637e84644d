"""Column names and per-source naming rules, shared by the pandas readers (``flows.readers``) and the gateway's
streaming readers (``gateway.sources``): standard library only, so a gateway can import it without pandas."""

from __future__ import annotations

# the flow table's label and metadata columns
LABEL = "label"
ATTACK_CAT = "attack_cat"
SRC_IP, DST_IP, SRC_PORT, DST_PORT, START_TIME = "src_ip", "dst_ip", "src_port", "dst_port", "start_time"
SITE = "site"  # multi-site data sets (``captures``): the capture a flow comes from; metadata, never a feature
META_COLUMNS = (LABEL, ATTACK_CAT, SRC_IP, DST_IP, SRC_PORT, DST_PORT, START_TIME, SITE)
BENIGN_FAMILY = "Normal"

# raw UNSW-NB15_1..4 CSVs: 49 columns, no header; names as published in NUSW-NB15_features.csv
UNSW_RAW_PUBLISHED_NAMES = [
    "srcip", "sport", "dstip", "dsport", "proto", "state", "dur", "sbytes", "dbytes", "sttl", "dttl", "sloss",
    "dloss", "service", "Sload", "Dload", "Spkts", "Dpkts", "swin", "dwin", "stcpb", "dtcpb", "smeansz",
    "dmeansz", "trans_depth", "res_bdy_len", "Sjit", "Djit", "Stime", "Ltime", "Sintpkt", "Dintpkt", "tcprtt",
    "synack", "ackdat", "is_sm_ips_ports", "ct_state_ttl", "ct_flw_http_mthd", "is_ftp_login", "ct_ftp_cmd",
    "ct_srv_src", "ct_srv_dst", "ct_dst_ltm", "ct_src_ ltm", "ct_src_dport_ltm", "ct_dst_sport_ltm",
    "ct_dst_src_ltm", "attack_cat", "Label",
]  # fmt: skip
UNSW_RAW_RENAME = {
    "srcip": SRC_IP, "sport": SRC_PORT, "dstip": DST_IP, "dsport": DST_PORT, "stime": START_TIME,
    "smeansz": "smean", "dmeansz": "dmean", "res_bdy_len": "response_body_len", "sintpkt": "sinpkt",
    "dintpkt": "dinpkt",
}  # fmt: skip
UNSW_BLANK_AS_ZERO = ["ct_flw_http_mthd", "is_ftp_login", "ct_ftp_cmd"]  # blank in the raw files: read as 0


def unsw_canonical_name(published: str) -> str:
    """Map a published raw column name to the flow table's name (``ct_src_ ltm`` -> ``ct_src_ltm``)."""
    name = published.replace(" ", "").strip().lower()
    return UNSW_RAW_RENAME.get(name, name)


def header_columns(first_line: str) -> list[str]:
    """Column names of a CSV header line, lower-cased and stripped (the partitioned UNSW-NB15 files)."""
    return [c.strip().lower() for c in first_line.split(",")]


# IoT-23 labelled Zeek conn.log files
IOT23_NUMERIC = [
    "duration", "orig_bytes", "resp_bytes", "missed_bytes", "orig_pkts", "orig_ip_bytes", "resp_pkts",
    "resp_ip_bytes",
]  # fmt: skip
IOT23_CATEGORICAL = ["proto", "service", "conn_state", "history"]
IOT23_UNSET_AS_ZERO = ["duration", "orig_bytes", "resp_bytes"]  # Zeek writes "-" when it saw no payload
IOT23_META = {"ts": START_TIME, "id.orig_h": SRC_IP, "id.orig_p": SRC_PORT, "id.resp_h": DST_IP,
              "id.resp_p": DST_PORT}  # fmt: skip
