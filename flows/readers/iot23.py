"""Reader for IoT-23 Zeek ``conn.log.labeled`` files.

Tab-separated with ``#`` header lines (``#fields`` names the columns); in the published captures the last three
fields (``tunnel_parents label detailed-label``) are separated by runs of spaces, not tabs. ``-`` marks an unset
field and ``(empty)`` an empty one. Unset duration/bytes (connections Zeek could not measure) read as 0 and are
counted in the table's notes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from flows.errors import FlowDataError
from flows.readers.records import (
    BadRecordPolicy,
    RawRecords,
    check_policy,
    drop_rows,
    read_text,
    require_columns,
    to_numeric_columns,
)
from flows.schema import IOT23_CATEGORICAL as CATEGORICAL
from flows.schema import IOT23_META as META
from flows.schema import IOT23_NUMERIC as NUMERIC
from flows.schema import IOT23_UNSET_AS_ZERO as UNSET_AS_ZERO
from flows.table import ATTACK_CAT, DST_IP, DST_PORT, LABEL, SRC_IP, SRC_PORT, START_TIME, FlowTable

log = logging.getLogger(__name__)

LABEL_FIELD, FAMILY_FIELD = "label", "detailed-label"
LABELS = {"benign": 0, "malicious": 1}
WHITESPACE = re.compile(r"[ \t]+")


def read_iot23_conn_log(path: str | Path, *, bad_records: BadRecordPolicy = "error") -> FlowTable:
    """Read one labelled Zeek conn.log into a :class:`FlowTable` with IPs, ports and start times."""
    check_policy(bad_records)
    path = Path(path)
    text = read_text(path)
    names: list[str] | None = None
    unset, empty = "-", "(empty)"
    rows: list[list[str]] = []
    lines: list[int] = []
    skipped: dict[str, int] = {}
    all_lines = text.splitlines()
    last_data = max((i for i, ln in enumerate(all_lines) if ln.strip() and not ln.startswith("#")), default=-1)
    for index, line in enumerate(all_lines):
        line_no = index + 1
        if line.startswith("#"):
            key, _, value = line[1:].partition("\t")
            if key == "fields":
                names = WHITESPACE.split(value.strip())
            elif key == "unset_field":
                unset = value.strip()
            elif key == "empty_field":
                empty = value.strip()
            continue
        if not line.strip():
            continue
        if names is None:
            raise FlowDataError(path, "flow record before the #fields header", line=line_no,
                                expected="a Zeek log header with #fields")  # fmt: skip
        fields = line.split("\t")
        if len(fields) < len(names):
            fields = fields[:-1] + WHITESPACE.split(fields[-1].strip())
        if len(fields) != len(names):
            if bad_records == "skip":
                skipped["wrong_field_count"] = skipped.get("wrong_field_count", 0) + 1
                continue
            hint = " (truncated last line?)" if index == last_data and len(fields) < len(names) else ""
            raise FlowDataError(path, f"wrong number of fields{hint}", line=line_no,
                                expected=f"{len(names)} fields", got=f"{len(fields)} fields")  # fmt: skip
        rows.append(fields)
        lines.append(line_no)
    if names is None:
        raise FlowDataError(path, "no #fields header", expected="a Zeek conn.log with #fields")
    require_columns(str(path), names, [*META, *NUMERIC, *CATEGORICAL, LABEL_FIELD, FAMILY_FIELD])
    if not rows:
        raise FlowDataError(path, "no flow records", expected="at least one record")
    records = RawRecords(str(path), names, rows, lines, skipped)
    frame = records.frame()
    notes = []
    for column in UNSET_AS_ZERO:
        blank = frame[column].isin([unset, empty])
        if blank.any():
            notes.append(f"{int(blank.sum())} unset {column} read as 0")
            frame.loc[blank, column] = "0"
    frame = to_numeric_columns(records, frame, [*NUMERIC, "ts"], policy=bad_records)
    frame = _labels(records, frame, bad_records)
    for column in CATEGORICAL:
        # Zeek values are case-sensitive (history: upper case = originator), so no case folding here.
        frame[column] = frame[column].astype(str).str.strip().replace({"": unset, empty: unset})
    for column in ("id.orig_p", "id.resp_p"):
        ports = frame[column].astype(str).str.strip()
        numeric = ports.where(ports != unset).astype(float)
        bad = numeric.isna().to_numpy() & (ports != unset).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FlowDataError(path, "bad port", line=records.lines[i], column=column, expected="an integer port",
                                got=ports.iat[i])  # fmt: skip
        frame[column] = numeric.astype("Int64").to_numpy()
    frame = frame.rename(columns=META)
    frame = frame[[*NUMERIC, *CATEGORICAL, LABEL, ATTACK_CAT, SRC_IP, DST_IP, SRC_PORT, DST_PORT, START_TIME]]
    table = FlowTable(frame, list(NUMERIC), list(CATEGORICAL), "iot-23", str(path), records.skipped, notes)
    log.info("read %s: %d records, skipped %s", path, len(table), records.skipped or 0)
    return table


def _labels(records: RawRecords, frame, policy: BadRecordPolicy):
    """Binary label from ``label`` (Benign/Malicious) and the family from ``detailed-label``."""
    raw = frame[LABEL_FIELD].astype(str).str.strip().str.lower()
    bad = ~raw.isin(list(LABELS)).to_numpy()
    if bad.any():
        if policy == "error":
            i = int(np.flatnonzero(bad)[0])
            raise FlowDataError(records.path, "bad label", line=records.lines[i], column=LABEL_FIELD,
                                expected="Benign or Malicious", got=frame[LABEL_FIELD].iat[i])  # fmt: skip
        frame = drop_rows(records, frame, bad, "bad_label")
        raw = frame[LABEL_FIELD].astype(str).str.strip().str.lower()
    label = raw.map(LABELS).astype(np.int8).to_numpy()
    family = frame[FAMILY_FIELD].astype(str).str.strip()
    family = family.where(~family.isin(["-", "", "(empty)"]), None)
    family = family.fillna(frame[LABEL_FIELD].map(lambda v: "Normal" if v.strip().lower() == "benign" else "Malicious"))
    family = family.where(label == 1, "Normal")
    frame = frame.drop(columns=[LABEL_FIELD, FAMILY_FIELD])
    frame[LABEL] = label
    frame[ATTACK_CAT] = family.to_numpy()
    return frame
