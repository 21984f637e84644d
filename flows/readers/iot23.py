"""Reader for labelled Zeek conn logs (IoT-23, Stratosphere) in both shapes, recognised by content: the
tab-separated ``conn.log.labeled`` with ``#`` header lines and the CSV export with a header row.

Values come from the shared normalisation (:mod:`flows.normalise.zeek`), which the gateway applies too;
``Background`` records carry no verdict and are dropped and counted (``unlabelled_background``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from flows.errors import FlowDataError
from flows.normalise import ZeekCsv, ZeekLog, detect_format, header_layout
from flows.normalise.zeek import LABEL_FIELD, REQUIRED
from flows.readers.records import (
    BadRecordPolicy,
    check_policy,
    normalise_records,
    read_lines,
    require_columns,
    split_records,
    table_of,
)
from flows.table import LABEL, FlowTable

UID = "uid"  # Zeek's connection id: a gateway's table keeps it (metadata, never a feature) to match evidence

log = logging.getLogger(__name__)


def zeek_log_layout(path: Path, lines: list[str]) -> ZeekLog:
    """The layout named by the ``#fields`` line (with the ``#unset_field``/``#empty_field`` markers)."""
    unset, empty = "-", "(empty)"
    layout: ZeekLog | None = None
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            if line.strip() and layout is None:
                raise FlowDataError(path, "flow record before the #fields header", line=index + 1,
                                    expected="a Zeek log header with #fields")  # fmt: skip
            continue
        key, _, value = line[1:].partition("\t")
        if key == "unset_field":
            unset = value.strip()
        elif key == "empty_field":
            empty = value.strip()
        elif key == "fields":
            found = ZeekLog.from_fields_line(line, unset, empty)
            if layout is not None and found.columns != layout.columns:
                raise FlowDataError(path, "a second #fields header with other fields", line=index + 1,
                                    expected="one set of fields per file", got=" ".join(found.columns))  # fmt: skip
            layout = found
    if layout is None:
        raise FlowDataError(path, "no #fields header", expected="a Zeek conn.log with #fields")
    return layout


def read_zeek_conn_log(path: str | Path, *, bad_records: BadRecordPolicy = "error", source: str = "iot-23",
                       keep_unlabelled: bool = False) -> FlowTable:  # fmt: skip
    """Read one labelled Zeek conn log (either shape) into a :class:`FlowTable` with IPs, ports and start times.

    ``keep_unlabelled`` (a gateway's own capture): a log without a ``label`` field (live Zeek) is read too, and
    its records and Background records are kept with label -1 (unknown, family ``Background``) and Zeek's
    ``uid`` in a ``uid`` column, for :mod:`flows.evidence` to label; nothing unlabelled is ever read as benign."""
    check_policy(bad_records)
    path = Path(path)
    lines = read_lines(path)
    fmt = detect_format(lines[0])
    if fmt == "zeek" or (fmt == "unsw_raw" and "\t" in lines[0]):  # tab-separated: a Zeek log, header or not
        layout: ZeekLog = zeek_log_layout(path, lines)
        first, comment = 0, "#"
    elif fmt == "zeek_csv":
        layout, first, comment = header_layout(fmt, lines[0]), 1, None
        assert isinstance(layout, ZeekCsv)
    else:
        raise FlowDataError(path, "not a Zeek conn log", line=1,
                            expected="'#' header lines or a CSV header with ts,uid,id.orig_h,...,conn_state,...",
                            got=lines[0])  # fmt: skip
    required = [c for c in REQUIRED if not (keep_unlabelled and c == LABEL_FIELD)]
    require_columns(str(path), layout.columns, required)
    records = split_records(str(path), lines, layout, first_index=first, policy=bad_records, comment=comment)
    if not records.rows:
        raise FlowDataError(path, "no flow records", expected="at least one record")
    uids = _uids(records, layout) if keep_unlabelled else None
    batch = normalise_records(records, layout, bad_records, keep_unlabelled)
    notes = [f"Zeek conn log, {'tab-separated' if fmt == 'zeek' else 'CSV export'}"]
    if keep_unlabelled and LABEL_FIELD not in layout.columns:
        notes.append("no label field: every record's label is unknown")
    table = table_of(batch, layout, source, str(path), records, notes)
    if uids is not None:
        table.frame[UID] = [uids[line] for line in records.lines]
    if keep_unlabelled and (table.frame[LABEL] < 0).any():
        table.notes.append(f"{int((table.frame[LABEL] < 0).sum())} unlabelled records kept (label -1: unknown)")
    log.info("read %s: %d records, skipped %s", path, len(table), records.skipped or 0)
    return table


def _uids(records, layout: ZeekLog) -> dict[int, str]:
    """file line -> Zeek ``uid`` of every record ("-" when the log has no uid field)."""
    if UID not in layout.columns:
        return dict.fromkeys(records.lines, "-")
    at = layout.columns.index(UID)
    return {line: cells[at].strip() for line, cells in zip(records.lines, records.rows)}


def read_iot23_conn_log(path: str | Path, *, bad_records: BadRecordPolicy = "error") -> FlowTable:
    """An IoT-23 capture (either shape)."""
    return read_zeek_conn_log(path, bad_records=bad_records, source="iot-23")
