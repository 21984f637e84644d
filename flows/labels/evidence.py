"""Evidence files -> :class:`Evidence` items, each naming the flows it covers and the label it gives them.

Formats, recognised by content (one file holds one format; JSON lines are told apart line by line):

* operator decisions, JSON lines ``{"host": "10.0.0.5", "label": "malicious"|"benign", "start": ts, "end": ts,
  "by": "alice", "note": "..."}``: a host verdict confirmed (malicious) or rejected (benign); covers the flows the
  host originates with a start time in [start, end] (either bound may be left out: open); times are seconds
  since the epoch or ISO-8601 strings;
* Zeek ``notice.log`` (tab-separated with ``#fields``, or Zeek's JSON lines with a ``note`` key): malicious
  evidence for the connection named by ``uid`` (or by ``id.orig_h``/``id.orig_p``/``id.resp_h``/``id.resp_p`` at
  ``ts``); a notice with only ``src`` (scans) covers the flows ``src`` originated (to ``dst``, port ``p`` where
  set) in the :data:`NOTICE_WINDOW` seconds up to ``ts``; the family is the notice's ``note``;
* Suricata ``eve.json``: every ``event_type: "alert"`` line is malicious evidence for the flow of its 5-tuple (in
  either direction: an alert's source is the packet's sender) that is open at its ``timestamp``; the family is
  ``alert.signature``; other event types are counted and ignored (Suricata's ``flow_id`` is its own, not Zeek's).
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flows.errors import FlowDataError
from flows.readers.records import BadRecordPolicy, check_policy, read_lines

NOTICE_WINDOW = 300.0  # seconds before a src-only notice (Zeek's scan detection) whose flows it covers
OPERATOR, NOTICE, SURICATA = "operator", "zeek-notice", "suricata"
LABELS = {"malicious": 1, "benign": 0}
MAX_FAMILY = 100  # characters of a signature or note kept as the attack family


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence: the label (1 malicious, 0 benign) for the flows it covers.

    Covered flows: ``uid`` (a Zeek connection) when set; else the 4-tuple ``src``/``src_port``/``dst``/
    ``dst_port`` (``both_directions``: either way round) of a flow open at ``start`` (``end == start``); else
    the flows ``host`` originates (to ``dst``, port ``dst_port``, where set) that start in [start, end]."""

    label: int
    family: str
    source: str
    where: str  # file:line
    uid: str | None = None
    host: str | None = None
    src: str | None = None
    dst: str | None = None
    src_port: int | None = None
    dst_port: int | None = None
    proto: str | None = None
    start: float = -math.inf
    end: float = math.inf
    both_directions: bool = False


@dataclass
class EvidenceSet:
    """Evidence items of some files, with skip counts per reason and notes (ignored lines)."""

    items: list[Evidence] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def extend(self, other: "EvidenceSet") -> None:
        self.items += other.items
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.notes += other.notes
        self.files += other.files


class _Bad(Exception):
    """A malformed evidence line: reason (the skip key), field, what was expected, what came."""

    def __init__(self, reason: str, column: str | None, expected: str, got: Any = None) -> None:
        super().__init__(reason)
        self.reason, self.column, self.expected, self.got = reason, column, expected, got


def address(value: Any, column: str) -> str:
    """An IP address in canonical form (Suricata writes IPv6 expanded, Zeek compressed)."""
    try:
        return ipaddress.ip_address(str(value).strip()).compressed
    except ValueError:
        raise _Bad("bad_value", column, "an IPv4 or IPv6 address", value) from None


def _port(value: Any, column: str) -> int | None:
    if value in (None, "", "-"):
        return None
    text = str(value).strip().split("/")[0]  # Zeek's notice `p` reads "23/tcp"
    if not text.isdigit() or int(text) > 65535:
        raise _Bad("bad_value", column, "a port 0-65535", value)
    return int(text)


def timestamp(value: Any, column: str) -> float:
    """Seconds since the epoch from a number or an ISO-8601 string (no offset: UTC)."""
    if isinstance(value, bool):
        raise _Bad("bad_value", column, "seconds since the epoch or an ISO-8601 time", value)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise _Bad("bad_value", column, "seconds since the epoch or an ISO-8601 time", value) from None
            seconds = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise _Bad("bad_value", column, "a finite time not before 1970", value)
    return seconds


def _required(record: dict, key: str) -> Any:
    value = record.get(key)
    if value in (None, "", "-"):
        raise _Bad("missing_field", key, f"a value for {key!r}")
    return value


def operator_decision(record: dict, where: str) -> Evidence:
    label_text = str(_required(record, "label")).strip().lower()
    if label_text not in LABELS:
        raise _Bad("bad_value", "label", "malicious or benign", record.get("label"))
    start = timestamp(record["start"], "start") if record.get("start") not in (None, "") else -math.inf
    end = timestamp(record["end"], "end") if record.get("end") not in (None, "") else math.inf
    if start > end:
        raise _Bad("bad_value", "end", "end not before start", record.get("end"))
    label = LABELS[label_text]
    return Evidence(label, "Operator" if label else "Normal", OPERATOR, where,
                    host=address(_required(record, "host"), "host"), start=start, end=end)  # fmt: skip


def zeek_notice(record: dict, where: str) -> Evidence:
    """A notice (Zeek's field names; unset ``-`` or absent)."""
    ts = timestamp(_required(record, "ts"), "ts")
    family = str(_required(record, "note"))[:MAX_FAMILY]
    uid = record.get("uid") if record.get("uid") not in (None, "", "-") else None
    if record.get("id.orig_h") not in (None, "", "-"):
        return Evidence(1, family, NOTICE, where, uid=uid, src=address(record["id.orig_h"], "id.orig_h"),
                        dst=address(_required(record, "id.resp_h"), "id.resp_h"),
                        src_port=_port(record.get("id.orig_p"), "id.orig_p"),
                        dst_port=_port(record.get("id.resp_p"), "id.resp_p"), start=ts, end=ts)  # fmt: skip
    if record.get("src") not in (None, "", "-"):
        dst = address(record["dst"], "dst") if record.get("dst") not in (None, "", "-") else None
        return Evidence(1, family, NOTICE, where, uid=uid, host=address(record["src"], "src"), dst=dst,
                        dst_port=_port(record.get("p"), "p"), start=ts - NOTICE_WINDOW, end=ts)  # fmt: skip
    if uid is not None:
        return Evidence(1, family, NOTICE, where, uid=uid, start=ts, end=ts)
    raise _Bad("missing_field", "src", "a connection (uid or id.orig_h) or a src address")


def suricata_alert(record: dict, where: str) -> Evidence:
    alert = record.get("alert")
    if not isinstance(alert, dict):
        raise _Bad("missing_field", "alert", "an alert object")
    ts = timestamp(_required(record, "timestamp"), "timestamp")
    return Evidence(1, str(alert.get("signature") or "Suricata alert")[:MAX_FAMILY], SURICATA, where,
                    src=address(_required(record, "src_ip"), "src_ip"),
                    dst=address(_required(record, "dest_ip"), "dest_ip"),
                    src_port=_port(record.get("src_port"), "src_port"),
                    dst_port=_port(record.get("dest_port"), "dest_port"),
                    proto=str(record.get("proto") or "").lower() or None, start=ts, end=ts,
                    both_directions=True)  # fmt: skip


def _json_item(line: str, where: str, ignored: dict[str, int]) -> Evidence | None:
    try:
        record = json.loads(line)
    except ValueError:
        raise _Bad("malformed_json", None, "one JSON object per line", line) from None
    if not isinstance(record, dict):
        raise _Bad("malformed_json", None, "one JSON object per line", line)
    if "event_type" in record:
        if record["event_type"] != "alert":
            kind = str(record["event_type"])[:40]
            ignored[kind] = ignored.get(kind, 0) + 1
            return None
        return suricata_alert(record, where)
    if "host" in record or "label" in record:  # before notices: an operator's decision may carry a "note"
        return operator_decision(record, where)
    if "note" in record:
        return zeek_notice(record, where)
    raise _Bad("unknown_record", None, "an operator decision (host, label), a Zeek notice (note) or a Suricata "
               "event (event_type)", line)  # fmt: skip


def read_evidence(path: str | Path, bad_records: BadRecordPolicy = "error") -> EvidenceSet:
    """The evidence items of one file (see the module's formats); an empty file holds none."""
    check_policy(bad_records)
    path = Path(path)
    out = EvidenceSet(files=[str(path)])
    if path.is_file() and not path.read_bytes().strip():
        out.notes.append(f"{path}: empty evidence file")
        return out
    lines = read_lines(path)
    fields: list[str] | None = None
    unset = "-"
    ignored: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            if line.startswith("#"):
                key, _, value = line[1:].partition("\t")
                fields = value.strip().split("\t") if key == "fields" else fields
                unset = value.strip() if key == "unset_field" else unset
                continue
            if fields is None or line.lstrip().startswith("{"):
                item = _json_item(line, where, ignored)
            else:
                cells = line.split("\t")
                if len(cells) != len(fields):
                    raise _Bad("wrong_field_count", None, f"{len(fields)} tab-separated fields", f"{len(cells)}")
                item = zeek_notice({k: (None if v == unset else v) for k, v in zip(fields, cells)}, where)
        except _Bad as bad:
            if bad_records == "error":
                raise FlowDataError(path, f"bad evidence ({bad.reason})", line=number, column=bad.column,
                                    expected=bad.expected,
                                    got=None if bad.got is None else str(bad.got))  # fmt: skip
            key = f"evidence_{bad.reason}"
            out.skipped[key] = out.skipped.get(key, 0) + 1
            continue
        if item is not None:
            out.items.append(item)
    if ignored:
        shown = ", ".join(f"{k} ({v})" for k, v in sorted(ignored.items()))
        out.notes.append(f"{path}: {sum(ignored.values())} Suricata events other than alerts ignored: {shown}")
    return out


def read_evidence_files(paths: list[Path], bad_records: BadRecordPolicy = "error") -> EvidenceSet:
    """The evidence of every file, in order."""
    out = EvidenceSet()
    for path in paths:
        out.extend(read_evidence(path, bad_records))
    return out
