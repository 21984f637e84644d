"""Shared parsing steps of the readers: strict text decoding, field-count checks, numeric conversion.

Every step either raises a :class:`FlowDataError` that names file, line and column, or (with the ``skip``
policy) drops the record and counts it under a reason, so nothing is lost silently.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import pandas as pd

from flows.errors import FlowDataError

BadRecordPolicy = Literal["error", "skip"]
POLICIES = ("error", "skip")


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
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FlowDataError(
            path,
            f"not valid {encoding.upper()} text at byte {err.start}",
            line=line,
            expected=f"{encoding.upper()} encoded text (re-encode the file, e.g. from cp1252/latin-1)",
            got=data[err.start : err.start + 8].hex(" "),
        ) from None
    return text.lstrip("\ufeff")


@dataclass
class RawRecords:
    """String cells of one file with the file line of every record, plus skip counts."""

    path: str
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]
    skipped: dict[str, int] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns, dtype=object)


def split_csv(
    path: str,
    text: str,
    columns: list[str],
    *,
    first_line: int,
    policy: BadRecordPolicy,
) -> RawRecords:
    """Parse CSV ``text`` (no header) into records of exactly ``len(columns)`` fields."""
    rows: list[list[str]] = []
    lines: list[int] = []
    skipped: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text))
    n_fields = len(columns)
    for record in reader:
        line_no = first_line + reader.line_num - 1
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        if len(record) != n_fields:
            if policy == "skip":
                skipped["wrong_field_count"] = skipped.get("wrong_field_count", 0) + 1
                continue
            truncated = len(record) < n_fields and _is_last(reader)
            hint = " (truncated last line?)" if truncated else ""
            raise FlowDataError(
                path,
                f"wrong number of fields{hint}",
                line=line_no,
                expected=f"{n_fields} fields",
                got=f"{len(record)} fields",
            )
        rows.append(record)
        lines.append(line_no)
    return RawRecords(path=path, columns=list(columns), rows=rows, lines=lines, skipped=skipped)


def _is_last(reader: Iterable) -> bool:
    """True when the csv reader has no further non-empty record."""
    for rest in reader:
        if rest and any(cell.strip() for cell in rest):
            return False
    return True


def drop_rows(records: RawRecords, frame: pd.DataFrame, bad: np.ndarray, reason: str) -> pd.DataFrame:
    """Remove rows flagged ``bad`` from ``frame`` and ``records.lines``, counting them under ``reason``."""
    n_bad = int(bad.sum())
    if n_bad == 0:
        return frame
    records.skipped[reason] = records.skipped.get(reason, 0) + n_bad
    keep = ~bad
    records.lines = [ln for ln, k in zip(records.lines, keep) if k]
    return frame.loc[keep].reset_index(drop=True)


def to_numeric_columns(
    records: RawRecords,
    frame: pd.DataFrame,
    columns: list[str],
    *,
    policy: BadRecordPolicy,
    expected: str = "a finite number",
) -> pd.DataFrame:
    """Convert ``columns`` of ``frame`` (strings) to float64; bad cells raise or (skip policy) drop the row."""
    converted: dict[str, np.ndarray] = {}
    bad_any = np.zeros(len(frame), dtype=bool)
    for column in columns:
        raw = frame[column].astype(str).str.strip()
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            if policy == "error":
                i = int(np.flatnonzero(bad)[0])
                cell = str(frame[column].iat[i])
                problem = _describe_bad_cell(cell)
                raise FlowDataError(
                    records.path, problem, line=records.lines[i], column=column, expected=expected, got=cell
                )
            bad_any |= bad
        converted[column] = values
    out = frame.copy()
    for column, values in converted.items():
        out[column] = values
    if bad_any.any():
        reasons = "non_numeric_or_non_finite"
        out = drop_rows(records, out, bad_any, reasons)
    return out


def _describe_bad_cell(cell: str) -> str:
    if not cell.strip():
        return "empty value"
    try:
        float(cell)
    except ValueError:
        return "non-numeric value"
    return "non-finite value (NaN or inf)"


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
