"""Reader for UNSW-NB15's partitioned CSVs (45 columns, ``id`` ... ``attack_cat``, ``label``).

Either partition is recognised by content (175,341 or 82,332 records), whatever the file is called: several
public copies swap the names "training-set" and "testing-set".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from flows.errors import FlowDataError
from flows.readers.records import (
    BadRecordPolicy,
    check_policy,
    drop_rows,
    read_text,
    require_columns,
    split_csv,
    to_numeric_columns,
)
from flows.schema import header_columns
from flows.table import ATTACK_CAT, LABEL, FlowTable

log = logging.getLogger(__name__)

CATEGORICAL = ["proto", "service", "state"]
NUMERIC = [
    "dur", "spkts", "dpkts", "sbytes", "dbytes", "rate", "sttl", "dttl", "sload", "dload", "sloss", "dloss",
    "sinpkt", "dinpkt", "sjit", "djit", "swin", "stcpb", "dtcpb", "dwin", "tcprtt", "synack", "ackdat",
    "smean", "dmean", "trans_depth", "response_body_len", "ct_srv_src", "ct_state_ttl", "ct_dst_ltm",
    "ct_src_dport_ltm", "ct_dst_sport_ltm", "ct_dst_src_ltm", "is_ftp_login", "ct_ftp_cmd", "ct_flw_http_mthd",
    "ct_src_ltm", "ct_srv_dst", "is_sm_ips_ports",
]  # fmt: skip
COLUMNS = ["id", *NUMERIC[:3], *CATEGORICAL, *NUMERIC[3:], ATTACK_CAT, LABEL]  # membership only; order free
PARTITION_SIZES = {175_341: "UNSW training-set (175,341 records)", 82_332: "UNSW testing-set (82,332 records)"}
FAMILY_ALIASES = {"backdoors": "Backdoor", "": "Normal", "normal": "Normal"}


def normalise_family(value: str) -> str:
    """Attack family with stray spaces removed and UNSW's spelling variants merged."""
    stripped = value.strip()
    return FAMILY_ALIASES.get(stripped.lower(), stripped)


def looks_partitioned(path: str | Path) -> bool:
    """Cheap content check: does the file start with the partitioned files' header?"""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            names = header_columns(handle.readline())
    except OSError:
        return False
    return set(COLUMNS) <= set(names)


def read_unsw_partitioned(path: str | Path, *, bad_records: BadRecordPolicy = "error") -> FlowTable:
    """Read a partitioned UNSW-NB15 CSV into a :class:`FlowTable` (no IPs or times in this format)."""
    check_policy(bad_records)
    path = Path(path)
    text = read_text(path)
    header, _, body = text.partition("\n")
    names = header_columns(header)
    require_columns(str(path), names, COLUMNS)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise FlowDataError(path, "duplicate column", line=1, column=dup, expected="each column once")
    records = split_csv(str(path), body, names, first_line=2, policy=bad_records)
    if not records.rows:
        raise FlowDataError(path, "no flow records after the header", expected="at least one record")
    frame = records.frame()[[*NUMERIC, *CATEGORICAL, ATTACK_CAT, LABEL]]
    frame = to_numeric_columns(records, frame, NUMERIC, policy=bad_records)
    frame = parse_binary_labels(records, frame, bad_records)
    for column in CATEGORICAL:
        frame[column] = frame[column].astype(str).str.strip().str.lower().replace("", "-")
    frame[ATTACK_CAT] = frame[ATTACK_CAT].astype(str).map(normalise_family)
    notes = [PARTITION_SIZES.get(len(frame) + sum(records.skipped.values()), "UNSW-NB15 partitioned subset")]
    mismatch = int(((frame[LABEL] == 0) != (frame[ATTACK_CAT] == "Normal")).sum())
    if mismatch:
        notes.append(f"{mismatch} records whose label disagrees with attack_cat (kept, label wins)")
    table = FlowTable(frame, list(NUMERIC), list(CATEGORICAL), "unsw-nb15", str(path), records.skipped, notes)
    log.info("read %s: %d records (%s), skipped %s", path, len(table), notes[0], records.skipped or 0)
    return table


def parse_binary_labels(records, frame, policy: BadRecordPolicy):
    """Check that ``label`` is 0 or 1 and store it as int8."""
    raw = frame[LABEL].astype(str).str.strip()
    bad = ~raw.isin(["0", "1"]).to_numpy()
    if bad.any():
        if policy == "error":
            i = int(np.flatnonzero(bad)[0])
            raise FlowDataError(
                records.path, "bad label", line=records.lines[i], column=LABEL, expected="0 or 1", got=raw.iat[i]
            )
        frame = drop_rows(records, frame, bad, "bad_label")
        raw = frame[LABEL].astype(str).str.strip()
    frame[LABEL] = raw.astype(np.int8).to_numpy()
    return frame
