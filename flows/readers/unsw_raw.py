"""Reader for the raw UNSW-NB15_1..4 CSVs: 49 columns, no header, names from NUSW-NB15_features.csv.

Quirks handled: hex port strings (``0x000b``), ``-`` ports (ICMP and others), attack families with stray
spaces and the ``Backdoor``/``Backdoors`` pair, empty ``attack_cat`` for normal traffic, blank
``ct_flw_http_mthd``/``is_ftp_login``/``ct_ftp_cmd`` (read as 0 and counted in the table's notes). Feature
names are mapped to the partitioned files' names so one vocabulary serves both formats.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from flows.errors import FlowDataError
from flows.readers.records import (
    BadRecordPolicy,
    check_policy,
    drop_rows,
    read_text,
    split_csv,
    to_numeric_columns,
)
from flows.readers.unsw_partitioned import normalise_family, parse_binary_labels
from flows.schema import UNSW_BLANK_AS_ZERO as BLANK_AS_ZERO
from flows.schema import UNSW_RAW_PUBLISHED_NAMES as PUBLISHED_NAMES  # when NUSW-NB15_features.csv is absent
from flows.schema import unsw_canonical_name as canonical_name
from flows.table import ATTACK_CAT, DST_IP, DST_PORT, LABEL, SRC_IP, SRC_PORT, START_TIME, FlowTable

log = logging.getLogger(__name__)

FEATURES_FILE = "NUSW-NB15_features.csv"
CATEGORICAL = ["proto", "state", "service"]
NOT_FEATURES = {SRC_IP, SRC_PORT, DST_IP, DST_PORT, START_TIME, "ltime", ATTACK_CAT, LABEL}


def read_feature_names(path: str | Path) -> list[str]:
    """The 49 column names from NUSW-NB15_features.csv (cp1252 encoded, columns No.,Name,Type,Description)."""
    path = Path(path)
    lines = read_text(path, encoding="cp1252").splitlines()
    names = []
    for line_no, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        if len(parts) < 2 or not parts[0].strip().isdigit():
            raise FlowDataError(path, "bad feature row", line=line_no, expected="No.,Name,Type,Description", got=line)
        names.append(parts[1])
    if len(names) != len(PUBLISHED_NAMES):
        raise FlowDataError(path, "wrong number of feature names", expected="49", got=str(len(names)))
    return names


def find_features_file(data_file: Path) -> Path | None:
    """NUSW-NB15_features.csv in the data file's folder or its parent, if there."""
    for folder in (data_file.parent, data_file.parent.parent):
        candidate = folder / FEATURES_FILE
        if candidate.is_file():
            return candidate
    return None


def parse_ports(records, frame: pd.DataFrame, column: str, policy: BadRecordPolicy) -> pd.DataFrame:
    """Ports as nullable Int64: decimal or hex (``0x000b``); ``-`` or blank means no port."""
    raw = frame[column].astype(str).str.strip()
    is_hex = raw.str.lower().str.startswith("0x")
    values = pd.to_numeric(raw.where(~is_hex), errors="coerce")
    hex_values = raw[is_hex].map(_hex_or_nan)
    values[is_hex] = hex_values
    missing = raw.isin(["-", ""])
    bad = (values.isna() & ~missing) | (values < 0) | (values > 65535)
    if bad.any():
        if policy == "error":
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise FlowDataError(
                records.path, "bad port", line=records.lines[i], column=column,
                expected="a port 0-65535 (decimal or 0x hex) or '-'", got=raw.iat[i],
            )  # fmt: skip
        frame = drop_rows(records, frame, bad.to_numpy(), "bad_port")
        values = values[~bad.to_numpy()].reset_index(drop=True)
    frame[column] = values.astype("Int64").to_numpy()
    return frame


def _hex_or_nan(text: str) -> float:
    try:
        return float(int(text, 16))
    except ValueError:
        return float("nan")


def read_unsw_raw(
    path: str | Path, *, features_file: str | Path | None = None, bad_records: BadRecordPolicy = "error"
) -> FlowTable:
    """Read one raw UNSW-NB15 CSV (with IPs, ports and times) into a :class:`FlowTable`."""
    check_policy(bad_records)
    path = Path(path)
    features_path = Path(features_file) if features_file else find_features_file(path)
    notes: list[str] = []
    if features_path is not None:
        published = read_feature_names(features_path)
    else:
        published = list(PUBLISHED_NAMES)
        notes.append(f"{FEATURES_FILE} not found next to the data; used the published 49 names")
    names = [canonical_name(n) for n in published]
    text = read_text(path)
    first = text.split("\n", 1)[0]
    if first.lower().startswith(("srcip", "no.")):
        raise FlowDataError(path, "unexpected header row", line=1, expected="no header (raw UNSW-NB15 format)")
    records = split_csv(str(path), text, names, first_line=1, policy=bad_records)
    if not records.rows:
        raise FlowDataError(path, "no flow records", expected="at least one record")
    frame = records.frame()
    for column in BLANK_AS_ZERO:
        blank = frame[column].astype(str).str.strip() == ""
        if blank.any():
            notes.append(f"{int(blank.sum())} blank {column} read as 0")
            frame.loc[blank, column] = "0"
    numeric = [n for n in names if n not in NOT_FEATURES and n not in CATEGORICAL]
    frame = to_numeric_columns(records, frame, [*numeric, START_TIME], policy=bad_records)
    frame = parse_binary_labels(records, frame, bad_records)
    for column in (SRC_PORT, DST_PORT):
        frame = parse_ports(records, frame, column, bad_records)
    for column in (SRC_IP, DST_IP):
        frame[column] = frame[column].astype(str).str.strip()
    for column in CATEGORICAL:
        frame[column] = frame[column].astype(str).str.strip().str.lower().replace("", "-")
    frame[ATTACK_CAT] = frame[ATTACK_CAT].astype(str).map(normalise_family)
    frame = frame[[*numeric, *CATEGORICAL, LABEL, ATTACK_CAT, SRC_IP, DST_IP, SRC_PORT, DST_PORT, START_TIME]]
    table = FlowTable(frame, numeric, list(CATEGORICAL), "unsw-nb15-raw", str(path), records.skipped, notes)
    log.info("read %s: %d records, skipped %s", path, len(table), records.skipped or 0)
    return table
