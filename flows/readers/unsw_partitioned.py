"""Reader for UNSW-NB15's partitioned CSVs (45 columns, ``id`` ... ``attack_cat``, ``label``).

Either partition is recognised by content (175,341 or 82,332 records), whatever the file is called: several
public copies swap the names "training-set" and "testing-set". Values come from the shared normalisation
(:mod:`flows.normalise.unsw`), which the gateway applies too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from flows.errors import FlowDataError
from flows.normalise import PARTITIONED_COLUMNS, UnswPartitioned
from flows.normalise.unsw import CATEGORICAL, NUMERIC  # noqa: F401  (the partitioned features, for importers)
from flows.readers.records import (
    BadRecordPolicy,
    check_policy,
    normalise_records,
    read_lines,
    require_columns,
    split_records,
    table_of,
)
from flows.schema import header_columns
from flows.table import ATTACK_CAT, BENIGN_FAMILY, LABEL, FlowTable

log = logging.getLogger(__name__)

COLUMNS = list(PARTITIONED_COLUMNS)
PARTITION_SIZES = {175_341: "UNSW training-set (175,341 records)", 82_332: "UNSW testing-set (82,332 records)"}


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
    lines = read_lines(path)
    names = header_columns(lines[0])
    require_columns(str(path), names, COLUMNS)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise FlowDataError(path, "duplicate column", line=1, column=dup, expected="each column once")
    layout = UnswPartitioned(names)
    records = split_records(str(path), lines, layout, first_index=1, policy=bad_records)
    if not records.rows:
        raise FlowDataError(path, "no flow records after the header", expected="at least one record")
    batch = normalise_records(records, layout, bad_records)
    notes = [PARTITION_SIZES.get(batch.n + sum(records.skipped.values()), "UNSW-NB15 partitioned subset")]
    mismatch = int(np.sum((batch.label == 0) != (batch.family == BENIGN_FAMILY)))
    if mismatch:
        notes.append(f"{mismatch} records whose {LABEL} disagrees with {ATTACK_CAT} (kept, label wins)")
    table = table_of(batch, layout, "unsw-nb15", str(path), records, notes)
    log.info("read %s: %d records (%s), skipped %s", path, len(table), notes[0], records.skipped or 0)
    return table
