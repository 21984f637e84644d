"""Reader for the raw UNSW-NB15_1..4 CSVs: 49 columns, no header, names from NUSW-NB15_features.csv.

Quirks handled by the shared normalisation (:mod:`flows.normalise.unsw`): hex port strings (``0x000b``), ``-``
ports (ICMP and others), attack families with stray spaces and the ``Backdoor``/``Backdoors`` pair, empty
``attack_cat`` for normal traffic, blank ``ct_flw_http_mthd``/``is_ftp_login``/``ct_ftp_cmd`` (read as 0 and
counted in the table's notes), upper-case ``state``. Features carry the partitioned files' names and order, with
``rate`` derived, so a model trained on the partitioned files serves raw records.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flows.errors import FlowDataError
from flows.normalise import UnswRaw
from flows.readers.records import (
    BadRecordPolicy,
    check_policy,
    normalise_records,
    read_lines,
    read_text,
    split_records,
    table_of,
)
from flows.schema import UNSW_RAW_PUBLISHED_NAMES as PUBLISHED_NAMES  # when NUSW-NB15_features.csv is absent
from flows.table import FlowTable

log = logging.getLogger(__name__)

FEATURES_FILE = "NUSW-NB15_features.csv"


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
    layout = UnswRaw(published)
    lines = read_lines(path)
    if lines[0].lower().startswith(("srcip", "no.")):
        raise FlowDataError(path, "unexpected header row", line=1, expected="no header (raw UNSW-NB15 format)")
    records = split_records(str(path), lines, layout, first_index=0, policy=bad_records)
    if not records.rows:
        raise FlowDataError(path, "no flow records", expected="at least one record")
    batch = normalise_records(records, layout, bad_records)
    table = table_of(batch, layout, "unsw-nb15-raw", str(path), records, notes)
    log.info("read %s: %d records, skipped %s", path, len(table), records.skipped or 0)
    return table
