"""Steps every batch reader shares: strict text decoding, splitting lines with the source's layout, the shared
normalisation (:mod:`flows.normalise`) and the bad-record policy, and the pandas frame of the result.

Every step either raises a :class:`FlowDataError` that names file, line and column, or (with the ``skip``
policy) drops the record and counts it under a reason, so nothing is lost silently. Records without a verdict
(``Background``) are always dropped and counted under ``unlabelled_background``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import pandas as pd

from flows.errors import FlowDataError
from flows.normalise import (
    NON_FINITE,
    NON_NUMERIC,
    REASON_ORDER,
    UNLABELLED,
    Layout,
    Normalised,
    compression,
    split_lines,
    without_bom,
)
from flows.table import ATTACK_CAT, DST_IP, DST_PORT, LABEL, SRC_IP, SRC_PORT, START_TIME, FlowTable

BadRecordPolicy = Literal["error", "skip"]
POLICIES = ("error", "skip")
# skip-count key per problem reason, in the order a record's problems are counted (one reason per record:
# flows.normalise.REASON_ORDER); the key is the reason's name but for the two kinds of bad number, counted together
SKIP_REASONS = {reason: "non_numeric_or_non_finite" if reason in (NON_NUMERIC, NON_FINITE) else reason
                for reason in REASON_ORDER}  # fmt: skip
BACKGROUND_SKIP = "unlabelled_background"


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"bad_records must be one of {POLICIES}, got {policy!r}")


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole file as text, BOM removed; clear errors for a missing, empty or wrongly encoded file."""
    path = Path(path)
    if not path.exists():
        raise FlowDataError(path, "file not found")
    if not path.is_file():
        raise FlowDataError(path, "not a regular file")
    data = path.read_bytes()
    if not data.strip():
        raise FlowDataError(path, "empty file", expected="a header and flow records")
    packed = compression(data[:16])
    if packed is not None:
        raise FlowDataError(path, f"looks like a {packed[0]}-compressed file; decompress it first",
                            expected=f"uncompressed text (e.g. {packed[1]} the file)")  # fmt: skip
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = len(split_lines(data[: err.start]))
        raise FlowDataError(
            path,
            f"not valid {encoding.upper()} text at byte {err.start}",
            line=line,
            expected=f"{encoding.upper()} encoded text (re-encode the file, e.g. from cp1252/latin-1)",
            got=data[err.start : err.start + 8].hex(" "),
        ) from None
    return text.lstrip("\ufeff")


def read_lines(path: str | Path) -> list[str]:
    """The file's lines (``\\n``, ``\\r\\n`` or lone ``\\r`` ends: :func:`flows.normalise.split_lines`), without
    a byte order mark at the start of any line."""
    return [without_bom(line) for line in split_lines(read_text(path))]


@dataclass
class RawRecords:
    """Cells of one file's records with the file line of every record, plus skip counts."""

    path: str
    rows: list[list[str]]
    lines: list[int]
    skipped: dict[str, int] = field(default_factory=dict)


def split_records(path: str, lines: list[str], layout: Layout, *, first_index: int, policy: BadRecordPolicy,
                  comment: str | None = None) -> RawRecords:  # fmt: skip
    """Split ``lines[first_index:]`` into records of exactly ``layout.n_fields`` cells; blank lines (and lines
    starting with ``comment``) are not records."""
    records = RawRecords(path, [], [])
    n_fields = layout.n_fields
    numbered = [(i, ln) for i, ln in enumerate(lines[first_index:], first_index)
                if ln.strip() and not (comment and ln.startswith(comment))]  # fmt: skip
    rows = [layout.split(ln) for _, ln in numbered]
    wrong = [k for k, cells in enumerate(rows) if len(cells) != n_fields]
    if wrong and policy == "error":
        k = wrong[0]
        hint = " (truncated last line?)" if k == len(rows) - 1 and len(rows[k]) < n_fields else ""
        raise FlowDataError(path, f"wrong number of fields{hint}", line=numbered[k][0] + 1,
                            expected=f"{n_fields} fields", got=f"{len(rows[k])} fields")  # fmt: skip
    if wrong:
        records.skipped["wrong_field_count"] = len(wrong)
        drop = set(wrong)
        numbered = [x for k, x in enumerate(numbered) if k not in drop]
        rows = [x for k, x in enumerate(rows) if k not in drop]
    records.rows = rows
    records.lines = [i + 1 for i, _ in numbered]
    return records


def normalise_records(records: RawRecords, layout: Layout, policy: BadRecordPolicy,
                      keep_unlabelled: bool = False) -> Normalised:  # fmt: skip
    """The shared normalisation of the records, with the bad-record policy applied and Background dropped
    (kept, label :data:`flows.normalise.UNLABELLED`, with ``keep_unlabelled``: a gateway labels them itself)."""
    batch = layout.normalise_rows(records.rows)
    if policy == "error":
        first = batch.first_problem()
        if first is not None:
            row, problem = first
            raise FlowDataError(records.path, problem.describe(row), line=records.lines[row], column=problem.column,
                                expected=problem.expected, got=str(problem.cells[row]))  # fmt: skip
    keep = np.ones(batch.n, dtype=bool)
    for reason, key in SKIP_REASONS.items():
        bad = batch.bad_rows([reason]) & keep
        if bad.any():
            records.skipped[key] = records.skipped.get(key, 0) + int(bad.sum())
            keep &= ~bad
    if batch.label is not None and not keep_unlabelled:
        background = keep & (batch.label == UNLABELLED)
        if background.any():
            records.skipped[BACKGROUND_SKIP] = int(background.sum())
            keep &= ~background
    if keep.all():
        return batch
    records.lines = [line for line, k in zip(records.lines, keep) if k]
    filled = batch.filled
    batch = batch.take(keep)
    batch.filled = filled
    return batch


def frame_of(batch: Normalised) -> pd.DataFrame:
    """The flow table's frame: features, label, family and, where the source has them, addresses, ports, times."""
    columns: dict[str, object] = {**batch.numeric, **batch.categorical}
    columns[LABEL] = batch.label.astype(np.int8)
    columns[ATTACK_CAT] = batch.family
    if batch.src_ip is not None:
        columns[SRC_IP], columns[DST_IP] = batch.src_ip, batch.dst_ip
        for name, values in ((SRC_PORT, batch.src_port), (DST_PORT, batch.dst_port)):
            missing = np.isnan(values)
            columns[name] = pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing)
        columns[START_TIME] = batch.start_time
    return pd.DataFrame(columns)


def table_of(batch: Normalised, layout: Layout, source: str, path: str, records: RawRecords,
             notes: list[str]) -> FlowTable:  # fmt: skip
    """The :class:`FlowTable` of a normalised batch, with fill counts and dropped Background in its notes."""
    notes = list(notes)
    for column, count in batch.filled.items():
        notes.append(f"{count} blank or unset {column} read as 0")
    unknown = unknown_family_note(batch, layout)
    if unknown:
        notes.append(unknown)
    if records.skipped.get(BACKGROUND_SKIP):
        notes.append(f"{records.skipped[BACKGROUND_SKIP]} Background (unlabelled) records dropped")
    return FlowTable(frame_of(batch), list(layout.numeric), list(layout.categorical), source, path, records.skipped,
                     notes)  # fmt: skip


def unknown_family_note(batch: Normalised, layout: Layout) -> str | None:
    """A note counting the records (kept) whose attack family is not among the source's known families."""
    if batch.unknown_family is None or not batch.unknown_family.any():
        return None
    names, counts = np.unique(batch.family[batch.unknown_family].astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    shown = ", ".join(f"{str(names[i])!r} ({counts[i]})" for i in order[:5]) + (", ..." if len(names) > 5 else "")
    return (f"unknown_family: {int(counts.sum())} records with an attack family not among the "
            f"{len(layout.known_families or ())} known to {layout.source} (kept): {shown}")  # fmt: skip


def require_columns(path: str, present: list[str], required: Iterable[str], *, line: int = 1) -> None:
    """Raise naming the first required column that is missing from ``present``."""
    missing = [c for c in required if c not in present]
    if missing:
        raise FlowDataError(
            path,
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            line=line,
            column=missing[0],
            expected=f"a header with {', '.join(missing)}",
            got=",".join(present[:8]) + (",..." if len(present) > 8 else ""),
        )
